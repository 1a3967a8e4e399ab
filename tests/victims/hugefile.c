/*
 * A file on a hugetlbfs mount (argv[2]) mapped shared and privately: 2 huge pages, written
 * through the shared mapping; the private mapping writes its first page (copied on write).
 * argv: OUT DIR. On SIGTERM the shared mapping must still be the file (a write through it shows
 * in the file), the private one must keep its own page and see the file's other page. Prints
 * PASS, FAIL, or SKIP without free huge pages.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HP (2UL << 20)
static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	(void)argc;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char path[512];
	snprintf(path, sizeof(path), "%s/data", argv[2]);
	int fd = open(path, O_RDWR | O_CREAT, 0600);
	char *s = fd < 0 || ftruncate(fd, 2 * HP) ? MAP_FAILED :
		  mmap(NULL, 2 * HP, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (s == MAP_FAILED) {
		dprintf(out, "ready pid=%d\nSKIP hugefile\n", getpid());
		return 0;
	}
	strcpy(s, "file page 0");
	strcpy(s + HP, "file page 1");
	char *p = mmap(NULL, 2 * HP, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		dprintf(out, "ready pid=%d\nSKIP hugefile\n", getpid());
		return 0;
	}
	strcpy(p, "private page 0");
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d\n", getpid());
	while (!term)
		pause();
	const char *why = NULL;
	char back[32] = "";
	strcpy(s + HP, "written after");
	char *again = mmap(NULL, 2 * HP, PROT_READ, MAP_SHARED, fd, 0);
	if (strcmp(s, "file page 0"))
		why = "the shared mapping's contents";
	else if (again == MAP_FAILED || strcmp(again + HP, "written after"))
		why = "the shared mapping is not the file";
	else if (strcmp(p, "private page 0"))
		why = "the private mapping's own page";
	else if (memcpy(back, p + HP, 14), strcmp(back, "written after"))
		why = "the private mapping does not see the file's page";
	dprintf(out, why ? "FAIL hugefile: %s\n" : "PASS hugefile\n", why);
	return 0;
}
