/*
 * A cgroup namespace of its own. argv: OUT DIR, DIR a cgroup directory (v1 or v2) with a
 * subdirectory "inner". The task moves into DIR, unshares a cgroup namespace there (its root in
 * that hierarchy), moves on into DIR/inner and makes a child, which inherits both. On SIGTERM
 * it checks that it and its child still read the same /proc/self/cgroup as before (paths from
 * the namespace's root: "/inner"), and that their namespace is not PID 1's. Prints PASS or FAIL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static void join(const char *dir)
{
	char path[512], me[32];
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	snprintf(me, sizeof(me), "%d", getpid());
	int fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, me, strlen(me)) < 0)
		exit(2);
	close(fd);
}

static void view(char *buf, size_t n)
{
	int fd = open("/proc/self/cgroup", O_RDONLY);
	ssize_t r = read(fd, buf, n - 1);
	buf[r > 0 ? r : 0] = 0;
	close(fd);
}

int main(int argc, char **argv)
{
	(void)argc;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char inner[512], before[4096], after[4096];
	join(argv[2]);
	if (unshare(CLONE_NEWCGROUP))
		return 3;
	snprintf(inner, sizeof(inner), "%s/inner", argv[2]);
	join(inner);
	view(before, sizeof(before));
	int pfd[2];
	pipe(pfd);
	pid_t c = fork();
	if (c == 0) {
		char b, mine[4096];
		read(pfd[0], &b, 1);
		view(mine, sizeof(mine));
		_exit(strcmp(mine, before) ? 1 : 0);
	}
	struct stat host;
	stat("/proc/1/ns/cgroup", &host);
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d child=%d\n", getpid(), c);
	while (!term)
		pause();
	const char *why = NULL;
	struct stat now;
	stat("/proc/self/ns/cgroup", &now);
	view(after, sizeof(after));
	write(pfd[1], "x", 1);
	int st;
	waitpid(c, &st, 0);
	if (now.st_ino == host.st_ino)
		why = "back in PID 1's cgroup namespace";
	else if (strcmp(before, after))
		why = "its cgroups as it sees them";
	else if (!WIFEXITED(st) || WEXITSTATUS(st))
		why = "the child's cgroups";
	if (why)
		dprintf(out, "before:\n%s\nafter:\n%s\n", before, after);
	dprintf(out, why ? "FAIL cgroupns: %s\n" : "PASS cgroupns\n", why);
	return 0;
}
