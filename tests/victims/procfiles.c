/*
 * /proc files of the tree's own tasks held open: its child's comm and its own status (at an
 * offset), and the status and /proc directory of a child that is gone (reaped). argv: OUT.
 * On SIGTERM, reading through them must give the restored tasks' state, and the gone child's
 * status still reads ESRCH; both keep the names they had.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
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
	pid_t gone = fork();
	if (!gone)
		for (;;)
			pause();
	char gone_path[64], link[64], name[128] = {0};
	snprintf(gone_path, sizeof(gone_path), "/proc/%d/status", gone);
	int dead = open(gone_path, O_RDONLY);
	gone_path[strlen(gone_path) - 7] = 0;
	int deaddir = open(gone_path, O_RDONLY | O_DIRECTORY);
	kill(gone, SIGKILL);
	waitpid(gone, NULL, 0);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", dead);
	char before[128] = {0}, dirlink[64], dirbefore[128] = {0}, dirname[128] = {0};
	readlink(link, before, sizeof(before) - 1);
	snprintf(dirlink, sizeof(dirlink), "/proc/self/fd/%d", deaddir);
	readlink(dirlink, dirbefore, sizeof(dirbefore) - 1);
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
	else if (dead < 0 || read(dead, st, 6) != -1 || errno != ESRCH)
		why = "the status of the child that is gone no longer reads ESRCH";
	else if (readlink(link, name, sizeof(name) - 1) < 0 || strcmp(name, before))
		why = "the status of the child that is gone has another name";
	else if (readlink(dirlink, dirname, sizeof(dirname) - 1) < 0 || strcmp(dirname, dirbefore))
		why = "the /proc directory of the child that is gone has another name";
	kill(child, SIGKILL);
	snprintf(buf, sizeof(buf), why ? "FAIL procfiles: %s\n" : "PASS procfiles\n", why);
	write(out, buf, strlen(buf));
	return why != NULL;
}
