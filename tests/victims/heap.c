/*
 * Victim for benchmarks and memory tests: maps argv[2] MiB of anonymous memory, writes every
 * page (page i starts with i, the rest of the page a byte pattern), reports readiness, then
 * waits. On SIGTERM it verifies every page and reports PASS or FAIL. With argv[3] "drop" it also
 * maps a MAP_DROPPABLE page (6.11) beside and writes it (its address reported as drop=), which
 * a dump leaves out: restored, it is still droppable, and reads as zeros or as written.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned char *mem, *drop;
static size_t pages;
static int out;

/* Whether the mapping at `at` shows "dp" in its VmFlags (called from the SIGTERM handler, while
 * main only waits in pause(): no call it makes is interrupted). */
static int droppable(unsigned char *at)
{
	static char text[1 << 16];
	int fd = open("/proc/self/smaps", O_RDONLY);
	ssize_t n, len = 0;
	while (fd >= 0 && len < (ssize_t)sizeof(text) - 1 && (n = read(fd, text + len, sizeof(text) - 1 - len)) > 0)
		len += n;
	if (fd >= 0)
		close(fd);
	text[len] = 0;
	char head[32];
	snprintf(head, sizeof(head), "%lx-", (unsigned long)at);
	char *m = strstr(text, head);
	if (!m)
		return 0;
	char *flags = strstr(m, "VmFlags:");
	char *eol = flags ? strchr(flags, '\n') : NULL;
	if (eol)
		*eol = 0;
	return flags && strstr(flags, " dp") != NULL;
}

static void on_term(int sig)
{
	(void)sig;
	for (size_t i = 0; i < pages; i++) {
		unsigned char *p = mem + i * 4096;
		if (*(size_t *)p != i || p[4095] != (unsigned char)(i * 13)) {
			write(out, "FAIL memory\n", 12);
			_exit(1);
		}
	}
	if (drop && !droppable(drop)) {
		write(out, "FAIL droppable lost\n", 20);
		_exit(1);
	}
	if (drop && drop[0] != 0 && drop[0] != 0x5a) {
		write(out, "FAIL droppable page\n", 20);
		_exit(1);
	}
	write(out, "PASS\n", 5);
	_exit(0);
}

int main(int argc, char **argv)
{
	char buf[128];
	out = open(argc > 1 ? argv[1] : "/dev/stdout", O_WRONLY | O_CREAT | O_APPEND, 0644);
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 64;
	pages = mib * 256;
	mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < pages; i++) {
		unsigned char *p = mem + i * 4096;
		memset(p, (unsigned char)(i * 13), 4096);
		*(size_t *)p = i;
	}
	if (argc > 3 && !strcmp(argv[3], "drop")) {
		drop = mmap(NULL, 4096, PROT_READ | PROT_WRITE, 0x08 /* MAP_DROPPABLE */ | MAP_ANONYMOUS, -1, 0);
		if (drop == MAP_FAILED)
			return 1;
		memset(drop, 0x5a, 4096);
	}
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d mem=%lx pages=%zu drop=%lx\n", getpid(), (unsigned long)mem,
		 pages, (unsigned long)drop);
	write(out, buf, strlen(buf));
	for (;;)
		pause();
}
