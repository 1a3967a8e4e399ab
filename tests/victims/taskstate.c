/*
 * Victim: task state the kernel keeps beside memory and files, each checked after restore.
 *
 *   leader    capabilities: CAP_CHOWN out of the effective set, CAP_DAC_OVERRIDE out of the
 *             permitted set, CAP_SYS_BOOT out of the bounding set, CAP_NET_RAW inheritable and
 *             ambient; SECBIT_KEEP_CAPS; nice 5; oom_score_adj 400; THP disabled; not
 *             dumpable; membarrier registered (private expedited); ITIMER_REAL every 20 ms
 *             with a handler counting SIGALRMs (it expires while the task is frozen); a POSIX
 *             timer with SIGEV_THREAD (glibc's helper thread runs a function every 20 ms)
 *   thread A  SCHED_RR | SCHED_RESET_ON_FORK, priority 3; its own user ids (raw setresuid
 *             in this thread only: 0, 4242, 0)
 *   thread B  SCHED_IDLE
 *   child C   ids changed: uid 1/2/3 (fs 2), gid 5/6/7 (fs 8); parent-death signal SIGUSR1;
 *             two pages locked (mlock, taken while root) that stay locked
 *   child S   stopped by SIGSTOP (the parent has not collected the stop: waitid WNOWAIT)
 *   zombies   exited with 3; killed by SIGTERM; killed by SIGSEGV (no core); one in a process
 *             group whose leader is gone (made by a child that led the group, then exited)
 *   SIGCHLD   counted by a handler: the restore sends none (zombies die, a child stops again)
 *
 * Prints "ready pid=P" to argv[1]. On SIGTERM the leader checks all of it, asks C to check
 * itself, collects the zombies and the stopped child, and writes PASS or FAIL <what>.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/membarrier.h>
#include <linux/securebits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000
#endif

static int out;
static volatile int alarms;
static pid_t child_c, child_s, z_exit, z_term, z_segv;
static int c_ask[2], c_answer[2];
static volatile pid_t tid_a, tid_b;
static const char *failed;

static void say(const char *s) { write(out, s, strlen(s)); }
static void fail(const char *why) { if (!failed) failed = why; }
static void on_alarm(int sig) { (void)sig; alarms++; }
static volatile int sigchld;
static void on_chld(int sig) { (void)sig; sigchld++; }
static pid_t z_orphan, z_group;
static volatile int ticks;
static void on_tick(union sigval v) { (void)v; __atomic_add_fetch(&ticks, 1, __ATOMIC_SEQ_CST); }

struct caps {
	struct __user_cap_header_struct h;
	struct __user_cap_data_struct d[2];
};

static void getcaps(struct caps *c, pid_t tid)
{
	memset(c, 0, sizeof(*c));
	c->h.version = _LINUX_CAPABILITY_VERSION_3;
	c->h.pid = tid;
	syscall(SYS_capget, &c->h, c->d);
}

static void *thread_a(void *arg)
{
	(void)arg;
	tid_a = gettid();
	struct sched_param p = {.sched_priority = 3};
	if (sched_setscheduler(0, SCHED_RR | SCHED_RESET_ON_FORK, &p))
		fail("setup: SCHED_RR");
	/* This thread only: glibc's setresuid would change every thread. */
	syscall(SYS_setresuid, 0, 4242, 0);
	for (;;)
		pause();
	return NULL;
}

static void *thread_b(void *arg)
{
	(void)arg;
	tid_b = gettid();
	struct sched_param p = {.sched_priority = 0};
	if (sched_setscheduler(0, SCHED_IDLE, &p))
		fail("setup: SCHED_IDLE");
	for (;;)
		pause();
	return NULL;
}

/* Child C: changed ids; on a byte from the parent, checks itself and answers. */
static void child_ids(void)
{
	char *locked = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (locked == MAP_FAILED || mlock(locked, 8192))
		_exit(1);
	locked[0] = 'L';
	if (setresgid(5, 6, 7) || setfsgid(8) < 0 || setresuid(1, 2, 3))
		_exit(1);
	prctl(PR_SET_PDEATHSIG, SIGUSR1);
	char c;
	while (read(c_ask[0], &c, 1) != 1)
		;
	uid_t r, e, s;
	gid_t gr, ge, gs;
	getresuid(&r, &e, &s);
	getresgid(&gr, &ge, &gs);
	int ok = r == 1 && e == 2 && s == 3 && setfsuid(-1) == 2 && gr == 5 && ge == 6 && gs == 7 &&
		 setfsgid(-1) == 8;
	int sig = 0;
	prctl(PR_GET_PDEATHSIG, &sig);
	ok = ok && sig == SIGUSR1;
	/* Still locked: mincore cannot tell, the VmFlags of smaps can ("lo"). */
	char line[512], want[64];
	snprintf(want, sizeof(want), "%lx-", (unsigned long)locked);
	FILE *f = fopen("/proc/self/smaps", "r");
	int in = 0, lo = 0;
	while (f && fgets(line, sizeof(line), f)) {
		if (strchr(line, '-') && strchr(line, ' ') && strchr(line, '-') < strchr(line, ' '))
			in = !strncmp(line, want, strlen(want));
		else if (in && !strncmp(line, "VmFlags:", 8))
			lo = strstr(line, " lo") != NULL;
	}
	if (f)
		fclose(f);
	ok = ok && lo && locked[0] == 'L';
	write(c_answer[1], ok ? "y" : "n", 1);
	pause();
	_exit(0);
}

