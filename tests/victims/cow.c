/*
 * Victim: copy-on-write memory shared by a parent, its child and a grandchild, as fork leaves
 * it. Before the fork the parent fills a private anonymous area of 64 pages, a read-only area,
 * and a private mapping of a file of its own (argv[1].map). Then, in the area:
 *
 *   pages  0-15  written before the fork only: one frame for all three tasks
 *   pages 16-23  rewritten by the child          pages 24-31  rewritten by the parent
 *   pages 32-39  never written (read as zero)    pages 40-47  written by the child only
 *   pages 48-55  dropped by the child (MADV_DONTNEED): zero there, the parent keeps them
 *   pages 56-63  dropped by the parent
 *
 * and in the file mapping pages 0-3 are written before the fork (shared by all), page 4 by the
 * child, pages 5-7 are the file's. The grandchild writes nothing. Two pages marked
 * MADV_WIPEONFORK and written before the fork hold data in the parent, zeros in the others;
 * a MAP_DROPPABLE page stays droppable in all three.
 *
 * "ready pid=P child=C grandchild=G shared=N" is printed once all is set (N: pages whose frame
 * the three share, checked through /proc/PID/pagemap). On SIGTERM the parent asks the other
 * two (SIGUSR1) to check their contents, checks its own and that the frames are still shared
 * (and not shared where a task wrote), then prints PASS or FAIL with what differs.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define NPAGES 64

static unsigned char *area, *ro, *fmap, *wipe, *drop;
static int droppable; /* the kernel has MAP_DROPPABLE (6.11) */
/* Shared with every task: [0] child, [1] grandchild: 0 waiting, 1 asked, 2 PASS, 3 FAIL. */
static volatile int *board;
static volatile sig_atomic_t asked;
static char why[512];

static void on_sig(int sig) { (void)sig; asked = 1; }

enum { PARENT, CHILD, GRANDCHILD };

/* What page `i` of the area holds in task `who`: 0 for zero, else the byte value. The
 * grandchild was made before the child wrote or dropped anything. */
static int expected(int who, int i)
{
	if (i < 16)
		return 0x10 + i;
	if (i < 24)
		return who == CHILD ? 0xc0 + i : 0x10 + i;
	if (i < 32)
		return who == PARENT ? 0xa0 + i - 24 : 0x10 + i;
	if (i < 40)
		return 0;
	if (i < 48)
		return who == CHILD ? 0xc0 + i - 40 : 0;
	if (i < 56)
		return who == CHILD ? 0 : 0x10 + i;
	return who == PARENT ? 0 : 0x10 + i;
}

/* Whether the mapping at `addr` has VmFlag `flag` (smaps). */
static int vmflag(void *addr, const char *flag)
{
	char line[512], want[32], pat[8];
	snprintf(want, sizeof(want), "%lx-", (unsigned long)addr);
	snprintf(pat, sizeof(pat), " %s", flag);
	FILE *f = fopen("/proc/self/smaps", "r");
	int in = 0, has = 0;
	while (f && fgets(line, sizeof(line), f)) {
		char *dash = strchr(line, '-'), *sp = strchr(line, ' ');
		if (dash && sp && dash < sp)
			in = !strncmp(line, want, strlen(want));
		else if (in && !strncmp(line, "VmFlags:", 8))
			has = strstr(line, pat) != NULL;
	}
	if (f)
		fclose(f);
	return has;
}

static int check_contents(int who)
{
	for (int b = 0; b < 2 * PAGE; b += 101)
		if (wipe[b] != (who == PARENT ? 0x33 : 0)) {
			snprintf(why, sizeof(why), "task %d: wipe-on-fork byte %d is %#x", who, b, wipe[b]);
			return 0;
		}
	if (!vmflag(wipe, "wf") || (droppable && !vmflag(drop, "dp"))) {
		snprintf(why, sizeof(why), "task %d: MADV_WIPEONFORK or MAP_DROPPABLE lost", who);
		return 0;
	}
	for (int i = 0; i < NPAGES; i++) {
		int want = expected(who, i);
		for (int b = 0; b < PAGE; b += 511)
			if (area[i * PAGE + b] != want) {
				snprintf(why, sizeof(why), "task %d: area page %d byte %d is %#x, not %#x", who,
					 i, b, area[i * PAGE + b], want);
				return 0;
			}
	}
	for (int b = 0; b < 2 * PAGE; b += 97)
		if (ro[b] != 0x77) {
			snprintf(why, sizeof(why), "task %d: read-only area byte %d", who, b);
			return 0;
		}
	for (int i = 0; i < 8; i++) {
		int want = i < 4 ? 0x50 + i : i == 4 && who == CHILD ? 0x99 : 'f';
		if (fmap[i * PAGE + 7] != want) {
			snprintf(why, sizeof(why), "task %d: file map page %d is %#x, not %#x", who, i,
				 fmap[i * PAGE + 7], want);
			return 0;
		}
	}
	return 1;
}

static uint64_t frame(pid_t pid, void *addr)
{
	char path[64];
	uint64_t e = 0;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	pread(fd, &e, sizeof(e), (uintptr_t)addr / PAGE * sizeof(e));
	close(fd);
	return (e >> 63) & 1 ? e & ((1ULL << 55) - 1) : 0;
}

