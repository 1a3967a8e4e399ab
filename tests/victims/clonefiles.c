/*
 * Victim: a child made with clone(CLONE_FILES | CLONE_FS): parent and child share one
 * descriptor table and one cwd/umask. On SIGUSR1 the child opens a file and changes directory;
 * on SIGTERM the parent checks that it sees both, and prints PASS or FAIL. argv: OUT DIR [MIB]:
 * with MIB, the parent first fills that much memory with a pattern (a dump takes a while over
 * its pages), which it checks too.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t flag;
static void on_sig(int sig) { (void)sig; flag = 1; }
static char dir[512];

int main(int argc, char **argv)
{
	char buf[600];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(dir, sizeof(dir), "%s", argv[2]);
	size_t len = argc > 3 ? (size_t)atol(argv[3]) << 20 : 0;
	unsigned char *mem = len ? malloc(len) : NULL;
	for (size_t i = 0; i < len; i++)
		mem[i] = (unsigned char)(i * 7 + (i >> 12));
	signal(SIGUSR1, on_sig);
	signal(SIGTERM, on_sig);
	long child = syscall(SYS_clone, CLONE_FILES | CLONE_FS | SIGCHLD, 0, 0, 0, 0);
	if (child == 0) {
		while (!flag)
			pause();
		snprintf(buf, sizeof(buf), "%s/opened-by-child", dir);
		int fd = open(buf, O_CREAT | O_RDWR, 0600);
		dup2(fd, 77);
		chdir(dir);
		for (;;)
			pause();
	}
	snprintf(buf, sizeof(buf), "ready pid=%d child=%ld\n", getpid(), child);
	write(out, buf, strlen(buf));
	while (!flag)
		pause();
	kill(child, SIGUSR1);
	usleep(200000);
	char cwd[512], link[512] = {0};
	getcwd(cwd, sizeof(cwd));
	readlink("/proc/self/fd/77", link, sizeof(link) - 1);
	int ok = !strcmp(cwd, dir) && strstr(link, "opened-by-child") != NULL;
	for (size_t i = 0; i < len && ok; i++)
		ok = mem[i] == (unsigned char)(i * 7 + (i >> 12));
	write(out, ok ? "PASS clonefiles\n" : "FAIL clonefiles\n", 16);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return 0;
}
