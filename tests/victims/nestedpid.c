/*
 * A PID namespace nested in the tree's, as `unshare -pf` makes one. argv: OUT [own] [pidfd]
 *
 * The root R forks X, then unshares a PID namespace (CLONE_NEWPID) and forks C, its init (1
 * there). C forks D (2 there), which runs a thread T (3 there). R then forks E, which lands in
 * C's namespace (4 there) with its parent outside it (getppid() is 0); then, back in its own
 * namespace for its children (setns), Y there, and joins C's again. With "own", a starter first unshares a
 * PID namespace and forks R (1 in it, leading its session), one level up, and exits; else R is
 * in criu's namespace.
 *
 * At "ready" each task notes the NSpid lines of its threads (criu's level dropped with "own",
 * where a restore gives other ids there) and its getppid(). On SIGTERM R checks its own, that
 * its children's namespace (pid_for_children) is still C's (a child forked now lands there: one
 * level deeper, its parent outside, 2 and 4 there), and asks C, E, X and Y (SIGUSR1; C asks D
 * by its id 2) to check theirs: each writes "ok NAME" or "bad NAME why" to a pipe R reads. C also
 * checks that 2 and 4 are there to signal, D that its thread is alive and moving. R prints PASS
 * nestedpid or FAIL nestedpid with the reasons. With "pidfd", E holds a pidfd of X (inherited
 * from R), which its namespace does not show: a tree to be refused.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int own, report_w;
static const char *name = "R";
static char ids0[2048];
static pid_t ppid0;
static volatile sig_atomic_t asked;
static volatile unsigned long beats;

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The NSpid lines of this process's threads, sorted (the first id dropped with "own"). */
static void nspids(char *out, size_t size)
{
	char *lines[16];
	int n = 0;
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	while (d && (e = readdir(d)) && n < 16) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], buf[4096];
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = 0;
		char *l = strstr(buf, "NSpid:");
		if (!l)
			continue;
		char *end = strchr(l, '\n');
		if (end)
			*end = 0;
		l += 6;
		while (*l == '\t' || *l == ' ')
			l++;
		if (own) { /* criu's level differs after a restore */
			while (*l && *l != '\t' && *l != ' ')
				l++;
			while (*l == '\t' || *l == ' ')
				l++;
		}
		lines[n++] = strdup(l);
	}
	if (d)
		closedir(d);
	qsort(lines, n, sizeof(*lines), cmp);
	out[0] = 0;
	for (int i = 0; i < n; i++) {
		strncat(out, lines[i], size - strlen(out) - 2);
		strcat(out, "|");
		free(lines[i]);
	}
}

static void note(void)
{
	nspids(ids0, sizeof(ids0));
	ppid0 = getppid();
}

/* "ok NAME" or "bad NAME why" to the report pipe. */
static void report(const char *why)
{
	char buf[512];
	int n = why ? snprintf(buf, sizeof(buf), "bad %s %s\n", name, why)
		    : snprintf(buf, sizeof(buf), "ok %s\n", name);
	write(report_w, buf, n);
}

/* This task's own check: its ids and its parent's as noted. */
static const char *check_self(void)
{
	static char why[4200];
	char now[2048];
	nspids(now, sizeof(now));
	if (strcmp(now, ids0)) {
		snprintf(why, sizeof(why), "NSpid [%s] was [%s]", now, ids0);
		return why;
	}
	if (strcmp(name, "R") && getppid() != ppid0) { /* R's parent is whoever restored it */
		snprintf(why, sizeof(why), "getppid %d was %d", getppid(), ppid0);
		return why;
	}
	return NULL;
}

static void on_usr1(int sig) { (void)sig; asked = 1; }

static void *thread_main(void *arg)
{
	(void)arg;
	for (;;) {
		beats++;
		usleep(1000);
	}
	return NULL;
}

/* Waits for SIGUSR1, then runs `check` and reports, over and over. */
static void serve(const char *(*check)(void))
{
	for (;;) {
		pause();
		if (!asked)
			continue;
		asked = 0;
		const char *why = check_self();
		if (!why && check)
			why = check();
		report(why);
	}
}

static const char *check_d(void)
{
	unsigned long b = beats;
	usleep(50000);
	return beats == b ? "its thread stopped" : NULL;
}

static const char *check_c(void)
{
	if (getpid() != 1)
		return "not 1 in its namespace";
	if (kill(2, 0) || kill(4, 0))
		return "2 or 4 not there";
	kill(2, SIGUSR1); /* D reports on its own */
	/* An init reaps what ends in its namespace. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	return NULL;
}

static void run_d(void)
{
	name = "D";
	pthread_t t;
	pthread_create(&t, NULL, thread_main, NULL);
	usleep(20000);
	note();
	serve(check_d);
}

static void run_c(int ready)
{
	name = "C";
	pid_t d = fork();
	if (d == 0)
		run_d();
	usleep(100000); /* D noted its ids */
	note();
	write(ready, "c", 1);
	serve(check_c);
}

/* E, X or Y: a task that only checks itself. */
static void run_plain(const char *who, int ready)
{
	name = who;
	note();
	write(ready, "p", 1);
	serve(NULL);
}

