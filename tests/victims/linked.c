/*
 * A file whose name was deleted while it lives on under another name (a hard link): after a
 * restore the descriptor must reach the same inode as the other name, not a copy. A second
 * one's directory was removed too: its name comes back all the same, the directory stays gone.
 * argv: OUT DIR. On SIGTERM it writes through the descriptor, reads through the other name
 * and checks the inode, offset and the name /proc shows, then prints PASS or FAIL.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char buf[256], name[200], other[200], shown[256], sub[200], inner[220], other2[200];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(name, sizeof(name), "%s/linked.txt", argv[2]);
	snprintf(other, sizeof(other), "%s/other.txt", argv[2]);
	int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0640);
	write(fd, "hello", 5);
	link(name, other);
	unlink(name);
	snprintf(sub, sizeof(sub), "%s/sub", argv[2]);
	snprintf(inner, sizeof(inner), "%s/inner.txt", sub);
	snprintf(other2, sizeof(other2), "%s/other2.txt", argv[2]);
	mkdir(sub, 0755);
	int fd2 = open(inner, O_RDWR | O_CREAT | O_TRUNC, 0640);
	link(inner, other2);
	unlink(inner);
	rmdir(sub);
	struct stat before;
	fstat(fd, &before);
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d ino=%lu\n", getpid(), (unsigned long)before.st_ino);
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	struct stat now, link_st;
	fstat(fd, &now);
	stat(other, &link_st);
	const char *why = NULL;
	char fdpath[64];
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(fdpath, shown, sizeof(shown) - 1);
	shown[n > 0 ? n : 0] = 0;
	char want[256];
	snprintf(want, sizeof(want), "%s (deleted)", name);
	if (now.st_ino != link_st.st_ino || now.st_dev != link_st.st_dev)
		why = "another inode than the other name";
	else if (lseek(fd, 0, SEEK_CUR) != 5)
		why = "offset";
	else if (strcmp(shown, want))
		why = "the name /proc shows";
	else {
		struct stat st2, o2;
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd2);
		n = readlink(fdpath, shown, sizeof(shown) - 1);
		shown[n > 0 ? n : 0] = 0;
		snprintf(want, sizeof(want), "%s (deleted)", inner);
		fstat(fd2, &st2);
		stat(other2, &o2);
		if (st2.st_ino != o2.st_ino || st2.st_dev != o2.st_dev)
			why = "in a removed directory: another inode than the other name";
		else if (strcmp(shown, want))
			why = "in a removed directory: the name /proc shows";
		else if (access(sub, F_OK) == 0)
			why = "the removed directory is back";
	}
	if (!why) {
		write(fd, " world", 6);
		char got[16] = {0};
		int o = open(other, O_RDONLY);
		read(o, got, sizeof(got) - 1);
		if (strcmp(got, "hello world"))
			why = "a write through the descriptor is not seen through the other name";
	}
	if (why)
		snprintf(buf, sizeof(buf), "FAIL linked: %s\n", why);
	else
		snprintf(buf, sizeof(buf), "PASS linked\n");
	write(out, buf, strlen(buf));
	return why != NULL;
}