/*
 * Pages whose frame the three tasks share, of those written before the fork and left alone
 * since (area pages 0-15, the read-only area, file map pages 0-3); `wrong` is set where a page
 * written after the fork by one side has one frame in parent and child.
 */
static int count_shared(pid_t c, pid_t g, int *wrong)
{
	int n = 0;
	*wrong = 0;
	for (int i = 0; i < 32 + 2 + 4; i++) {
		void *at = i < 32 ? area + i * PAGE : i < 34 ? ro + (i - 32) * PAGE : fmap + (i - 34) * PAGE;
		uint64_t p = frame(getpid(), at), cf = frame(c, at), gf = frame(g, at);
		if (i >= 16 && i < 32) {
			if (p && p == cf) {
				snprintf(why, sizeof(why), "area page %d has one frame in parent and child", i);
				*wrong = 1;
			}
			continue;
		}
		n += p && p == cf && p == gf;
	}
	return n;
}

static void helper(int who)
{
	struct timespec tick = {.tv_nsec = 2 * 1000 * 1000};
	signal(SIGUSR1, on_sig);
	board[who - 1] = 0;
	for (;;) {
		while (!asked)
			nanosleep(&tick, NULL);
		asked = 0;
		board[who - 1] = check_contents(who) ? 2 : 3;
		if (board[who - 1] == 3)
			strcpy((char *)board + 64 + (who - 1) * 1024, why);
	}
}

int main(int argc, char **argv)
{
	char buf[700], path[600];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct timespec tick = {.tv_nsec = 2 * 1000 * 1000};
	board = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	area = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	snprintf(path, sizeof(path), "%s.map", argv[1]);
	int ffd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	memset(buf, 'f', sizeof(buf));
	for (int i = 0; i < 8 * PAGE; i += 512)
		write(ffd, buf, 512);
	fmap = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, ffd, 0);
	close(ffd);
	for (int i = 0; i < NPAGES; i++)
		if (i < 32 || i >= 48)
			memset(area + i * PAGE, 0x10 + i, PAGE);
	memset(ro, 0x77, 2 * PAGE);
	wipe = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(wipe, 0x33, 2 * PAGE);
	madvise(wipe, 2 * PAGE, MADV_WIPEONFORK);
	drop = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, 0x08 /* MAP_DROPPABLE */ | MAP_ANONYMOUS, -1, 0);
	droppable = drop != MAP_FAILED;
	if (!droppable)
		drop = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	drop[0] = 1;
	mprotect(ro, 2 * PAGE, PROT_READ);
	for (int i = 0; i < 4; i++)
		memset(fmap + i * PAGE, 0x50 + i, PAGE);
	volatile unsigned char sink = 0;
	for (int i = 5; i < 8; i++)
		sink += fmap[i * PAGE];
	for (int i = 32; i < 40; i++)
		sink += area[i * PAGE];
	(void)sink;

	board[0] = board[1] = -1;
	pid_t child = fork();
	if (child == 0) {
		pid_t g = fork();
		if (g == 0)
			helper(GRANDCHILD);
		board[2] = g;
		for (int i = 16; i < 24; i++)
			memset(area + i * PAGE, 0xc0 + i, PAGE);
		for (int i = 40; i < 48; i++)
			memset(area + i * PAGE, 0xc0 + i - 40, PAGE);
		madvise(area + 48 * PAGE, 8 * PAGE, MADV_DONTNEED);
		memset(fmap + 4 * PAGE, 0x99, PAGE);
		helper(CHILD);
	}
	while (board[0] != 0 || board[1] != 0)
		nanosleep(&tick, NULL);
	pid_t grandchild = board[2];
	for (int i = 24; i < 32; i++)
		memset(area + i * PAGE, 0xa0 + i - 24, PAGE);
	madvise(area + 56 * PAGE, 8 * PAGE, MADV_DONTNEED);
	signal(SIGTERM, on_sig);
	int wrong;
	int shared = count_shared(child, grandchild, &wrong);
	snprintf(buf, sizeof(buf), "ready pid=%d child=%d grandchild=%d shared=%d\n", getpid(), child,
		 grandchild, wrong ? -1 : shared);
	write(out, buf, strlen(buf));
	while (!asked)
		pause();

	board[0] = board[1] = 1;
	kill(child, SIGUSR1);
	kill(grandchild, SIGUSR1);
	for (int i = 0; i < 1000 && (board[0] < 2 || board[1] < 2); i++)
		nanosleep(&tick, NULL);
	const char *verdict = NULL;
	if (board[0] != 2 || board[1] != 2)
		verdict = board[0] == 3 ? (char *)board + 64 : board[1] == 3 ? (char *)board + 1088
									    : "no answer";
	else if (!check_contents(PARENT))
		verdict = why;
	else {
		int now = count_shared(child, grandchild, &wrong);
		if (wrong)
			verdict = why;
		else if (now != shared) {
			snprintf(why, sizeof(why), "%d pages shared by the three, %d before", now, shared);
			verdict = why;
		}
	}
	if (verdict)
		snprintf(buf, sizeof(buf), "FAIL %s\n", verdict);
	else
		snprintf(buf, sizeof(buf), "PASS cow %d pages shared\n", shared);
	write(out, buf, strlen(buf));
	kill(child, SIGKILL);
	kill(grandchild, SIGKILL);
	return verdict != NULL;
}
