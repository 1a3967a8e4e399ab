/*
 * Sessions and process groups whose leaders are gone, under a subreaper root: argv OUT.
 * Started by setsid (the root leads its session), the root becomes a child subreaper, then:
 *   - P forks C, then calls setsid(): C stays in the root's session, its parent in its own;
 *     P's child X makes a group of its own, forks F and exits: F goes to the root, in P's
 *     session (its leader alive), in a group whose leader is gone;
 *   - L calls setsid(), forks D (in L's group) and E (a group of its own), and exits: D and E
 *     go to the root, in a session whose leader is gone, D in a group whose leader is gone;
 *   - G makes a group of its own, forks M, and exits: M goes to the root, in G's group.
 * The root reaps L and G, notes every task's parent, group and session, and reports
 * "ready pid=ROOT". On SIGTERM it checks they are all as noted (from /proc/PID/stat) and that
 * no SIGCHLD came meanwhile, kills them and prints PASS sessions or FAIL sessions: WHAT.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term, chld;
static void on_term(int sig) { (void)sig; term = 1; }
static void on_chld(int sig) { (void)sig; chld++; }

static void idle(void)
{
	for (;;)
		pause();
}

/* Makes a group of its own, forks a child in it, tells its pid on `fd`, and exits. */
static void group_and_go(int fd)
{
	setpgid(0, 0);
	pid_t k = fork();
	if (k == 0)
		idle();
	write(fd, &k, sizeof(k));
	_exit(0);
}

/* ppid, pgrp and session of `pid` from /proc/PID/stat. */
static int ids(pid_t pid, int out[3])
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && sscanf(p + 2, "%*c %d %d %d", &out[0], &out[1], &out[2]) == 3 ? 0 : -1;
}

static pid_t getppid_of(pid_t pid)
{
	int v[3];
	return ids(pid, v) ? -1 : v[0];
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int pp[2];
	signal(SIGTERM, on_term);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (pipe(pp))
		return 1;
	pid_t tasks[6];
	int n = 0;

	pid_t p = fork();
	if (p == 0) {
		pid_t c = fork();
		if (c == 0)
			idle();
		setsid();
		write(pp[1], &c, sizeof(c));
		pid_t x = fork();
		if (x == 0)
			group_and_go(pp[1]);
		waitpid(x, NULL, 0);
		idle();
	}
	tasks[n++] = p;
	read(pp[0], &tasks[n++], sizeof(pid_t));
	read(pp[0], &tasks[5], sizeof(pid_t));

	pid_t l = fork();
	if (l == 0) {
		setsid();
		pid_t d = fork();
		if (d == 0)
			idle();
		pid_t e = fork();
		if (e == 0) {
			setpgid(0, 0);
			idle();
		}
		write(pp[1], &d, sizeof(d));
		write(pp[1], &e, sizeof(e));
		_exit(0);
	}
	read(pp[0], &tasks[n++], sizeof(pid_t));
	read(pp[0], &tasks[n++], sizeof(pid_t));
	waitpid(l, NULL, 0);

	pid_t g = fork();
	if (g == 0)
		group_and_go(pp[1]);
	read(pp[0], &tasks[n++], sizeof(pid_t));
	waitpid(g, NULL, 0);
	n++; /* F, read above */
	/* F's parent goes: wait until F is the root's. */
	for (int i = 0; i < 1000 && getppid_of(tasks[5]) != getpid(); i++)
		usleep(1000);
	/* E makes its group on its own: wait until it has. */
	for (int i = 0; i < 1000 && getpgid(tasks[3]) != tasks[3]; i++)
		usleep(1000);

	/* From here no child dies: a SIGCHLD would be one the restore made. */
	signal(SIGCHLD, on_chld);
	int before[6][3];
	for (int i = 0; i < n; i++)
		ids(tasks[i], before[i]);
	char buf[256];
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	const char *why = NULL;
	static char what[128];
	for (int i = 0; i < n && !why; i++) {
		int now[3];
		if (ids(tasks[i], now) || memcmp(now, before[i], sizeof(now))) {
			snprintf(what, sizeof(what), "task %d: ppid/pgid/sid %d/%d/%d, were %d/%d/%d",
				 tasks[i], now[0], now[1], now[2], before[i][0], before[i][1],
				 before[i][2]);
			why = what;
		}
	}
	if (!why && chld)
		why = "a SIGCHLD came, no child having changed";
	if (!why && (before[1][2] != getpid() || before[2][2] != l || before[2][1] != l ||
		     before[3][1] != tasks[3] || before[4][1] != g || before[5][2] != p ||
		     before[5][0] != getpid() || before[5][1] == p))
		why = "the set-up is not what the test means";
	for (int i = 0; i < n; i++)
		kill(tasks[i], SIGKILL);
	snprintf(buf, sizeof(buf), why ? "FAIL sessions: %s\n" : "PASS sessions\n", why);
	write(out, buf, strlen(buf));
	return why != NULL;
}
