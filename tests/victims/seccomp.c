/*
 * seccomp: P (no_new_privs) has three filters given to both its threads at once (TSYNC): uname
 * fails with EPERM, getppid with EACCES, then uname with ENOENT (the newest filter wins: the
 * order matters). Its child C inherits them and adds its own (getpgrp
 * fails with ENOTDIR); its child S runs in strict mode, blocked in read(). argv: OUT. On SIGTERM
 * P checks its threads' filters (and that TSYNC still works: one chain for both), has C check
 * its own, and has S make a forbidden call (strict mode kills it). Prints PASS or FAIL.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term, usr1;
static void on_term(int sig) { (void)sig; term = 1; }
static void on_usr1(int sig) { (void)sig; usr1 = 1; }

/* A filter failing syscall `nr` with `err`, letting the rest through. */
static int deny(int nr, int err, unsigned flags)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = 4, .filter = f};
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static int filters_of(const char *who)
{
	char path[64], line[256];
	int n = -1;
	if (who)
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", who);
	else
		snprintf(path, sizeof(path), "/proc/self/status");
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		sscanf(line, "Seccomp_filters: %d", &n);
	if (f)
		fclose(f);
	return n;
}

/* What P's filters do, seen from the calling thread. */
static int p_filters_work(void)
{
	struct utsname u;
	errno = 0;
	int a = uname(&u) == -1 && errno == ENOENT;
	errno = 0;
	int b = syscall(SYS_getppid) == -1 && errno == EACCES;
	return a && b && getpid() > 0;
}

static volatile int thread_ok = -1, thread_go;
static void *thread_main(void *arg)
{
	(void)arg;
	while (!thread_go)
		usleep(1000);
	char tid[32];
	snprintf(tid, sizeof(tid), "%ld", syscall(SYS_gettid));
	thread_ok = p_filters_work() && filters_of(tid) == 3;
	return NULL;
}

int main(int argc, char **argv)
{
	(void)argc;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char msg[256];
	int sp[2];
	if (pipe(sp))
		return 2;
	pid_t s = fork();
	if (s == 0) {
		char c;
		close(sp[1]);
		syscall(SYS_prctl, PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0);
		if (syscall(SYS_read, sp[0], &c, 1) == 1)
			syscall(SYS_getpid); /* killed here */
		syscall(SYS_exit, 0);
	}
	close(sp[0]);
	pthread_t th;
	pthread_create(&th, NULL, thread_main, NULL);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    deny(SYS_uname, EPERM, SECCOMP_FILTER_FLAG_TSYNC) ||
	    deny(SYS_getppid, EACCES, SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_LOG) ||
	    deny(SYS_uname, ENOENT, SECCOMP_FILTER_FLAG_TSYNC))
		return 3;
	signal(SIGUSR1, on_usr1);
	pid_t c = fork();
	if (c == 0) {
		if (deny(SYS_getpgrp, ENOTDIR, 0))
			_exit(4);
		while (!usr1)
			pause();
		errno = 0;
		int ok = syscall(SYS_getpgrp) == -1 && errno == ENOTDIR && p_filters_work() &&
			 filters_of(NULL) == 4;
		_exit(ok ? 0 : 1);
	}
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d child=%d strict=%d\n", getpid(), c, s);
	write(out, msg, strlen(msg));
	while (!term)
		pause();

	const char *why = NULL;
	char me[32];
	snprintf(me, sizeof(me), "%d", getpid());
	thread_go = 1;
	pthread_join(th, NULL);
	if (!p_filters_work() || filters_of(me) != 3)
		why = "the leader's filters";
	else if (thread_ok != 1)
		why = "the thread's filters";
	else {
		/* One chain for both threads: another TSYNC filter can still be given to both. */
		if (deny(SYS_getpgid, EPERM, SECCOMP_FILTER_FLAG_TSYNC))
			why = "TSYNC refused: the threads' chains differ";
	}
	int st;
	kill(c, SIGUSR1);
	waitpid(c, &st, 0);
	if (!why && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		why = "the child's filters";
	write(sp[1], "x", 1);
	int st2;
	waitpid(s, &st2, 0);
	if (!why && !(WIFSIGNALED(st2) && WTERMSIG(st2) == SIGKILL))
		why = "the strict task was not killed by its forbidden call";
	usleep(10000);
	dprintf(out, why ? "FAIL seccomp: %s\n" : "PASS seccomp\n", why);
	return 0;
}
