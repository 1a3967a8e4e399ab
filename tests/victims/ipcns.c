/*
 * An IPC namespace of its own, with something of every kind in it. argv: OUT [plain]. The task
 * unshares an IPC namespace and sets some of its sysctls (kernel/sem, msgmax, msgmnb, shm_rmid_forced,
 * fs/mqueue/msg_max, and shm_next_id left pending), then makes:
 *   - a segment nobody attaches (3 pages and 100 bytes of a pattern, mode 0640, key 0x5eed),
 *   - a segment it keeps attached and marked for removal (its bytes written through the
 *     mapping),
 *   - where the machine has huge pages, a 2 MiB segment of them nobody attaches (key 0x5eee,
 *     its first and last bytes written; "huge" on OUT),
 *   - a message queue made with effective uid 1234 (its creator), owner uid 1000, byte limit
 *     9000, holding three messages (types 7, 3 and 7; one of them empty),
 *   - a semaphore set of five (values 1..5) whose owner is gid 2000.
 * On SIGTERM it checks every one of them from inside (ids, keys, owners and creators, modes,
 * sizes, contents, message order, values, sysctls), and that its namespace is not PID 1's.
 * Prints PASS or FAIL. "plain" leaves shm_next_id unset, the attached segment unmarked and
 * the queue made by root with the default byte limit: CRIU 4.2 restores the next ids before
 * the objects, which use them up, does not mark a segment for removal again, makes every
 * object as root and gives a queue the default limit.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define HUGE_SIZE (2UL << 20)
#define HUGETLBFS_MAGIC 0x958458f6

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

#define SHM1_SIZE (3 * 4096 + 100)
#define SHM2_SIZE 8192

static int put(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	int n = write(fd, value, strlen(value));
	close(fd);
	return n < 0 ? -1 : 0;
}

static int reads(const char *path, const char *want)
{
	char buf[128] = {0};
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	int n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	for (char *p = buf; *p; p++)
		if (*p == '\t')
			*p = ' ';
	return !strcmp(buf, want);
}

static unsigned char pattern(int i) { return (unsigned char)(i * 7 + 3); }

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

struct msg {
	long mtype;
	char text[64];
};

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct stat host;
	stat("/proc/1/ns/ipc", &host);
	if (unshare(CLONE_NEWIPC))
		return 2;
	if (put("/proc/sys/kernel/sem", "250 32000 64 100") || put("/proc/sys/kernel/msgmax", "4000") ||
	    put("/proc/sys/kernel/msgmnb", "12000") || put("/proc/sys/kernel/shm_rmid_forced", "0") ||
	    put("/proc/sys/fs/mqueue/msg_max", "20"))
		return 3;

	int shm1 = shmget(0x5eed, SHM1_SIZE, IPC_CREAT | 0640);
	unsigned char *p = shmat(shm1, NULL, 0);
	for (int i = 0; i < SHM1_SIZE; i++)
		p[i] = pattern(i);
	shmdt(p);
	/* A segment of huge pages nobody attaches, its first and last bytes written (where the
	 * machine has huge pages: "huge" on OUT says so). */
	int shm3 = shmget(0x5eee, HUGE_SIZE, IPC_CREAT | SHM_HUGETLB | 0600);
	char *h = shm3 < 0 ? (char *)-1 : shmat(shm3, NULL, 0);
	if (h != (char *)-1) {
		strcpy(h, "huge 0");
		strcpy(h + HUGE_SIZE - 9, "huge end");
		shmdt(h);
		dprintf(out, "huge\n");
	}
	int shm2 = shmget(IPC_PRIVATE, SHM2_SIZE, IPC_CREAT | 0600);
	char *kept = shmat(shm2, NULL, 0);
	strcpy(kept, "kept attached");
	int plain = argc > 2 && !strcmp(argv[2], "plain");
	if (!plain)
		shmctl(shm2, IPC_RMID, NULL);

	uid_t cuid = plain ? 0 : 1234;
	gid_t cgid = plain ? 0 : 55;
	setegid(cgid);
	seteuid(cuid);
	int q = msgget(0xbeef, IPC_CREAT | 0660);
	seteuid(0);
	setegid(0);
	struct msqid_ds qs;
	msgctl(q, IPC_STAT, &qs);
	qs.msg_perm.uid = 1000;
	unsigned long qbytes = plain ? 12000 : 9000;
	qs.msg_qbytes = qbytes;
	msgctl(q, IPC_SET, &qs);
	struct msg m = {7, "first"};
	msgsnd(q, &m, 6, 0);
	m.mtype = 3;
	msgsnd(q, &m, 0, 0);
	m.mtype = 7;
	strcpy(m.text, "third, longer than the first");
	msgsnd(q, &m, strlen(m.text) + 1, 0);

	int sem = semget(IPC_PRIVATE, 5, IPC_CREAT | 0600);
	unsigned short vals[5] = {1, 2, 3, 4, 5};
	union semun arg = {.array = vals};
	semctl(sem, 0, SETALL, arg);
	struct semid_ds ss;
	arg.buf = &ss;
	semctl(sem, 0, IPC_STAT, arg);
	ss.sem_perm.gid = 2000;
	semctl(sem, 0, IPC_SET, arg);

	const char *next = plain ? "-1" : "77";
	if (!plain && put("/proc/sys/kernel/shm_next_id", next))
		return 4;
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d shm=%d,%d msg=%d sem=%d\n", getpid(), shm1, shm2, q, sem);
	while (!term)
		pause();

	const char *why = NULL;
	struct stat now;
	stat("/proc/self/ns/ipc", &now);
	struct shmid_ds d1, d2;
	if (now.st_ino == host.st_ino)
		why = "back in PID 1's IPC namespace";
	else if (!reads("/proc/sys/kernel/sem", "250 32000 64 100") ||
		 !reads("/proc/sys/kernel/msgmax", "4000") || !reads("/proc/sys/kernel/msgmnb", "12000") ||
		 !reads("/proc/sys/fs/mqueue/msg_max", "20") ||
		 !reads("/proc/sys/kernel/shm_next_id", next) ||
		 !reads("/proc/sys/kernel/msg_next_id", "-1"))
		why = "the sysctls";
	else if (shmctl(shm1, IPC_STAT, &d1) < 0 || d1.shm_perm.__key != 0x5eed ||
		 d1.shm_segsz != SHM1_SIZE || (d1.shm_perm.mode & 0777) != 0640 || d1.shm_nattch != 0)
		why = "the first segment's description";
	else if (shmctl(shm2, IPC_STAT, &d2) < 0 || ((d2.shm_perm.mode & SHM_DEST) != 0) == plain ||
		 d2.shm_nattch != 1 || strcmp(kept, "kept attached"))
		why = "the attached segment";
	if (!why && shm3 >= 0) {
		h = shmat(shm3, NULL, SHM_RDONLY);
		struct statfs fs;
		char range[80];
		snprintf(range, sizeof(range), "/proc/self/map_files/%lx-%lx", (unsigned long)h,
			 (unsigned long)h + HUGE_SIZE);
		int hf = h == (char *)-1 ? -1 : open(range, O_RDONLY);
		if (hf < 0 || fstatfs(hf, &fs) || fs.f_type != HUGETLBFS_MAGIC || strcmp(h, "huge 0") ||
		    strcmp(h + HUGE_SIZE - 9, "huge end"))
			why = "the segment of huge pages (its bytes, or its pages)";
		close(hf);
		shmdt(h);
	}
	if (!why) {
		p = shmat(shm1, NULL, SHM_RDONLY);
		for (int i = 0; i < SHM1_SIZE && !why; i++)
			if (p[i] != pattern(i))
				why = "the first segment's bytes";
		shmdt(p);
	}
	if (!why) {
		struct msqid_ds qd;
		if (msgctl(q, IPC_STAT, &qd) < 0 || qd.msg_perm.__key != 0xbeef ||
		    qd.msg_perm.cuid != cuid || qd.msg_perm.cgid != cgid || qd.msg_perm.uid != 1000 ||
		    qd.msg_qbytes != qbytes || qd.msg_qnum != 3 || (qd.msg_perm.mode & 0777) != 0660)
			why = "the queue's description";
	}
	if (!why) {
		struct msg r;
		ssize_t n1 = msgrcv(q, &r, sizeof(r.text), 0, IPC_NOWAIT);
		if (n1 != 6 || r.mtype != 7 || strcmp(r.text, "first"))
			why = "the first message";
		else if (msgrcv(q, &r, sizeof(r.text), 0, IPC_NOWAIT) != 0 || r.mtype != 3)
			why = "the empty message";
		else if (msgrcv(q, &r, sizeof(r.text), 0, IPC_NOWAIT) != 29 || r.mtype != 7 ||
			 strcmp(r.text, "third, longer than the first"))
			why = "the third message";
	}
	if (!why) {
		unsigned short got[5] = {0};
		union semun g = {.array = got};
		struct semid_ds sd;
		union semun gs = {.buf = &sd};
		if (semctl(sem, 0, GETALL, g) < 0 || memcmp(got, vals, sizeof(vals)))
			why = "the semaphore values";
		else if (semctl(sem, 0, IPC_STAT, gs) < 0 || sd.sem_perm.gid != 2000 || sd.sem_nsems != 5)
			why = "the semaphore set's description";
	}
	dprintf(out, why ? "FAIL ipcns: %s\n" : "PASS ipcns\n", why);
	return 0;
}
