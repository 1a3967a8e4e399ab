/*
 * Victim: a parent and a child sharing anonymous memory (MAP_SHARED | MAP_ANONYMOUS), 16 pages
 * of which 3 are written; the rest never touched.
 *
 * On SIGUSR1 the parent writes a new value into the shared page and the child, which watches
 * it, must see it: the memory is still one object for both. The child then answers through the
 * same memory, and the parent prints PASS when it sees the answer, FAIL after 2 s.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int sig) { (void)sig; go = 1; }

int main(int argc, char **argv)
{
	char buf[128];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	volatile unsigned char *shm =
		mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	memset((void *)shm, 'a', 4096);
	memset((void *)(shm + 5 * 4096), 'b', 4096);
	struct timespec tick = {.tv_nsec = 5 * 1000 * 1000};
	pid_t child = fork();
	if (child == 0) {
		memset((void *)(shm + 9 * 4096), 'c', 4096); /* written by the child, seen by both */
		while (shm[4096 * 5] != 'B')
			nanosleep(&tick, NULL);
		shm[4096 * 9] = 'C';
		for (;;)
			pause();
	}
	signal(SIGUSR1, on_usr1);
	while (shm[9 * 4096] != 'c')
		nanosleep(&tick, NULL);
	snprintf(buf, sizeof(buf), "ready pid=%d child=%d shm=%lx\n", getpid(), child, (unsigned long)shm);
	write(out, buf, strlen(buf));
	while (!go)
		pause();
	if (shm[0] != 'a' || shm[4095] != 'a' || shm[5 * 4096 + 1] != 'b' || shm[9 * 4096 + 1] != 'c') {
		write(out, "FAIL contents\n", 14);
		return 1;
	}
	shm[5 * 4096] = 'B';
	for (int i = 0; i < 400 && shm[9 * 4096] != 'C'; i++)
		nanosleep(&tick, NULL);
	write(out, shm[9 * 4096] == 'C' ? "PASS shm\n" : "FAIL not shared\n", shm[9 * 4096] == 'C' ? 9 : 16);
	return 0;
}
