/*
 * Victim for the restorer's fills: large private anonymous ranges, which it copies in with a
 * userfaultfd, beside memory it reads in instead (a private file mapping's written pages, shared
 * anonymous memory, a locked range, small ranges), in shapes whose mappings must stay as they
 * were: a mapping with holes (pages never touched), one split three ways by mprotect. One more
 * is written, then made inaccessible (PROT_NONE): a dump reads it past its protection.
 *
 * On SIGTERM it checks its mappings as /proc/self/maps lists them (range, permissions, offset,
 * path), every page's contents (the inaccessible mapping made readable for that) and which pages
 * are resident (mincore: a hole must stay one), then reports PASS, or FAIL with what differs.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL
#define MIB (1UL << 20)

struct region {
	const char *name;
	unsigned char *at;
	size_t len;
	/* Pages written: every one, or only those of even 512 KiB chunks (holes). */
	int holes;
	/* Made PROT_NONE once written. */
	int hidden;
};

static struct region regions[10];
static int nregions;
static int out;
static char maps_before[16384];

static unsigned char pattern(int r, size_t page, size_t i)
{
	return (unsigned char)(r * 31 + page * 7 + i);
}

static int written(const struct region *g, size_t page)
{
	return !g->holes || (page * PAGE / (512 * 1024)) % 2 == 0;
}

static void fill(int r)
{
	struct region *g = &regions[r];
	for (size_t p = 0; p < g->len / PAGE; p++) {
		if (!written(g, p))
			continue;
		for (size_t i = 0; i < PAGE; i += 64)
			g->at[p * PAGE + i] = pattern(r, p, i);
	}
}

static void add(const char *name, unsigned char *at, size_t len, int holes)
{
	if (at == MAP_FAILED) {
		dprintf(out, "FAIL cannot map %s\n", name);
		exit(1);
	}
	regions[nregions] = (struct region){ name, at, len, holes, 0 };
	fill(nregions++);
}

/* The maps lines of our regions, each as range, permissions, offset and path. */
static void our_maps(char *buf, size_t size)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	size_t used = 0;
	buf[0] = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, off;
		char perms[8], dev[16], path[256] = "";
		unsigned long ino;
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %255[^\n]", &lo, &hi, perms, &off, dev, &ino,
			   path) < 6)
			continue;
		for (int r = 0; r < nregions; r++) {
			unsigned long a = (unsigned long)regions[r].at, b = a + regions[r].len;
			if (lo < b && hi > a) {
				used += snprintf(buf + used, size - used, "%lx-%lx %s %lx %s\n", lo, hi,
						 perms, off, path);
				break;
			}
		}
	}
	if (f)
		fclose(f);
}

static void on_term(int sig)
{
	(void)sig;
	static char maps_after[16384];
	our_maps(maps_after, sizeof(maps_after));
	if (strcmp(maps_before, maps_after) != 0) {
		dprintf(out, "FAIL maps\nbefore:\n%safter:\n%s", maps_before, maps_after);
		_exit(1);
	}
	for (int r = 0; r < nregions; r++) {
		struct region *g = &regions[r];
		if (g->hidden && mprotect(g->at, g->len, PROT_READ) != 0) {
			dprintf(out, "FAIL mprotect %s\n", g->name);
			_exit(1);
		}
		size_t n = g->len / PAGE;
		unsigned char *resident = malloc(n);
		if (mincore(g->at, g->len, resident) != 0) {
			dprintf(out, "FAIL mincore %s\n", g->name);
			_exit(1);
		}
		for (size_t p = 0; p < n; p++) {
			int want = written(g, p);
			if (!want && (resident[p] & 1)) {
				dprintf(out, "FAIL %s: page %zu of a hole is resident\n", g->name, p);
				_exit(1);
			}
			for (size_t i = 0; i < PAGE; i += 64) {
				unsigned char b = g->at[p * PAGE + i];
				if (b != (want ? pattern(r, p, i) : 0)) {
					dprintf(out, "FAIL %s: page %zu byte %zu\n", g->name, p, i);
					_exit(1);
				}
			}
		}
	}
	dprintf(out, "PASS\n");
	_exit(0);
}

int main(int argc, char **argv)
{
	out = open(argc > 1 ? argv[1] : "/dev/stdout", O_WRONLY | O_CREAT | O_APPEND, 0644);
	const int anon = MAP_PRIVATE | MAP_ANONYMOUS;
	const int rw = PROT_READ | PROT_WRITE;

	add("whole", mmap(NULL, 8 * MIB, rw, anon, -1, 0), 8 * MIB, 0);
	add("holes", mmap(NULL, 8 * MIB, rw, anon, -1, 0), 8 * MIB, 1);
	/* Three mappings where one was: the middle made read-only once written. */
	unsigned char *three = mmap(NULL, 3 * MIB, rw, anon, -1, 0);
	add("split", three, 3 * MIB, 0);
	mprotect(three + MIB, MIB, PROT_READ);
	/* Under the copy threshold: read in. Between inaccessible pages, so that no neighbour
	 * joins it. */
	unsigned char *small = mmap(NULL, 64 * 1024 + 2 * PAGE, PROT_NONE, anon, -1, 0);
	if (small != MAP_FAILED)
		mprotect(small + PAGE, 64 * 1024, rw);
	add("small", small == MAP_FAILED ? small : small + PAGE, 64 * 1024, 0);
	/* A private file mapping, written: its pages are the task's, read in. */
	char path[4096];
	snprintf(path, sizeof(path), "%s.data", argc > 1 ? argv[1] : "/tmp/anonfill");
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 2 * MIB) != 0) {
		dprintf(out, "FAIL cannot make %s\n", path);
		return 1;
	}
	add("file", mmap(NULL, 2 * MIB, rw, MAP_PRIVATE, fd, 0), 2 * MIB, 0);
	close(fd);
	add("shared", mmap(NULL, 2 * MIB, rw, MAP_SHARED | MAP_ANONYMOUS, -1, 0), 2 * MIB, 0);
	add("locked", mmap(NULL, MIB, rw, anon | MAP_LOCKED, -1, 0), MIB, 0);
	add("hidden", mmap(NULL, 2 * MIB, rw, anon, -1, 0), 2 * MIB, 0);
	regions[nregions - 1].hidden = 1;
	mprotect(regions[nregions - 1].at, 2 * MIB, PROT_NONE);

	our_maps(maps_before, sizeof(maps_before));
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d\n", getpid());
	for (;;)
		pause();
}
