/*
 * Anonymous hugetlb memory: 4 MiB shared and 4 MiB private, written at both ends. argv: OUT.
 * On SIGTERM both must hold what was written. Prints "SKIP" where the machine has no free
 * huge pages.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SZ (4UL << 20)
static volatile sig_atomic_t term;
static void on_term(int s) { (void)s; term = 1; }

int main(int argc, char **argv)
{
	char msg[128];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char *s = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	char *p = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (s == MAP_FAILED || p == MAP_FAILED) {
		snprintf(msg, sizeof(msg), "ready pid=%d\nSKIP hugetlb\n", getpid());
		write(out, msg, strlen(msg));
		return 0;
	}
	strcpy(s, "shared 0");
	strcpy(s + SZ - 4096, "shared end");
	strcpy(p, "private 0");
	strcpy(p + SZ - 4096, "private end");
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	const char *why = NULL;
	if (strcmp(s, "shared 0") || strcmp(s + SZ - 4096, "shared end"))
		why = "the shared memory";
	else if (strcmp(p, "private 0") || strcmp(p + SZ - 4096, "private end"))
		why = "the private memory";
	snprintf(msg, sizeof(msg), why ? "FAIL hugetlb: %s\n" : "PASS hugetlb\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
