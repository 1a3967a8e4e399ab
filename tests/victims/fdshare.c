/*
 * One descriptor table shared along parent links: P clones A with CLONE_FILES, A clones B with
 * CLONE_FILES (B shares with P, its grandparent), P clones C with CLONE_FILES (C shares with A,
 * its sibling), A forks D (a copy). argv: OUT. On SIGTERM, P opens fd 100 and asks each child
 * (SIGUSR1) whether it sees it: B and C must, D must not.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int reply[2];
static volatile sig_atomic_t asked, term;
static void on_usr1(int sig) { (void)sig; asked = 1; }
static void on_term(int sig) { (void)sig; term = 1; }

static int answer(void *arg)
{
	char who = *(char *)arg;
	while (!asked)
		pause();
	char msg[2] = {who, fcntl(100, F_GETFD) >= 0 ? 'y' : 'n'};
	write(reply[1], msg, 2);
	for (;;)
		pause();
	return 0;
}

static pid_t spawn(char *who, int flags)
{
	char *stack = malloc(65536);
	return clone(answer, stack + 65536, flags | SIGCHLD, who);
}

static pid_t b, d;
static char nb = 'B', nd = 'D';

static int a_main(void *arg)
{
	(void)arg;
	b = spawn(&nb, CLONE_FILES);
	d = spawn(&nd, 0);
	char buf[64];
	snprintf(buf, sizeof(buf), "%d %d\n", b, d);
	write(reply[1], buf, strlen(buf));
	for (;;)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	char buf[256];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	signal(SIGUSR1, on_usr1);
	pipe(reply);
	char *stack = malloc(65536);
	pid_t a = clone(a_main, stack + 65536, CLONE_FILES | SIGCHLD, NULL);
	static char nc = 'C';
	pid_t c = spawn(&nc, CLONE_FILES);
	int pb = 0, pd = 0;
	char line[64] = {0};
	for (int i = 0; i < (int)sizeof(line) - 1 && read(reply[0], &line[i], 1) == 1 && line[i] != '\n'; i++)
		;
	sscanf(line, "%d %d", &pb, &pd);
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d a=%d b=%d c=%d d=%d\n", getpid(), a, pb, c, pd);
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	int fd = open("/dev/null", O_RDONLY);
	dup2(fd, 100);
	kill(pb, SIGUSR1), kill(c, SIGUSR1), kill(pd, SIGUSR1);
	char got[7] = {0};
	for (int n = 0; n < 6;) {
		int r = read(reply[0], got + n, 6 - n);
		if (r <= 0)
			break;
		n += r;
	}
	int ok = strstr(got, "By") && strstr(got, "Cy") && strstr(got, "Dn");
	snprintf(buf, sizeof(buf), ok ? "PASS fdshare\n" : "FAIL fdshare %s\n", got);
	write(out, buf, strlen(buf));
	kill(a, SIGKILL), kill(pb, SIGKILL), kill(c, SIGKILL), kill(pd, SIGKILL);
	return !ok;
}
