/*
 * Victim: a task in vfork(): its child sleeps (pause) before exec or exit, so the parent
 * waits in the kernel, where no signal or ptrace stop reaches it.
 *
 * The top process forks P, which vforks C. Once P waits (state D) the top prints
 * "ready pid=P child=C". When C dies (SIGTERM from outside), P goes on: it reaps C and appends
 * "PASS vfork" if C died of SIGTERM, then exits.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char state_of(pid_t pid)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] ? p[2] : '?';
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char buf[128];
	pid_t p = fork();
	if (p == 0) {
		pid_t c = vfork();
		if (c == 0) {
			pause();
			_exit(0);
		}
		int status;
		waitpid(c, &status, 0);
		if (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM)
			write(out, "PASS vfork\n", 11);
		else
			write(out, "FAIL vfork child status\n", 24);
		_exit(0);
	}
	struct timespec tick = {.tv_nsec = 2 * 1000 * 1000};
	while (state_of(p) != 'D')
		nanosleep(&tick, NULL);
	/* C is P's only child. */
	snprintf(buf, sizeof(buf), "/proc/%d/task/%d/children", p, p);
	int fd = open(buf, O_RDONLY);
	char kids[64] = "";
	ssize_t n = read(fd, kids, sizeof(kids) - 1);
	kids[n > 0 ? n : 0] = 0;
	snprintf(buf, sizeof(buf), "ready pid=%d child=%d\n", p, atoi(kids));
	write(out, buf, strlen(buf));
	waitpid(p, NULL, 0);
	return 0;
}
