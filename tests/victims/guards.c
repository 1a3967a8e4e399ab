/*
 * Guard regions (madvise MADV_GUARD_INSTALL): 8 private anonymous pages with data in each,
 * pages 1 and 5-6 guarded; 4 pages of a private file mapping, page 2 guarded. argv: OUT DIR.
 * On SIGTERM the guarded pages must fault on access and the others hold their data, in the
 * task and in a child it forks. Prints PASS or FAIL (or SKIP without MADV_GUARD_INSTALL).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#define PG 4096

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }
static sigjmp_buf jb;
static void on_segv(int sig) { (void)sig; siglongjmp(jb, 1); }

/* Whether reading `p` faults. */
static int faults(volatile char *p)
{
	if (sigsetjmp(jb, 1))
		return 1;
	(void)*p;
	return 0;
}

static const char *check(char *a, char *f)
{
	static const int ga[8] = {0, 1, 0, 0, 0, 1, 1, 0}, gf[4] = {0, 0, 1, 0};
	for (int i = 0; i < 8; i++) {
		if (faults(a + i * PG) != ga[i])
			return ga[i] ? "an anonymous guard page reads" : "an anonymous page faults";
		if (!ga[i] && a[i * PG] != 'a' + i)
			return "an anonymous page lost its data";
	}
	for (int i = 0; i < 4; i++) {
		if (faults(f + i * PG) != gf[i])
			return gf[i] ? "a file guard page reads" : "a file page faults";
		if (!gf[i] && f[i * PG] != 'A' + i)
			return "a file page lost its data";
	}
	return NULL;
}

int main(int argc, char **argv)
{
	(void)argc;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char path[512], msg[256];
	snprintf(path, sizeof(path), "%s/guards.data", argv[2]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	for (int i = 0; i < 4; i++) {
		char page[PG];
		memset(page, 'A' + i, PG);
		write(fd, page, PG);
	}
	char *a = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *f = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	for (int i = 0; i < 8; i++)
		a[i * PG] = 'a' + i;
	if (madvise(a + PG, PG, MADV_GUARD_INSTALL)) {
		dprintf(out, "ready pid=%d\nSKIP guards\n", getpid());
		return 0;
	}
	madvise(a + 5 * PG, 2 * PG, MADV_GUARD_INSTALL);
	madvise(f + 2 * PG, PG, MADV_GUARD_INSTALL);
	signal(SIGSEGV, on_segv);
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	const char *why = check(a, f);
	if (!why) {
		pid_t c = fork();
		if (c == 0)
			_exit(check(a, f) ? 1 : 0);
		int st;
		waitpid(c, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			why = "the child's guards or pages";
	}
	dprintf(out, why ? "FAIL guards: %s\n" : "PASS guards\n", why);
	return 0;
}
