/*
 * pidfds: of itself, of a child (non-blocking), and of a child that is gone (reaped). argv: OUT.
 * On SIGTERM: the child's pidfd still refers to the child (signalled through it, it dies and the
 * pidfd polls readable), the dead one polls readable, the own one refers to itself, flags kept.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }
static int pidfd_open(pid_t pid, unsigned flags) { return syscall(SYS_pidfd_open, pid, flags); }

static int readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static int pid_of(int fd)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	ssize_t n = read(f, buf, sizeof(buf) - 1);
	close(f);
	buf[n > 0 ? n : 0] = 0;
	char *p = strstr(buf, "\nPid:");
	return p ? atoi(p + 5) : -2;
}

int main(int argc, char **argv)
{
	char buf[256];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	pid_t child = fork();
	if (!child) {
		for (;;)
			pause();
	}
	pid_t gone = fork();
	if (!gone)
		_exit(0);
	int dead = pidfd_open(gone, 0);
	waitpid(gone, NULL, 0);
	int self = pidfd_open(getpid(), 0);
	int kid = pidfd_open(child, O_NONBLOCK) /* PIDFD_NONBLOCK */;
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d child=%d\n", getpid(), child);
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	const char *why = NULL;
	if (pid_of(self) != getpid())
		why = "own pidfd";
	else if (pid_of(kid) != child || !(fcntl(kid, F_GETFL) & O_NONBLOCK))
		why = "child pidfd";
	else if (!readable(dead, 0) || pid_of(dead) != -1)
		why = "dead pidfd";
	else if (readable(kid, 0))
		why = "child pidfd readable while the child lives";
	else if (syscall(SYS_pidfd_send_signal, kid, SIGKILL, NULL, 0) || !readable(kid, 2000))
		why = "signal through the child pidfd";
	snprintf(buf, sizeof(buf), why ? "FAIL pidfds: %s\n" : "PASS pidfds\n", why);
	write(out, buf, strlen(buf));
	return why != NULL;
}
