/*
 * Victim: System V shared memory. Segment A (a key, 3 pages + 100 bytes) stays after the
 * process dies; segment B (private, marked for removal) dies with its last user. Both are
 * written and shared with a child. On SIGTERM the parent writes a byte into each, the child
 * (on SIGUSR1) checks it sees both and the old contents, and the parent prints PASS or FAIL.
 * Segment A is removed at the end. The second page of A is made read-only in both (mprotect
 * splits the attachment): it must read so after, the pages around it writable.
 *
 * argv[2] "partial": the first page of A is unmapped instead (the attachment mapped in part,
 * which a dump refuses); it only reports ready and waits.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t flag;

/* The permissions /proc/self/maps shows for the mapping holding `p` ("rw-s"...). */
static int perms_are(const void *p, const char *want)
{
	char line[512];
	int ok = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && lo <= (unsigned long)p &&
		    (unsigned long)p < hi)
			ok = !strcmp(perms, want);
	}
	if (f)
		fclose(f);
	return ok;
}
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
	if (argc > 2 && !strcmp(argv[2], "partial")) {
		munmap(a, 4096);
		snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
		write(out, buf, strlen(buf));
		pause();
		shmctl(ida, IPC_RMID, NULL);
		return 0;
	}
	mprotect(a + 4096, 4096, PROT_READ);
	signal(SIGUSR1, on_sig);
	signal(SIGTERM, on_sig);
	pid_t child = fork();
	if (child == 0) {
		while (!flag)
			pause();
		int ok = a[0] == 'X' && a[sa - 1] == 'A' && b[0] == 'Y' && b[4095] == 'B' &&
			 perms_are(a + 4096, "r--s") && perms_are(a, "rw-s");
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
	int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && dest && a[sa - 1] == 'A' &&
		 a[4096] == 'A' && perms_are(a + 4096, "r--s") && perms_are(a + 8192, "rw-s");
	write(out, ok ? "PASS sysv\n" : "FAIL sysv\n", 10);
	shmctl(ida, IPC_RMID, NULL);
	return 0;
}
