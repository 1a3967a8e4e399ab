/*
 * Shared anonymous memory seen through several mappings of one object: M (16 pages) and M2
 * (pages 3-5 of M, mapped again through /proc/self/map_files), and P whose first half was unmapped
 * (only pages 8-15 are left, at offset 8), shared with a child. argv: OUT. On SIGTERM the
 * contents must be there, and a write through one mapping must show through the others and in
 * the child.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096
static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char msg[256], path[128];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char *m = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char *p = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || p == MAP_FAILED)
		return 2;
	for (int i = 0; i < 16; i++) {
		snprintf(m + i * PG, 32, "m page %d", i);
		snprintf(p + i * PG, 32, "p page %d", i);
	}
	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (unsigned long)m,
		 (unsigned long)(m + 16 * PG));
	int fd = open(path, O_RDWR);
	char *m2 = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 3 * PG);
	close(fd);
	munmap(p, 8 * PG);
	char *q = p + 8 * PG;
	if (m2 == MAP_FAILED)
		return 2;
	int res[2];
	pipe(res);
	signal(SIGTERM, on_term);
	pid_t c = fork();
	if (!c) {
		while (!term)
			pause();
		/* The parent wrote through M2 and Q before telling us. */
		const char *ok = !strcmp(m + 4 * PG, "via m2") && !strcmp(q + 2 * PG, "via q") ? "y" : "n";
		write(res[1], ok, 1);
		return 0;
	}
	snprintf(msg, sizeof(msg), "ready pid=%d child=%d\n", getpid(), c);
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	const char *why = NULL;
	char want[32];
	for (int i = 0; i < 16 && !why; i++) {
		snprintf(want, sizeof(want), "m page %d", i);
		if (strcmp(m + i * PG, want))
			why = "M's contents";
	}
	for (int i = 8; i < 16 && !why; i++) {
		snprintf(want, sizeof(want), "p page %d", i);
		if (strcmp(q + (i - 8) * PG, want))
			why = "P's contents";
	}
	if (!why && strcmp(m2 + PG, "m page 4"))
		why = "M2 is not M's pages 3-5";
	if (!why) {
		strcpy(m2 + PG, "via m2");
		strcpy(q + 2 * PG, "via q");
		if (strcmp(m + 4 * PG, "via m2"))
			why = "a write through M2 does not show in M";
	}
	kill(c, SIGTERM);
	char got = 0;
	read(res[0], &got, 1);
	waitpid(c, NULL, 0);
	if (!why && got != 'y')
		why = "the child does not see the writes";
	snprintf(msg, sizeof(msg), why ? "FAIL shmparts: %s\n" : "PASS shmparts\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
