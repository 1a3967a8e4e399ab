/*
 * Anonymous hugetlb memory: 4 MiB shared and 4 MiB private, and a 4 MiB hugetlb memfd held
 * and mapped shared, written at both ends. argv: OUT. On SIGTERM each must hold what was
 * written, the memfd its name and its contents through a new mapping of its descriptor too. Prints "SKIP" where the machine has no free
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
	int mfd = memfd_create("hugemem", MFD_HUGETLB);
	char *m = mfd < 0 || ftruncate(mfd, SZ) ? MAP_FAILED :
		  mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (s == MAP_FAILED || p == MAP_FAILED || m == MAP_FAILED) {
		snprintf(msg, sizeof(msg), "ready pid=%d\nSKIP hugetlb\n", getpid());
		write(out, msg, strlen(msg));
		return 0;
	}
	strcpy(s, "shared 0");
	strcpy(s + SZ - 4096, "shared end");
	strcpy(p, "private 0");
	strcpy(p + SZ - 4096, "private end");
	strcpy(m, "memfd 0");
	strcpy(m + SZ - 4096, "memfd end");
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
	else if (strcmp(m, "memfd 0") || strcmp(m + SZ - 4096, "memfd end"))
		why = "the memfd's mapping";
	if (!why) {
		char link[64], name[128] = "";
		snprintf(link, sizeof(link), "/proc/self/fd/%d", mfd);
		readlink(link, name, sizeof(name) - 1);
		char *again = mmap(NULL, SZ, PROT_READ, MAP_SHARED, mfd, 0);
		if (strncmp(name, "/memfd:hugemem", 14))
			why = "the memfd's name";
		else if (again == MAP_FAILED || strcmp(again + SZ - 4096, "memfd end"))
			why = "the memfd through its descriptor";
	}
	snprintf(msg, sizeof(msg), why ? "FAIL hugetlb: %s\n" : "PASS hugetlb\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
