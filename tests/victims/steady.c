/*
 * Victim for killing criu at random moments: a process that notices any change to itself.
 *
 *   leader    blocked in read() on a pipe from its child, checking that the child's counter
 *             goes up by one each time (nothing lost, doubled or corrupted); handles SIGTERM
 *   spinner   a thread holding known values in r12-r15, xmm5 and ymm7's upper half, checking
 *             them in a loop (a dumper that put back a wrong register is caught at once)
 *   sleeper   a thread in a loop of 1 ms nanosleeps (interrupted syscalls that restart)
 *   child     a process writing its counter into the pipe every millisecond
 *
 * Besides: argv[3] MiB of anonymous memory with a pattern, SIGUSR1 handled, SIGHUP blocked,
 * and at "ready" a snapshot of its mappings and descriptors. On SIGTERM the leader checks all
 * of it (memory, mappings, descriptors, mask, handler, both threads alive and moving, the
 * counter) and writes PASS or FAIL with the reason to argv[1], then exits. SIGUSR2 runs the
 * same check and goes on ("PASS N" / "FAIL N reason", N counting the checks).
 *
 *   steady OUT DIR MIB
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define R12 0x1212121212121212UL
#define R13 0x1313131313131313UL
#define R14 0xdeadbeefcafef00dUL
#define R15 0x0123456789abcdefUL

static int out, pipe_r;
static unsigned char *mem;
static size_t pages;
static pid_t child;
static volatile unsigned long counter, sleeps, spins;
static volatile const char *failed;
static char maps0[65536], fds0[8192];
static volatile int usr1;

static void say(const char *s) { write(out, s, strlen(s)); }

static void fail(const char *why)
{
	if (!failed)
		failed = why;
}

static void on_usr1(int sig) { (void)sig; usr1++; }

/* /proc/self/maps without the [stack] line (the kernel may grow it) into buf. */
static void snapshot_maps(char *buf, size_t size)
{
	char tmp[65536];
	int fd = open("/proc/self/maps", O_RDONLY);
	ssize_t n = 0, r;
	while ((r = read(fd, tmp + n, sizeof(tmp) - 1 - n)) > 0)
		n += r;
	close(fd);
	tmp[n] = 0;
	buf[0] = 0;
	for (char *line = strtok(tmp, "\n"); line; line = strtok(NULL, "\n")) {
		if (strstr(line, "[stack]"))
			continue;
		strncat(buf, line, size - strlen(buf) - 2);
		strcat(buf, "\n");
	}
}

static void snapshot_fds(char *buf, size_t size)
{
	char path[64], link[256];
	buf[0] = 0;
	for (int fd = 0; fd < 64; fd++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		char line[300];
		char *inode = strchr(link, '[');
		if (inode) /* pipe:[N], socket:[N]: a restore makes new ones */
			*inode = 0;
		snprintf(line, sizeof(line), "%d %s\n", fd, link);
		strncat(buf, line, size - strlen(buf) - 1);
	}
}

static void *spinner(void *arg)
{
	(void)arg;
	unsigned long bad;
	asm volatile("movabs %2, %%r12\n"
		     "movabs %3, %%r13\n"
		     "movabs %4, %%r14\n"
		     "movabs %5, %%r15\n"
		     "movq %%r14, %%xmm5\n"
		     "vmovq %%r13, %%xmm8\n"
		     "vinserti128 $1, %%xmm8, %%ymm7, %%ymm7\n"
		     "1:\n"
		     "lock incq %1\n"
		     "movabs %2, %%rax\n cmp %%rax, %%r12\n jne 2f\n"
		     "movabs %3, %%rax\n cmp %%rax, %%r13\n jne 2f\n"
		     "movabs %4, %%rax\n cmp %%rax, %%r14\n jne 2f\n"
		     "movabs %5, %%rax\n cmp %%rax, %%r15\n jne 2f\n"
		     "movq %%xmm5, %%rax\n cmp %%rax, %%r14\n jne 2f\n"
		     "vextracti128 $1, %%ymm7, %%xmm8\n vmovq %%xmm8, %%rax\n cmp %%rax, %%r13\n jne 2f\n"
		     "pause\n"
		     "jmp 1b\n"
		     "2: mov %%rax, %0\n"
		     : "=r"(bad), "+m"(spins)
		     : "i"(R12), "i"(R13), "i"(R14), "i"(R15)
		     : "rax", "r12", "r13", "r14", "r15", "xmm5", "xmm7", "xmm8", "cc");
	fail("a register of the spinning thread changed");
	return NULL;
}

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = {0, 1000000};
		while (nanosleep(&ts, &ts) != 0)
			;
		sleeps++;
	}
	return NULL;
}