static void check(int sig)
{
	(void)sig;
	struct caps c;
	getcaps(&c, 0);
	if (c.d[0].effective & (1 << CAP_CHOWN))
		fail("CAP_CHOWN back in the effective set");
	if (!(c.d[0].effective & (1 << CAP_KILL)))
		fail("CAP_KILL lost from the effective set");
	if (c.d[0].permitted & (1 << CAP_DAC_OVERRIDE))
		fail("CAP_DAC_OVERRIDE back in the permitted set");
	if (!(c.d[0].inheritable & (1 << CAP_NET_RAW)))
		fail("CAP_NET_RAW not inheritable");
	if (prctl(PR_CAPBSET_READ, CAP_SYS_BOOT) != 0)
		fail("CAP_SYS_BOOT back in the bounding set");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_RAW, 0, 0) != 1)
		fail("CAP_NET_RAW not ambient");
	if (prctl(PR_GET_SECUREBITS) != SECBIT_KEEP_CAPS)
		fail("securebits");
	errno = 0;
	if (getpriority(PRIO_PROCESS, 0) != 5)
		fail("nice of the leader");
	if (sched_getscheduler(tid_a) != (SCHED_RR | SCHED_RESET_ON_FORK))
		fail("policy of thread A");
	struct sched_param p;
	if (sched_getparam(tid_a, &p) || p.sched_priority != 3)
		fail("priority of thread A");
	if (sched_getscheduler(tid_b) != SCHED_IDLE)
		fail("policy of thread B");
	char path[64], buf[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid_a);
	FILE *f = fopen(path, "r");
	int uid_ok = 0;
	while (f && fgets(buf, sizeof(buf), f))
		if (!strncmp(buf, "Uid:", 4))
			uid_ok = !strcmp(buf, "Uid:\t0\t4242\t0\t4242\n");
	if (f)
		fclose(f);
	if (!uid_ok)
		fail("user ids of thread A");
	f = fopen("/proc/self/oom_score_adj", "r");
	int oom = 0;
	if (!f || fscanf(f, "%d", &oom) != 1 || oom != 400)
		fail("oom_score_adj");
	if (f)
		fclose(f);
	if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1)
		fail("THP disabled");
	if (prctl(PR_GET_DUMPABLE) != 0)
		fail("dumpable");
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
		fail("membarrier registration");
	/* The interval timer still ticks. */
	int a0 = alarms;
	sigset_t alrm;
	sigemptyset(&alrm);
	sigaddset(&alrm, SIGALRM);
	pthread_sigmask(SIG_UNBLOCK, &alrm, NULL);
	for (int i = 0; i < 20 && alarms < a0 + 3; i++)
		usleep(20000);
	if (alarms < a0 + 3)
		fail("ITIMER_REAL stopped ticking");
	int t0 = ticks;
	for (int i = 0; i < 20 && ticks < t0 + 3; i++)
		usleep(20000);
	if (ticks < t0 + 3)
		fail("the SIGEV_THREAD timer stopped");
	/* Child C checks its ids. */
	char answer = 0;
	write(c_ask[1], "?", 1);
	if (read(c_answer[0], &answer, 1) != 1 || answer != 'y')
		fail("ids or parent-death signal of child C");
	/* Zombies. */
	int st;
	if (waitpid(z_exit, &st, WNOHANG) != z_exit || !WIFEXITED(st) || WEXITSTATUS(st) != 3)
		fail("zombie that exited with 3");
	if (waitpid(z_term, &st, WNOHANG) != z_term || !WIFSIGNALED(st) || WTERMSIG(st) != SIGTERM)
		fail("zombie killed by SIGTERM");
	if (waitpid(z_segv, &st, WNOHANG) != z_segv || !WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV ||
	    WCOREDUMP(st))
		fail("zombie killed by SIGSEGV");
	if (sigchld)
		fail("a SIGCHLD came from the restore");
	if (getpgid(z_orphan) != z_group)
		fail("the process group of the zombie whose group leader is gone");
	if (waitpid(z_orphan, &st, WNOHANG) != z_orphan || !WIFEXITED(st) || WEXITSTATUS(st) != 5)
		fail("zombie in an orphaned group");
	/* The stopped child is stopped, and goes on when continued. */
	siginfo_t si = {0};
	if (waitid(P_PID, child_s, &si, WSTOPPED | WNOHANG | WNOWAIT) || si.si_pid != child_s ||
	    si.si_status != SIGSTOP)
		fail("child S is not stopped");
	kill(child_s, SIGCONT);
	if (waitpid(child_s, &st, 0) != child_s || !WIFEXITED(st) || WEXITSTATUS(st) != 7)
		fail("child S did not go on");
	kill(child_c, SIGKILL);
	snprintf(buf, sizeof(buf), "%s%s\n", failed ? "FAIL " : "PASS", failed ? failed : "");
	say(buf);
	_exit(failed ? 1 : 0);
}