/* R's own checks: its children's namespace is C's, where a child forked now lands. */
static const char *check_r(int levels)
{
	static char why[256];
	int p[2];
	if (pipe(p))
		return "pipe";
	pid_t f = fork();
	if (f == 0) {
		char ids[2048];
		own = 0;
		nspids(ids, sizeof(ids));
		int n = 1;
		for (char *c = ids; *c && *c != '|'; c++)
			n += *c == '\t' || *c == ' ';
		char buf[64];
		int ok = getppid() == 0 && kill(2, 0) == 0 && kill(4, 0) == 0 && getpid() > 4;
		snprintf(buf, sizeof(buf), "%d %d", n, ok);
		write(p[1], buf, strlen(buf));
		_exit(0);
	}
	close(p[1]);
	char buf[64] = {0};
	read(p[0], buf, sizeof(buf) - 1);
	close(p[0]);
	waitpid(f, NULL, 0);
	int n = 0, ok = 0;
	sscanf(buf, "%d %d", &n, &ok);
	if (n != levels + 1 || !ok) {
		snprintf(why, sizeof(why), "a child forked now: %d levels (want %d), in C's namespace %d",
			 n, levels + 1, ok);
		return why;
	}
	return NULL;
}

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	own = argc > 2 && !strcmp(argv[2], "own");
	int with_pidfd = argc > 2 && !strcmp(argv[argc - 1], "pidfd");
	FILE *out = fopen(argv[1], "a");
	setvbuf(out, NULL, _IONBF, 0);
	int started[2];
	pipe(started);
	if (own) {
		if (unshare(CLONE_NEWPID)) {
			fprintf(out, "FAIL nestedpid unshare\n");
			return 1;
		}
		pid_t r = fork();
		if (r != 0) { /* once R is ready */
			char b;
			close(started[1]);
			if (read(started[0], &b, 1) == 1)
				fprintf(out, "ready pid=%d\n", r);
			return 0;
		}
		close(started[0]);
		setsid(); /* a session of its own namespace, as a container's init */
	}
	signal(SIGUSR1, on_usr1);
	int rep[2], ready[2];
	pipe(rep);
	pipe(ready);
	report_w = rep[1];
	char b;
	pid_t x = fork();
	if (x == 0)
		run_plain("X", ready[1]);
	read(ready[0], &b, 1);
	int mine = open("/proc/self/ns/pid", O_RDONLY);
	if (unshare(CLONE_NEWPID)) {
		fprintf(out, "FAIL nestedpid unshare\n");
		return 1;
	}
	pid_t c = fork();
	if (c == 0)
		run_c(ready[1]);
	read(ready[0], &b, 1);
	/* With "pidfd", E inherits a pidfd of X, which its namespace does not show. */
	if (with_pidfd && syscall(SYS_pidfd_open, x, 0) < 0) {
		fprintf(out, "FAIL nestedpid pidfd_open\n");
		return 1;
	}
	pid_t e = fork();
	if (e == 0)
		run_plain("E", ready[1]);
	read(ready[0], &b, 1);
	/* Y back in R's own namespace, after E; then R's children go to C's again. */
	int theirs = (int)syscall(SYS_pidfd_open, c, 0);
	if (setns(mine, CLONE_NEWPID)) {
		fprintf(out, "FAIL nestedpid setns\n");
		return 1;
	}
	pid_t y = fork();
	if (y == 0)
		run_plain("Y", ready[1]);
	read(ready[0], &b, 1);
	if (setns(theirs, CLONE_NEWPID)) {
		fprintf(out, "FAIL nestedpid setns back\n");
		return 1;
	}
	close(mine);
	close(theirs);
	struct sigaction sa = {.sa_handler = on_term};
	sigaction(SIGTERM, &sa, NULL);
	note();
	/* R's levels: the fields of its NSpid line (criu's, dropped under "own", counted back). */
	int levels = 1 + own;
	for (char *s = ids0; *s && *s != '|'; s++)
		levels += *s == '\t' || *s == ' ';
	if (!own)
		fprintf(out, "ready pid=%d\n", getpid());
	write(started[1], "r", 1);
	close(started[1]);
	while (!term)
		pause();
	char fails[4096] = "";
	const char *why = check_self();
	if (why)
		snprintf(fails + strlen(fails), sizeof(fails) - strlen(fails), " R: %s;", why);
	why = check_r(levels);
	if (why)
		snprintf(fails + strlen(fails), sizeof(fails) - strlen(fails), " R: %s;", why);
	kill(c, SIGUSR1);
	kill(e, SIGUSR1);
	kill(x, SIGUSR1);
	kill(y, SIGUSR1);
	/* Five reports: C, D, E, X, Y. */
	fcntl(rep[0], F_SETFL, O_NONBLOCK);
	char got[4096] = "";
	for (int i = 0; i < 300 && (!strstr(got, " C") || !strstr(got, " D") || !strstr(got, " E") ||
				    !strstr(got, " X") || !strstr(got, " Y")); i++) {
		usleep(10000);
		ssize_t n = read(rep[0], got + strlen(got), sizeof(got) - strlen(got) - 1);
		(void)n;
	}
	for (char *l = strtok(got, "\n"); l; l = strtok(NULL, "\n"))
		if (strncmp(l, "ok ", 3))
			snprintf(fails + strlen(fails), sizeof(fails) - strlen(fails), " %s;", l);
	if (!fails[0])
		fprintf(out, "PASS nestedpid\n");
	else
		fprintf(out, "FAIL nestedpid%s\n", fails);
	kill(c, SIGKILL); /* the namespace goes with its init */
	kill(e, SIGKILL);
	kill(x, SIGKILL);
	kill(y, SIGKILL);
	return 0;
}
