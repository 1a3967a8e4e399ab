/*
 * Victim: reads lines from its terminal (stdin) and appends "got LINE" to argv[1]; exits 3 at
 * end of input (Ctrl-D). Prints "ready pid=P" first. A job that may not read its terminal is
 * stopped by SIGTTIN, and reports nothing.
 *
 * With argv[2] "job" the reader is a job of this session instead of its leader: a child in its
 * own process group, made the terminal's foreground group (as a shell does); P is that child,
 * and this process waits for it and exits with its status.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char buf[256];
	if (argc > 2 && strcmp(argv[2], "job") == 0) {
		pid_t child = fork();
		if (child > 0) {
			int status;
			while (waitpid(child, &status, 0) < 0)
				;
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		setpgid(0, 0);
		signal(SIGTTOU, SIG_IGN);
		if (tcsetpgrp(0, getpid()) < 0)
			return 1;
		signal(SIGTTOU, SIG_DFL);
	}
	snprintf(buf, sizeof(buf), "ready pid=%d sid=%d\n", getpid(), getsid(0));
	write(out, buf, strlen(buf));
	for (;;) {
		char line[200];
		ssize_t n = read(0, line, sizeof(line) - 1);
		if (n <= 0)
			return 3;
		line[n] = 0;
		snprintf(buf, sizeof(buf), "got %s", line);
		write(out, buf, strlen(buf));
	}
}
