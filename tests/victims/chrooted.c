/*
 * A child in a root of its own (DIR/root, holding a file "inside"), its working directory left
 * outside that root (DIR/out). argv: OUT DIR. On SIGTERM the child must still open /inside and
 * see its working directory as the same directory (same inode); the parent reports.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char msg[256], root[512], outside[512], file[600];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(root, sizeof(root), "%s/root", argv[2]);
	snprintf(outside, sizeof(outside), "%s/out", argv[2]);
	snprintf(file, sizeof(file), "%s/inside", root);
	mkdir(root, 0755);
	mkdir(outside, 0755);
	close(open(file, O_CREAT | O_WRONLY, 0644));
	int res[2];
	pipe(res);
	signal(SIGTERM, on_term);
	pid_t c = fork();
	if (!c) {
		struct stat before, now;
		if (chdir(outside) || stat(".", &before) || chroot(root))
			return 2;
		while (!term)
			pause();
		const char *why = NULL;
		int fd = open("/inside", O_RDONLY);
		if (fd < 0)
			why = "/inside is not there";
		else if (stat(".", &now) || now.st_ino != before.st_ino || now.st_dev != before.st_dev)
			why = "the working directory changed";
		else if (access("/out", F_OK) == 0)
			why = "the root is not its own";
		write(res[1], why ? why : "ok", strlen(why ? why : "ok"));
		return 0;
	}
	snprintf(msg, sizeof(msg), "ready pid=%d child=%d\n", getpid(), c);
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	kill(c, SIGTERM);
	char got[128] = {0};
	read(res[0], got, sizeof(got) - 1);
	waitpid(c, NULL, 0);
	snprintf(msg, sizeof(msg), strcmp(got, "ok") ? "FAIL chrooted: %s\n" : "PASS chrooted\n", got);
	write(out, msg, strlen(msg));
	return 0;
}
