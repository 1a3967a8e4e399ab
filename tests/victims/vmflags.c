/*
 * A mapping whose VmFlags change without /proc/PID/maps showing it. argv: OUT.
 *
 * 1 MiB of anonymous memory, each page holding its number. On SIGUSR1 the task turns
 * MADV_DONTFORK on the region on or off (VmFlags "dc"; the mapping's line in maps stays the
 * same) and reports "toggled N on=0|1". On SIGTERM it checks its pages, and that smaps shows
 * "dc" on the region exactly when it last turned it on; prints PASS or FAIL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096
#define PAGES 256

static volatile sig_atomic_t term, toggle;
static void on_term(int sig) { (void)sig; term = 1; }
static void on_usr1(int sig) { (void)sig; toggle = 1; }

/* Whether smaps shows VmFlag `flag` on the mapping starting at `start` (-1: not found). */
static int has_flag(unsigned long start, const char *flag)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0, found = -1;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2) {
			in = a == start;
		} else if (in && !strncmp(line, "VmFlags:", 8)) {
			char want[8];
			snprintf(want, sizeof(want), " %s", flag);
			found = strstr(line, want) != NULL;
		}
	}
	if (f)
		fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	unsigned char *mem = mmap(NULL, PAGES * PG, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i < PAGES; i++)
		memset(mem + i * PG, i, PG);
	signal(SIGTERM, on_term);
	signal(SIGUSR1, on_usr1);
	dprintf(out, "ready pid=%d mem=%lx\n", getpid(), (unsigned long)mem);
	int on = 0, n = 0;
	while (!term) {
		if (toggle) {
			toggle = 0;
			on = !on;
			if (madvise(mem, PAGES * PG, on ? MADV_DONTFORK : MADV_DOFORK)) {
				dprintf(out, "FAIL madvise\n");
				return 1;
			}
			dprintf(out, "toggled %d on=%d\n", ++n, on);
		}
		usleep(1000);
	}
	for (int i = 0; i < PAGES; i++)
		for (int k = 0; k < PG; k++)
			if (mem[i * PG + k] != (unsigned char)i) {
				dprintf(out, "FAIL page %d byte %d\n", i, k);
				return 1;
			}
	int dc = has_flag((unsigned long)mem, "dc");
	if (dc != on) {
		dprintf(out, "FAIL dc %d, turned %s\n", dc, on ? "on" : "off");
		return 1;
	}
	dprintf(out, "PASS vmflags (dc %s)\n", on ? "on" : "off");
	return 0;
}
