/*
 * Descriptors of the task's own namespaces (/proc/self/ns/KIND). argv: OUT. On SIGTERM each
 * must still name the namespace the task is in (the same inode) and setns() must take it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static const char *kinds[] = {"net", "uts", "ipc", "mnt", "pid", "cgroup"};
#define N (sizeof(kinds) / sizeof(kinds[0]))

int main(int argc, char **argv)
{
	char path[64], msg[256];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int fds[N];
	for (unsigned i = 0; i < N; i++) {
		snprintf(path, sizeof(path), "/proc/self/ns/%s", kinds[i]);
		fds[i] = open(path, O_RDONLY | (i % 2 ? O_CLOEXEC : 0));
		if (fds[i] < 0)
			return 2;
	}
	int again = dup(fds[0]);
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	char why[128] = "";
	for (unsigned i = 0; i < N && !why[0]; i++) {
		struct stat a, b;
		snprintf(path, sizeof(path), "/proc/self/ns/%s", kinds[i]);
		int cloexec = fcntl(fds[i], F_GETFD) & FD_CLOEXEC;
		if (fstat(fds[i], &a) || stat(path, &b) || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
			snprintf(why, sizeof(why), "%s: another namespace", kinds[i]);
		else if (!cloexec != !(i % 2))
			snprintf(why, sizeof(why), "%s: close-on-exec changed", kinds[i]);
		else if (strcmp(kinds[i], "pid") && strcmp(kinds[i], "mnt") && setns(fds[i], 0))
			snprintf(why, sizeof(why), "%s: setns failed", kinds[i]);
	}
	struct stat a, b;
	if (!why[0] && (fstat(again, &a) || fstat(fds[0], &b) || a.st_ino != b.st_ino))
		snprintf(why, sizeof(why), "a dup names another namespace");
	snprintf(msg, sizeof(msg), why[0] ? "FAIL nsfds: %s\n" : "PASS nsfds\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
