/*
 * Victim: sets up one of each kind of single-process state the dump records, reports where
 * and what it is, then waits in pause() (a syscall the kernel must restart).
 *
 *   - anonymous memory: NPAGES pages; page i filled with byte (i * 7 + 3) & 0xff for even i,
 *     odd pages only read (they map the shared zero page), the last page never touched
 *   - a private file mapping with its second page modified (copy-on-write)
 *   - SIGUSR1 handler (SA_RESTART | SA_SIGINFO, mask SIGUSR2), SIGUSR2 ignored, SIGHUP blocked
 *   - one SIGHUP pending (blocked), sigaltstack, ITIMER_REAL armed for 1000 s
 *   - SIGRTMIN+1 blocked and queued 300 times to the process and 300 times to the thread, each
 *     with its own value (the queue must come back whole and in order; its
 *     siginfos take more room than the restorer's arena)
 *   - a regular file open at offset 1234, a pipe with "hello pipe" queued, umask 027
 *   - RLIMIT_NOFILE soft limit 777
 *   - a two-page mapping whose first page holds 'N' and which is then made PROT_NONE
 *
 * Prints to argv[1] (appending): "ready k=v ..." with the addresses.
 * argv[2] is the scratch directory for the files it makes.
 * On SIGUSR2... (ignored); on SIGTERM it checks its memory and prints PASS/FAIL before exiting.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define NPAGES 64
static unsigned char *anon;
static int out;

static void on_usr1(int sig, siginfo_t *si, void *uc) { (void)sig; (void)si; (void)uc; }

static void say(const char *s) { write(out, s, strlen(s)); }

static char *fmap;
static int datafd, pipe_r;
static char altstack[65536];

#define CHECK(cond, what)                     \
	do {                                  \
		if (!(cond)) {                \
			say("FAIL " what "\n"); \
			_exit(1);             \
		}                             \
	} while (0)

/* On SIGTERM: everything set up in main() must still be as it was. */
static void on_term(int sig)
{
	(void)sig;
	for (int i = 0; i < NPAGES - 1; i += 2)
		for (int j = 0; j < 4096; j++)
			CHECK(anon[i * 4096 + j] == ((i * 7 + 3) & 0xff), "memory");
	CHECK(fmap[0] == 'f' && fmap[4096] == 'C' && fmap[8191] == 'C' && fmap[8192] == 'f', "file mapping");
	CHECK(lseek(datafd, 0, SEEK_CUR) == 1234, "file offset");
	char buf[16] = {0};
	CHECK(read(pipe_r, buf, sizeof(buf)) == 10 && !memcmp(buf, "hello pipe", 10), "pipe data");
	struct sigaction sa;
	sigaction(SIGUSR1, NULL, &sa);
	CHECK(sa.sa_sigaction == on_usr1 && (sa.sa_flags & SA_RESTART) && sigismember(&sa.sa_mask, SIGUSR2),
	      "SIGUSR1 action");
	sigaction(SIGUSR2, NULL, &sa);
	CHECK(sa.sa_handler == SIG_IGN, "SIGUSR2 ignored");
	sigset_t set;
	sigprocmask(SIG_BLOCK, NULL, &set);
	CHECK(sigismember(&set, SIGHUP), "SIGHUP blocked");
	sigpending(&set);
	CHECK(sigismember(&set, SIGHUP), "SIGHUP pending");
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN + 1);
	struct timespec now = {0};
	/* The thread's own queue is taken first, then the process's. */
	for (int i = 0; i < 300; i++) {
		siginfo_t si;
		CHECK(sigtimedwait(&rt, &si, &now) == SIGRTMIN + 1 && si.si_value.sival_int == 1000 + i,
		      "queued thread signals");
	}
	for (int i = 0; i < 300; i++) {
		siginfo_t si;
		CHECK(sigtimedwait(&rt, &si, &now) == SIGRTMIN + 1 && si.si_value.sival_int == i,
		      "queued process signals");
	}
	CHECK(sigtimedwait(&rt, NULL, &now) < 0, "no more queued signals");
	stack_t ss;
	sigaltstack(NULL, &ss);
	CHECK(ss.ss_sp == altstack && ss.ss_size == sizeof(altstack), "sigaltstack");
	struct itimerval it;
	getitimer(ITIMER_REAL, &it);
	CHECK(it.it_interval.tv_sec == 500 && it.it_value.tv_sec > 900, "itimer");
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	CHECK(rl.rlim_cur == 777, "rlimit");
	mode_t old = umask(0);
	CHECK(old == 027, "umask");
	say("PASS\n");
	_exit(0);
}

int main(int argc, char **argv)
{
	char path[512], buf[2048];
	const char *dir = argc > 2 ? argv[2] : "/tmp";
	out = open(argc > 1 ? argv[1] : "/dev/stdout", O_WRONLY | O_CREAT | O_APPEND, 0644);

	anon = mmap(NULL, NPAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	volatile unsigned char sink = 0;
	for (int i = 0; i < NPAGES - 1; i++) {
		if (i % 2 == 0)
			memset(anon + i * 4096, (i * 7 + 3) & 0xff, 4096);
		else
			sink += anon[i * 4096];
	}

	snprintf(path, sizeof(path), "%s/mapped.bin", dir);
	int mf = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	char page[4096];
	memset(page, 'f', sizeof(page));
	for (int i = 0; i < 3; i++)
		write(mf, page, sizeof(page));
	fmap = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, mf, 0);
	close(mf);
	sink += fmap[0];
	memset(fmap + 4096, 'C', 4096);

	struct sigaction sa = {0};
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_RESTART | SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR2);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGUSR2, SIG_IGN);
	signal(SIGTERM, on_term);
	sigset_t blk;
	sigemptyset(&blk);
	sigaddset(&blk, SIGHUP);
	sigaddset(&blk, SIGRTMIN + 1);
	sigprocmask(SIG_BLOCK, &blk, NULL);
	kill(getpid(), SIGHUP);
	for (int i = 0; i < 300; i++)
		sigqueue(getpid(), SIGRTMIN + 1, (union sigval){.sival_int = i});
	for (int i = 0; i < 300; i++) {
		siginfo_t si = {.si_signo = SIGRTMIN + 1, .si_code = SI_QUEUE, .si_pid = getpid(),
				.si_uid = getuid()};
		si.si_value.sival_int = 1000 + i;
		syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGRTMIN + 1, &si);
	}

	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0};
	sigaltstack(&ss, NULL);

	struct itimerval it = {.it_value = {.tv_sec = 1000}, .it_interval = {.tv_sec = 500}};
	setitimer(ITIMER_REAL, &it, NULL);

	snprintf(path, sizeof(path), "%s/data.txt", dir);
	int df = datafd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	memset(buf, 'd', sizeof(buf));
	write(df, buf, 2000);
	lseek(df, 1234, SEEK_SET);

	int p[2];
	pipe(p);
	pipe_r = p[0];
	write(p[1], "hello pipe", 10);

	umask(027);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = 777;
	setrlimit(RLIMIT_NOFILE, &rl);

	char *none = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(none, 'N', 4096);
	mprotect(none, 2 * 4096, PROT_NONE);

	snprintf(buf, sizeof(buf),
		 "ready none=%lx pid=%d anon=%lx npages=%d fmap=%lx handler=%lx altstack=%lx datafd=%d pipe_r=%d pipe_w=%d\n",
		 (unsigned long)none, getpid(), (unsigned long)anon, NPAGES, (unsigned long)fmap, (unsigned long)on_usr1,
		 (unsigned long)altstack, df, p[0], p[1]);
	say(buf);
	for (;;)
		pause();
}
