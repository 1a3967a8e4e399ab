/*
 * A working directory in /proc/N of a child that is gone (the directory stays, unhashed).
 * argv: OUT. On SIGTERM getcwd must still fail with ENOENT and /proc/self/cwd name the same
 * "/proc/N (deleted)".
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char msg[256], path[64], before[PATH_MAX] = "", after[PATH_MAX] = "", buf[PATH_MAX];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	pid_t c = fork();
	if (!c) {
		pause();
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/%d", c);
	if (chdir(path))
		return 2;
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	readlink("/proc/self/cwd", before, sizeof(before) - 1);
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d gone=%d\n", getpid(), c);
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	const char *why = NULL;
	readlink("/proc/self/cwd", after, sizeof(after) - 1);
	if (getcwd(buf, sizeof(buf)) || errno != ENOENT)
		why = "getcwd does not say ENOENT";
	else if (strcmp(before, after))
		why = "another working directory";
	snprintf(msg, sizeof(msg), why ? "FAIL deadcwd: %s (%s, was %s)\n" : "PASS deadcwd\n", why,
		 after, before);
	write(out, msg, strlen(msg));
	return 0;
}
