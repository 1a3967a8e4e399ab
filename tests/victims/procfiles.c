/*
 * /proc files of the tree's own tasks held open: its child's comm and its own status (at an
 * offset). argv: OUT. On SIGTERM, reading through them must give the restored tasks' state
 * (a /proc file of a task that is gone reads ESRCH).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char buf[256], path[64];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	pid_t child = fork();
	if (!child) {
		prctl(PR_SET_NAME, "procfiles-kid");
		for (;;)
			pause();
	}
	usleep(100000);
	snprintf(path, sizeof(path), "/proc/%d/comm", child);
	int comm = open(path, O_RDONLY);
	snprintf(path, sizeof(path), "/proc/%d/status", getpid());
	int status = open(path, O_RDONLY);
	lseek(status, 5, SEEK_SET);
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d child=%d\n", getpid(), child);
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	char got[64] = {0}, st[16] = {0};
	const char *why = NULL;
	if (pread(comm, got, sizeof(got) - 1, 0) <= 0 || strcmp(got, "procfiles-kid\n"))
		why = "the child's comm";
	else if (lseek(status, 0, SEEK_CUR) != 5 || read(status, st, 6) != 6 || strncmp(st, "\tprocf", 6))
		why = "its own status, at its offset";
	kill(child, SIGKILL);
	snprintf(buf, sizeof(buf), why ? "FAIL procfiles: %s\n" : "PASS procfiles\n", why);
	write(out, buf, strlen(buf));
	return why != NULL;
}
