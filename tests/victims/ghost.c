/*
 * Victim: an open file that was deleted (a ghost), holding "ghost data 123" and then argv[3]
 * bytes more, read position at 6. On SIGTERM it checks that it can still read "data 123" from
 * there, that the file is still deleted, and prints PASS or FAIL.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char path[512], buf[64] = {0};
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(path, sizeof(path), "%s/ghost.txt", argv[2]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
	write(fd, "ghost data 123", 14);
	long extra = argc > 3 ? atol(argv[3]) : 0;
	char zero[4096] = {0};
	for (long i = 0; i < extra; i += sizeof(zero))
		write(fd, zero, extra - i < (long)sizeof(zero) ? extra - i : (long)sizeof(zero));
	lseek(fd, 6, SEEK_SET);
	unlink(path);
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d fd=%d\n", getpid(), fd);
	write(out, buf, strlen(buf));
	while (!term)
		pause();
	struct stat st;
	memset(buf, 0, sizeof(buf));
	int ok = read(fd, buf, 8) == 8 && !memcmp(buf, "data 123", 8) && fstat(fd, &st) == 0 && st.st_nlink == 0 &&
		 (st.st_mode & 0777) == 0640 && st.st_size == 14 + extra;
	write(out, ok ? "PASS ghost\n" : "FAIL ghost\n", 11);
	return 0;
}
