/*
 * A private mapping of shared anonymous memory (through /proc/self/map_files, from page 1), one
 * of its pages copied on write. argv: OUT. On SIGTERM the copied page must hold its own value,
 * the others the object's, and a write to the object must show through the private mapping
 * where it did not copy. (CRIU 4.2 cannot restore our images of it: it refuses the copied page.)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096
static volatile sig_atomic_t term;
static void on_term(int s) { (void)s; term = 1; }

int main(int argc, char **argv)
{
	char msg[128], path[128];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char *a = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	*(int *)a = 1;
	*(int *)(a + PG) = 11;
	*(int *)(a + 2 * PG) = 111;
	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (long)a, (long)a + 5 * PG);
	int fd = open(path, O_RDWR);
	char *p = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, PG);
	if (a == MAP_FAILED || p == MAP_FAILED)
		return 2;
	close(fd);
	*(int *)(p + PG) = 22;
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	const char *why = NULL;
	if (*(int *)(p + PG) != 22)
		why = "the copied page";
	else if (*(int *)p != 11 || *(int *)(a + 2 * PG) != 111)
		why = "the object's pages";
	else {
		*(int *)(a + 3 * PG) = 444;
		*(int *)(a + 2 * PG) = 333;
		if (*(int *)(p + 2 * PG) != 444)
			why = "the private mapping no longer reads through";
		else if (*(int *)(p + PG) != 22)
			why = "a write to the object reached the copied page";
	}
	snprintf(msg, sizeof(msg), why ? "FAIL shmpriv: %s\n" : "PASS shmpriv\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
