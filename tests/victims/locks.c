/*
 * Victim: file locks of each kind (an flock, a POSIX record lock on bytes 10-29, an OFD read
 * lock). On SIGTERM a child (not sharing the locks) checks each is still held and the parent
 * prints PASS or FAIL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char a[512], b[512], c[512], buf[128];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(a, sizeof(a), "%s/flock", argv[2]);
	snprintf(b, sizeof(b), "%s/posix", argv[2]);
	snprintf(c, sizeof(c), "%s/ofd", argv[2]);
	int fa = open(a, O_RDWR | O_CREAT, 0600), fb = open(b, O_RDWR | O_CREAT, 0600), fc = open(c, O_RDWR | O_CREAT, 0600);
	flock(fa, LOCK_EX);
	struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 20};
	fcntl(fb, F_SETLK, &l);
	struct flock o = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
	fcntl(fc, F_OFD_SETLK, &o);
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	write(out, buf, strlen(buf));
	while (!term)
		pause();
	pid_t child = fork();
	if (child == 0) {
		int ga = open(a, O_RDWR), gb = open(b, O_RDWR), gc = open(c, O_RDWR);
		int held_a = flock(ga, LOCK_EX | LOCK_NB) != 0;
		struct flock t = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 15, .l_len = 1};
		fcntl(gb, F_GETLK, &t);
		int held_b = t.l_type == F_WRLCK && t.l_start == 10 && t.l_len == 20;
		struct flock u = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
		int held_c = fcntl(gc, F_OFD_SETLK, &u) != 0;
		_exit(held_a && held_b && held_c ? 0 : 1);
	}
	int st;
	waitpid(child, &st, 0);
	write(out, WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "PASS locks\n" : "FAIL locks\n", 11);
	return 0;
}
