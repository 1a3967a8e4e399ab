/*
 * Deleted files of every other kind, held open: a FIFO with data in it, a directory as the
 * working directory and as a descriptor (its parent deleted too), a symlink (O_PATH), a
 * character device. argv: OUT DIR. On SIGTERM each is checked from the inside.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char buf[512], p[300];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(p, sizeof(p), "%s/fifo", argv[2]);
	mkfifo(p, 0640);
	int fr = open(p, O_RDONLY | O_NONBLOCK), fw = open(p, O_WRONLY);
	write(fw, "queued", 6);
	unlink(p);
	snprintf(p, sizeof(p), "%s/top", argv[2]);
	mkdir(p, 0750);
	snprintf(p, sizeof(p), "%s/top/sub", argv[2]);
	mkdir(p, 0710);
	int dfd = open(p, O_RDONLY | O_DIRECTORY);
	chdir(p);
	rmdir(p);
	snprintf(p, sizeof(p), "%s/top", argv[2]);
	rmdir(p);
	snprintf(p, sizeof(p), "%s/link", argv[2]);
	symlink("/no/such/target", p);
	int lfd = open(p, O_PATH | O_NOFOLLOW);
	unlink(p);
	snprintf(p, sizeof(p), "%s/null", argv[2]);
	mknod(p, S_IFCHR | 0600, makedev(1, 3));
	int nfd = open(p, O_WRONLY);
	unlink(p);
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	const char *why = NULL;
	struct stat st;
	char got[16] = {0}, tgt[64] = {0};
	if (read(fr, got, sizeof(got)) != 6 || strcmp(got, "queued"))
		why = "fifo data";
	else if (fstat(fw, &st) || !S_ISFIFO(st.st_mode) || st.st_nlink || (st.st_mode & 07777) != 0640)
		why = "fifo inode";
	else if (stat(".", &st) || !S_ISDIR(st.st_mode) || st.st_nlink || (st.st_mode & 07777) != 0710)
		why = "deleted working directory";
	else if (fstat(dfd, &st) || !S_ISDIR(st.st_mode) || st.st_nlink)
		why = "deleted directory descriptor";
	else if (readlinkat(lfd, "", tgt, sizeof(tgt)) != 15 || strcmp(tgt, "/no/such/target"))
		why = "deleted symlink";
	else if (fstat(nfd, &st) || st.st_rdev != makedev(1, 3) || write(nfd, "x", 1) != 1)
		why = "deleted device";
	snprintf(buf, sizeof(buf), why ? "FAIL ghostkinds: %s\n" : "PASS ghostkinds\n", why);
	write(out, buf, strlen(buf));
	return why != NULL;
}
