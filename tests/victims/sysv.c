/*
 * Victim: System V shared memory. Segment A (a key, 3 pages + 100 bytes) stays after the
 * process dies; segment B (private, marked for removal) dies with its last user. Both are
 * written and shared with a child. On SIGTERM the parent writes a byte into each, the child
 * (on SIGUSR1) checks it sees both and the old contents, and the parent prints PASS or FAIL.
 * Segment A is removed at the end.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t flag;
static void on_sig(int sig) { (void)sig; flag = 1; }

int main(int argc, char **argv)
{
	char buf[160];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	size_t sa = 3 * 4096 + 100;
	int ida = shmget(0x5c000000 | getpid(), sa, IPC_CREAT | 0600);
	int idb = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
	char *a = shmat(ida, NULL, 0), *b = shmat(idb, NULL, 0);
	shmctl(idb, IPC_RMID, NULL);
	memset(a, 'A', sa);
	memset(b, 'B', 4096);
	signal(SIGUSR1, on_sig);
	signal(SIGTERM, on_sig);
	pid_t child = fork();
	if (child == 0) {
		while (!flag)
			pause();
		int ok = a[0] == 'X' && a[sa - 1] == 'A' && b[0] == 'Y' && b[4095] == 'B';
		_exit(ok ? 0 : 1);
	}
	snprintf(buf, sizeof(buf), "ready pid=%d child=%d ida=%d idb=%d\n", getpid(), child, ida, idb);
	write(out, buf, strlen(buf));
	while (!flag)
		pause();
	a[0] = 'X';
	b[0] = 'Y';
	kill(child, SIGUSR1);
	int st;
	waitpid(child, &st, 0);
	struct shmid_ds ds;
	int dest = shmctl(idb, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & SHM_DEST);
	int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && dest && a[sa - 1] == 'A';
	write(out, ok ? "PASS sysv\n" : "FAIL sysv\n", 10);
	shmctl(ida, IPC_RMID, NULL);
	return 0;
}
