/*
 * Memory that keeps changing, for pre-dumps and incremental dumps. argv: OUT MIB [US].
 *
 * MIB MiB of anonymous memory, each page holding a seed (its number when written), its version
 * and a pattern made of both; seeds and versions are kept apart (in memory too). The task rewrites one page after another
 * (a new version each time, a page every US microseconds, 100 unless given) for as long as it runs. On SIGUSR1 it
 * reshapes its memory, as a pre-dump must notice: the first two 1 MiB regions trade places
 * (mremap through a third place: each page's content, unwritten, now at the other's address),
 * and the third is unmapped and mapped afresh with new versions. On SIGTERM it checks every page
 * against its version and prints PASS or FAIL (which page, what it found).
 *
 * On SIGUSR2 (what a lazy restore must follow) it forks a child that checks every page at once
 * and reports "PASS child" or FAIL, waits for it, then throws the fourth region's pages away
 * (madvise DONTNEED: they must read zero) and writes them again.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define REGION (256) /* pages in 1 MiB */

static volatile sig_atomic_t term, reshape, forkcheck;
static void on_term(int sig) { (void)sig; term = 1; }
static void on_usr1(int sig) { (void)sig; reshape = 1; }
static void on_usr2(int sig) { (void)sig; forkcheck = 1; }

static char *mem;
static uint64_t *versions, *seeds;
static size_t pages;

static void fill(size_t i)
{
	uint64_t *p = (uint64_t *)(mem + i * PAGE);
	seeds[i] = i;
	p[0] = i;
	p[1] = versions[i];
	for (size_t k = 2; k < PAGE / 8; k++)
		p[k] = (i * 0x9e3779b97f4a7c15ULL) ^ (versions[i] * 0xbf58476d1ce4e5b9ULL) ^ k;
}

static int check(size_t i)
{
	uint64_t *p = (uint64_t *)(mem + i * PAGE), seed = seeds[i];
	if (p[0] != seed || p[1] != versions[i])
		return 0;
	for (size_t k = 2; k < PAGE / 8; k++)
		if (p[k] != ((seed * 0x9e3779b97f4a7c15ULL) ^ (versions[i] * 0xbf58476d1ce4e5b9ULL) ^ k))
			return 0;
	return 1;
}

/* The first two regions trade places; the third is made anew. */
static void do_reshape(void)
{
	char *a = mem, *b = mem + REGION * PAGE, *c = mem + 2 * REGION * PAGE;
	char *tmp = mmap(NULL, REGION * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mremap(a, REGION * PAGE, REGION * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, tmp);
	mremap(b, REGION * PAGE, REGION * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, a);
	mremap(tmp, REGION * PAGE, REGION * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, b);
	/* Each page's content (seed and version) is now at the other's address. */
	for (size_t i = 0; i < REGION; i++) {
		uint64_t v = versions[i], sd = seeds[i];
		versions[i] = versions[REGION + i];
		seeds[i] = seeds[REGION + i];
		versions[REGION + i] = v;
		seeds[REGION + i] = sd;
	}
	munmap(c, REGION * PAGE);
	mmap(c, REGION * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	for (size_t i = 2 * REGION; i < 3 * REGION; i++) {
		versions[i] = 1000000 + i;
		fill(i);
	}
}

static int check_all(int out, const char *who)
{
	for (size_t i = 0; i < pages; i++) {
		if (!check(i)) {
			uint64_t *p = (uint64_t *)(mem + i * PAGE);
			dprintf(out, "FAIL %s: page %zu holds seed %llu version %llu, not %llu %llu\n",
				who, i, (unsigned long long)p[0], (unsigned long long)p[1],
				(unsigned long long)seeds[i], (unsigned long long)versions[i]);
			return 0;
		}
	}
	return 1;
}

/* A child checks everything; then the fourth region is thrown away and written again. */
static void do_forkcheck(int out)
{
	pid_t c = fork();
	if (c == 0)
		_exit(check_all(out, "child") ? (dprintf(out, "PASS child\n"), 0) : 1);
	waitpid(c, NULL, 0);
	if (pages < 4 * REGION)
		return;
	char *d = mem + 3 * REGION * PAGE;
	madvise(d, REGION * PAGE, MADV_DONTNEED);
	for (size_t i = 0; i < REGION; i++) {
		uint64_t *p = (uint64_t *)(d + i * PAGE);
		if (p[0] || p[1] || p[PAGE / 8 - 1]) {
			dprintf(out, "FAIL madvise: page %zu not zero after MADV_DONTNEED\n", 3 * REGION + i);
			return;
		}
	}
	for (size_t i = 3 * REGION; i < 4 * REGION; i++) {
		versions[i] = 2000000 + i;
		fill(i);
	}
	dprintf(out, "forked\n");
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	pages = (size_t)atoi(argv[2]) * 256;
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	versions = calloc(pages, sizeof(*versions));
	seeds = calloc(pages, sizeof(*seeds));
	for (size_t i = 0; i < pages; i++)
		fill(i);
	signal(SIGTERM, on_term);
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	dprintf(out, "ready pid=%d pages=%zu\n", getpid(), pages);
	struct timespec nap = {0, (argc > 3 ? atol(argv[3]) : 100) * 1000};
	size_t at = 0;
	unsigned long writes = 0;
	while (!term) {
		if (reshape) {
			reshape = 0;
			do_reshape();
			dprintf(out, "reshaped\n");
		}
		if (forkcheck) {
			forkcheck = 0;
			do_forkcheck(out);
		}
		versions[at]++;
		fill(at);
		writes++;
		at = (at + 1) % pages;
		nanosleep(&nap, NULL);
	}
	if (!check_all(out, "dirty"))
		return 1;
	dprintf(out, "PASS dirty (%lu writes)\n", writes);
	return 0;
}
