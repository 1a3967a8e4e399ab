/*
 * Victim: a sealed memfd ("criu-test", 10000 bytes: 'm' then zeros, F_SEAL_GROW | F_SEAL_SHRINK)
 * open twice: the original at offset 5 and a second description through /proc, read-only.
 * It is also mapped shared (a write through the descriptor shows in it) and private (with a
 * copy-on-write change of its own). On SIGTERM it checks contents, size, seals, both offsets,
 * both mappings, and prints PASS or FAIL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char buf[128];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int m = memfd_create("criu-test", MFD_ALLOW_SEALING);
	ftruncate(m, 10000);
	pwrite(m, "m", 1, 0);
	pwrite(m, "tail", 4, 9996);
	fcntl(m, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK);
	lseek(m, 5, SEEK_SET);
	snprintf(buf, sizeof(buf), "/proc/self/fd/%d", m);
	int r = open(buf, O_RDONLY);
	lseek(r, 9996, SEEK_SET);
	char *shared = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	char *priv = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, m, 0);
	priv[1] = 'p';
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d m=%d r=%d\n", getpid(), m, r);
	write(out, buf, strlen(buf));
	while (!term)
		pause();
	struct stat st;
	char b[8] = {0}, first;
	int ok = fstat(m, &st) == 0 && st.st_size == 10000 && pread(m, &first, 1, 0) == 1 && first == 'm' &&
		 fcntl(m, F_GET_SEALS) == (F_SEAL_GROW | F_SEAL_SHRINK) && lseek(m, 0, SEEK_CUR) == 5 &&
		 read(r, b, 4) == 4 && !memcmp(b, "tail", 4) && ftruncate(m, 20000) != 0 && shared[0] == 'm' &&
		 priv[1] == 'p' && priv[0] == 'm';
	pwrite(m, "z", 1, 0);
	ok = ok && shared[0] == 'z' && shared[1] == 0;
	write(out, ok ? "PASS memfd\n" : "FAIL memfd\n", 11);
	return 0;
}