static void check(int final)
{
	static char maps1[65536], fds1[8192];
	static int checks;
	for (size_t i = 0; i < pages; i++) {
		unsigned char *p = mem + i * 4096;
		if (*(size_t *)p != i || p[4095] != (unsigned char)(i * 13))
			fail("memory");
	}
	snapshot_maps(maps1, sizeof(maps1));
	if (strcmp(maps0, maps1)) {
		say("MAPS BEFORE\n");
		say(maps0);
		say("MAPS AFTER\n");
		say(maps1);
		fail("mappings changed");
	}
	snapshot_fds(fds1, sizeof(fds1));
	if (strcmp(fds0, fds1)) {
		say(fds0);
		say(fds1);
		fail("descriptors changed");
	}
	sigset_t set;
	sigprocmask(SIG_BLOCK, NULL, &set);
	if (!sigismember(&set, SIGHUP) || sigismember(&set, SIGUSR1))
		fail("signal mask");
	struct sigaction sa;
	sigaction(SIGUSR1, NULL, &sa);
	if (sa.sa_handler != on_usr1)
		fail("SIGUSR1 handler");
	unsigned long s0 = sleeps, p0 = spins;
	struct timespec ts = {0, 50000000};
	while (nanosleep(&ts, &ts))
		;
	if (sleeps == s0)
		fail("the sleeping thread stopped");
	if (spins == p0)
		fail("the spinning thread stopped");
	int queued = 0;
	ioctl(pipe_r, FIONREAD, &queued); /* the loop that reads it waits for this handler */
	if (queued == 0)
		fail("the child stopped writing");
	char buf[256];
	checks++;
	snprintf(buf, sizeof(buf), "%s %d%s%s counter=%lu sleeps=%lu\n", failed ? "FAIL" : "PASS", checks,
		 failed ? " " : "", failed ? (const char *)failed : "", counter, sleeps);
	say(buf);
	if (final) {
		kill(child, SIGKILL);
		_exit(failed ? 1 : 0);
	}
}

static void on_term(int sig) { (void)sig; check(1); }
static void on_usr2(int sig) { (void)sig; check(0); }

int main(int argc, char **argv)
{
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	size_t mib = argc > 3 ? strtoul(argv[3], NULL, 10) : 8;
	pages = mib * 256;
	mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (size_t i = 0; i < pages; i++) {
		unsigned char *p = mem + i * 4096;
		memset(p, (unsigned char)(i * 13), 4096);
		*(size_t *)p = i;
	}
	int p[2];
	pipe(p);
	child = fork();
	if (child == 0) {
		close(p[0]);
		for (unsigned long n = 1;; n++) {
			if (write(p[1], &n, sizeof(n)) != sizeof(n))
				_exit(1);
			usleep(1000);
		}
	}
	close(p[1]);
	pipe_r = p[0];

	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	sigaddset(&sa.sa_mask, SIGTERM);
	sigaddset(&sa.sa_mask, SIGUSR2);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	sigset_t blk;
	sigemptyset(&blk);
	sigaddset(&blk, SIGTERM);
	sigaddset(&blk, SIGUSR2);
	sigaddset(&blk, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &blk, NULL); /* threads: SIGTERM, SIGUSR2, SIGHUP blocked */
	pthread_t t1, t2;
	pthread_create(&t1, NULL, spinner, NULL);
	pthread_create(&t2, NULL, sleeper, NULL);
	sigemptyset(&blk);
	sigaddset(&blk, SIGTERM);
	sigaddset(&blk, SIGUSR2);
	pthread_sigmask(SIG_UNBLOCK, &blk, NULL); /* the leader checks; SIGHUP stays blocked */
	kill(getpid(), SIGHUP);

	struct timespec ts = {0, 20000000};
	nanosleep(&ts, NULL);
	snapshot_maps(maps0, sizeof(maps0));
	snapshot_fds(fds0, sizeof(fds0));
	char buf[128];
	snprintf(buf, sizeof(buf), "ready pid=%d child=%d\n", getpid(), child);
	say(buf);
	for (;;) {
		unsigned long n;
		ssize_t r = read(pipe_r, &n, sizeof(n));
		if (r < 0)
			continue;
		if (r != sizeof(n)) {
			fail("the pipe from the child ended");
			pause();
		}
		if (n != counter + 1)
			fail("the child's counter skipped");
		counter = n;
	}
}
