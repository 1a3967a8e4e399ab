/*
 * Victim for benchmarks and memory tests: maps argv[2] MiB of anonymous memory, writes every
 * page (page i starts with i, the rest of the page a byte pattern), reports readiness, then
 * waits. On SIGTERM it verifies every page and reports PASS or FAIL.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned char *mem;
static size_t pages;
static int out;

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
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d mem=%lx pages=%zu\n", getpid(), (unsigned long)mem, pages);
	write(out, buf, strlen(buf));
	for (;;)
		pause();
}
