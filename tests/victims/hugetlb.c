/*
 * Anonymous hugetlb memory: 4 MiB shared and 4 MiB private, a 4 MiB hugetlb memfd held and
 * mapped shared, and a 2 MiB System V segment of huge pages attached (marked for removal),
 * written at both ends. argv: OUT. On SIGTERM each must hold what was written, the memfd its
 * name and its contents through a new mapping of its descriptor too, the segment its id and
 * its huge pages (hugetlbfs). Prints "SKIP" where the machine has no free huge pages.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/vfs.h>
#include <unistd.h>

#define HUGETLBFS_MAGIC 0x958458f6

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
	int shm = shmget(IPC_PRIVATE, 2UL << 20, IPC_CREAT | SHM_HUGETLB | 0600);
	char *y = shm < 0 ? MAP_FAILED : shmat(shm, NULL, 0);
	if (y != MAP_FAILED)
		shmctl(shm, IPC_RMID, NULL);
	if (s == MAP_FAILED || p == MAP_FAILED || m == MAP_FAILED || y == MAP_FAILED) {
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
	strcpy(y, "sysv 0");
	strcpy(y + (2UL << 20) - 4096, "sysv end");
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
	else if (strcmp(y, "sysv 0") || strcmp(y + (2UL << 20) - 4096, "sysv end"))
		why = "the System V segment's contents";
	if (!why) {
		struct shmid_ds ds;
		struct statfs fs;
		char range[80];
		snprintf(range, sizeof(range), "/proc/self/map_files/%lx-%lx", (unsigned long)y,
			 (unsigned long)y + (2UL << 20));
		int yf = open(range, O_RDONLY);
		if (shmctl(shm, IPC_STAT, &ds) || ds.shm_segsz != 2UL << 20 || yf < 0 ||
		    fstatfs(yf, &fs) || fs.f_type != HUGETLBFS_MAGIC || fs.f_bsize != 2UL << 20)
			why = "the System V segment (its id, size or huge pages)";
		close(yf);
	}
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
