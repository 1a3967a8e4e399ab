/*
 * File leases: a read lease (DIR/r, read-only), a write lease (DIR/w), and a write lease being
 * broken to a read one (DIR/b: an open for reading came). argv: OUT DIR. On SIGTERM each must
 * be as it was: its type, the breaking one still breaking, each held by this task (fdinfo).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

/* The lease line of our fdinfo of `fd`, from its mode on ("ACTIVE    READ 1234"). */
static void lease(int fd, char *buf, size_t size)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	buf[0] = 0;
	while (f && fgets(line, sizeof(line), f)) {
		char *l = strstr(line, "LEASE");
		if (!l)
			continue;
		char mode[16], type[16];
		int pid;
		if (sscanf(l, "LEASE %15s %15s %d", mode, type, &pid) == 3)
			snprintf(buf, size, "%s %s %d", mode, type, pid);
	}
	if (f)
		fclose(f);
}

int main(int argc, char **argv)
{
	char msg[1024], p[3][512], before[3][128], after[3][128];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	const char *names[] = {"r", "w", "b"};
	int fds[3];
	signal(SIGIO, SIG_IGN);
	for (int i = 0; i < 3; i++) {
		snprintf(p[i], sizeof(p[i]), "%s/%s", argv[2], names[i]);
		close(open(p[i], O_CREAT | O_WRONLY, 0644));
		fds[i] = open(p[i], i ? O_RDWR : O_RDONLY);
		if (fcntl(fds[i], F_SETLEASE, i ? F_WRLCK : F_RDLCK))
			return 2;
	}
	if (open(p[2], O_RDONLY | O_NONBLOCK) >= 0)
		return 3; /* the open breaks the lease, and fails while it does */
	for (int i = 0; i < 3; i++)
		lease(fds[i], before[i], sizeof(before[i]));
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	const char *why = NULL;
	for (int i = 0; i < 3 && !why; i++) {
		lease(fds[i], after[i], sizeof(after[i]));
		if (strcmp(before[i], after[i]))
			why = names[i];
	}
	if (!why && (fcntl(fds[0], F_GETLEASE) != F_RDLCK || fcntl(fds[1], F_GETLEASE) != F_WRLCK ||
		     fcntl(fds[2], F_GETLEASE) != F_RDLCK))
		why = "F_GETLEASE";
	if (why) {
		snprintf(msg, sizeof(msg), "FAIL leases: %s [%s | %s | %s] [%s | %s | %s]\n", why,
			 before[0], before[1], before[2], after[0], after[1], after[2]);
		write(out, msg, strlen(msg));
	} else
		write(out, "PASS leases\n", 12);
	return 0;
}
