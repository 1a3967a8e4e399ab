/*
 * Victim: a named pipe between a parent (writer) and its child (reader), with "queued fifo"
 * written and not yet read. On SIGTERM the parent writes "+more"; the child, woken by SIGUSR1,
 * must read "queued fifo+more" and prints PASS or FAIL.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t flag;
static void on_sig(int sig) { (void)sig; flag = 1; }

int main(int argc, char **argv)
{
	char path[512], buf[64] = {0};
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(path, sizeof(path), "%s/fifo", argv[2]);
	mkfifo(path, 0600);
	pid_t child = fork();
	if (child == 0) {
		signal(SIGUSR1, on_sig);
		int r = open(path, O_RDONLY);
		while (!flag)
			pause();
		int n = 0, got;
		while (n < 16 && (got = read(r, buf + n, 16 - n)) > 0)
			n += got;
		int ok = n == 16 && !memcmp(buf, "queued fifo+more", 16);
		write(out, ok ? "PASS fifo\n" : "FAIL fifo\n", 10);
		_exit(0);
	}
	signal(SIGTERM, on_sig);
	int w = open(path, O_WRONLY);
	write(w, "queued fifo", 11);
	snprintf(buf, sizeof(buf), "ready pid=%d child=%d\n", getpid(), child);
	write(out, buf, strlen(buf));
	while (!flag)
		pause();
	write(w, "+more", 5);
	kill(child, SIGUSR1);
	waitpid(child, NULL, 0);
	return 0;
}
