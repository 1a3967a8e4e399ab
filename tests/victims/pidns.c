/*
 * The init of a PID namespace of its own, with ids that only mean something inside it. argv:
 * OUT [plain] ("plain": no pipe owner; CRIU 4.2 cannot give a file its owner thread in a PID
 * namespace). The starter unshares a PID namespace and forks the init (its id 1 there); the starter
 * prints "ready pid=HOST_PID" and exits. The init leads its own session and has:
 *   - a child (2 there) leading its own process group, which queued SIGUSR2 with a value to
 *     the init (blocked: pending, its si_pid the child's id 2);
 *   - a thread, which a POSIX timer (SIGEV_THREAD_ID) and a pipe's owner (F_SETOWN_EX,
 *     F_OWNER_TID) name by its id;
 *   - a pidfd of the child;
 *   - 32 MiB of memory written (enough for a restore to fill it with a thread of its own,
 *     whose id, 2 there while it runs, the child is to have).
 * On SIGTERM it checks each, as seen from inside: its id is still 1, the child's is 2 and its
 * group 2 in session 1, the pending signal came from 2, the pipe's owner is the thread, the
 * timer fires into that thread, the pidfd reaches the child (SIGTERM through it, then its
 * exit status), and every page of the memory holds what was written. Prints PASS or FAIL.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t term, fired_in;
static pid_t thread_tid;

static void on_term(int sig) { (void)sig; term = 1; }
static void on_timer(int sig) { (void)sig; fired_in = (sig_atomic_t)syscall(SYS_gettid); }

static void *thread_main(void *arg)
{
	(void)arg;
	thread_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static int child_main(int ready)
{
	signal(SIGTERM, SIG_DFL);
	setpgid(0, 0);
	union sigval v = {.sival_int = 4242};
	if (sigqueue(1, SIGUSR2, v))
		_exit(3);
	write(ready, "c", 1);
	for (;;)
		pause();
}

static int plain;

/* Whether each page of `mem` starts and ends with the word written there. */
static int memory_kept(const unsigned long *mem, size_t npages)
{
	for (size_t i = 0; i < npages; i++)
		if (mem[i * 512] != i * 2654435761u || mem[i * 512 + 511] != i * 2654435761u)
			return 0;
	return 1;
}

static int init_main(int out, int ready)
{
	const char *why = NULL;
	if (setsid() < 0 || getpid() != 1)
		return 2;
	sigset_t usr2;
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	sigprocmask(SIG_BLOCK, &usr2, NULL);
	signal(SIGTERM, on_term);
	signal(SIGALRM, on_timer);

	int cp[2];
	pipe(cp);
	pid_t child = fork();
	if (child == 0)
		_exit(child_main(cp[1]));
	char b;
	read(cp[0], &b, 1);

	pthread_t th;
	pthread_create(&th, NULL, thread_main, NULL);
	while (!__atomic_load_n(&thread_tid, __ATOMIC_SEQ_CST))
		usleep(1000);

	struct sigevent sev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGALRM};
	sev._sigev_un._tid = thread_tid;
	timer_t timer;
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer))
		return 2;
	int pp[2];
	pipe(pp);
	struct f_owner_ex owner = {.type = F_OWNER_TID, .pid = thread_tid};
	if (!plain)
		fcntl(pp[0], F_SETOWN_EX, &owner);
	int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
	if (pidfd < 0)
		return 2;
	const size_t npages = 32 << 8;
	unsigned long *mem = mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 2;
	for (size_t i = 0; i < npages; i++)
		mem[i * 512] = mem[i * 512 + 511] = i * 2654435761u;
	write(ready, "r", 1);

	while (!term)
		pause();

	siginfo_t si;
	struct timespec zero = {0, 0};
	struct f_owner_ex now;
	if (getpid() != 1)
		why = "the init's id";
	else if (!memory_kept(mem, npages))
		why = "the memory";
	else if (child != 2)
		why = "the child's id at the start";
	else if (getpgid(2) != 2 || getsid(2) != 1)
		why = "the child's group or session";
	else if (sigtimedwait(&usr2, &si, &zero) != SIGUSR2 || si.si_pid != 2 ||
		 si.si_value.sival_int != 4242)
		why = "the pending signal";
	else if (!plain && (fcntl(pp[0], F_GETOWN_EX, &now) || now.type != F_OWNER_TID ||
			    now.pid != thread_tid))
		why = "the pipe's owner";
	if (!why) {
		struct itimerspec its = {.it_value = {0, 1000000}};
		timer_settime(timer, 0, &its, NULL);
		for (int i = 0; i < 2000 && !fired_in; i++)
			usleep(1000);
		if (fired_in != thread_tid)
			why = "the timer's thread";
	}
	if (!why) {
		siginfo_t st = {0};
		if (syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0) ||
		    waitid(P_PIDFD, pidfd, &st, WEXITED) || st.si_pid != 2 ||
		    st.si_code != CLD_KILLED || st.si_status != SIGTERM)
			why = "the pidfd";
	}
	dprintf(out, why ? "FAIL pidns: %s\n" : "PASS pidns\n", why);
	return 0;
}

int main(int argc, char **argv)
{
	plain = argc > 2 && !strcmp(argv[2], "plain");
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (unshare(CLONE_NEWPID))
		return 2;
	int rp[2];
	pipe(rp);
	pid_t init = fork();
	if (init == 0) {
		close(rp[0]);
		_exit(init_main(out, rp[1]));
	}
	close(rp[1]);
	char b;
	if (read(rp[0], &b, 1) != 1)
		return 2;
	dprintf(out, "ready pid=%d\n", init);
	return 0;
}