int main(int argc, char **argv)
{
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	pipe(c_ask);
	pipe(c_answer);
	if ((child_c = fork()) == 0)
		child_ids();
	if ((child_s = fork()) == 0) {
		raise(SIGSTOP);
		_exit(7);
	}
	if ((z_exit = fork()) == 0)
		_exit(3);
	if ((z_term = fork()) == 0) {
		raise(SIGTERM);
		_exit(1);
	}
	if ((z_segv = fork()) == 0) {
		struct rlimit no = {0, 0};
		setrlimit(RLIMIT_CORE, &no);
		*(volatile int *)0 = 0;
		_exit(1);
	}
	/* A child leading its own group makes a sibling (CLONE_PARENT) in that group, and exits. */
	int zp[2];
	pipe(zp);
	pid_t leader = fork();
	if (leader == 0) {
		setpgid(0, 0);
		pid_t z = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
		if (z == 0)
			_exit(5);
		write(zp[1], &z, sizeof(z));
		_exit(0);
	}
	read(zp[0], &z_orphan, sizeof(z_orphan));
	z_group = leader;
	waitpid(leader, NULL, 0);
	siginfo_t si;
	waitid(P_PID, z_orphan, &si, WEXITED | WNOWAIT);
	pid_t zombies[] = {z_exit, z_term, z_segv};
	for (int i = 0; i < 3; i++)
		waitid(P_PID, zombies[i], &si, WEXITED | WNOWAIT);
	waitid(P_PID, child_s, &si, WSTOPPED | WNOWAIT);

	signal(SIGTERM, check);
	struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
	sigaction(SIGALRM, &sa, NULL);
	sigset_t blk;
	sigemptyset(&blk);
	sigaddset(&blk, SIGTERM);
	sigaddset(&blk, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &blk, NULL); /* threads take neither */
	pthread_t a, b;
	pthread_create(&a, NULL, thread_a, NULL);
	pthread_create(&b, NULL, thread_b, NULL);
	while (!tid_a || !tid_b)
		usleep(1000);
	pthread_sigmask(SIG_UNBLOCK, &blk, NULL);

	/* Capabilities: bounding first (needs CAP_SETPCAP), then sets, ambient, securebits. */
	if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT))
		fail("setup: bounding set");
	struct caps c;
	getcaps(&c, 0);
	c.d[0].effective &= ~(1 << CAP_CHOWN);
	c.d[0].effective &= ~(1 << CAP_DAC_OVERRIDE);
	c.d[0].permitted &= ~(1 << CAP_DAC_OVERRIDE);
	c.d[0].inheritable |= 1 << CAP_NET_RAW;
	c.h.pid = 0;
	if (syscall(SYS_capset, &c.h, c.d))
		fail("setup: capset");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_RAW, 0, 0))
		fail("setup: ambient");
	if (prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS))
		fail("setup: securebits");
	setpriority(PRIO_PROCESS, 0, 5);
	FILE *f = fopen("/proc/self/oom_score_adj", "w");
	fprintf(f, "400\n");
	fclose(f);
	prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	prctl(PR_SET_DUMPABLE, 0);
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0))
		fail("setup: membarrier");
	struct itimerval it = {.it_interval = {0, 20000}, .it_value = {0, 20000}};
	setitimer(ITIMER_REAL, &it, NULL);
	struct sigevent ev = {.sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_tick};
	timer_t timer;
	struct itimerspec every = {.it_interval = {0, 20000000}, .it_value = {0, 20000000}};
	if (timer_create(CLOCK_MONOTONIC, &ev, &timer) || timer_settime(timer, 0, &every, NULL))
		fail("setup: SIGEV_THREAD timer");
	while (!ticks)
		usleep(1000);
	if (failed) {
		say("FAIL ");
		say(failed);
		say("\n");
		return 1;
	}
	usleep(20000); /* every SIGCHLD of the setup is in, counted or not: from now, none */
	struct sigaction chld = {.sa_handler = on_chld, .sa_flags = SA_RESTART};
	sigaction(SIGCHLD, &chld, NULL);
	char buf[64];
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	say(buf);
	for (;;)
		pause();
}
