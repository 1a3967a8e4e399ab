/*
 * Page copier: runs in criu's own process (not in a task), on threads of criu's and on the
 * dumper's own. It fills a pages file from a stopped task, chunk after chunk: each chunk read
 * from the task into the caller's buffer (process_vm_readv, or /proc/PID/mem past what that
 * cannot read) and written at its place in the file (pwrite). Whoever comes takes the next
 * chunk, so the reads run on every core at once. No JavaScript runs on a copier's thread: one
 * is ready the moment it is started.
 *
 *   entry(op, a, b)
 *     op 0  copier: takes the chunks of every job of queue a, in order, with buffer b, waiting
 *           for jobs to come until the queue is closed; returns 0
 *     op 1  help: takes the chunks left of job a with buffer b; returns the bytes it wrote
 *     op 2  wait: returns once job a is done (nothing left to take, no chunk being copied)
 *
 *   struct queue  0 posted (s32, futex: moves at each job posted and at close)
 *                 4 closed (s32)   8 first job's address (u64)
 *   struct job    (u64 words but the first four)
 *      0 next chunk to take (s32)   4 stop (s32)   8 chunks being copied (s32, futex)
 *     12 writeback (s32: the file is on a disk; each chunk's writeback is started once written)
 *     16 chunks   24 pid   32 fd of the pages file   40 lenient (unreadable pages are zeros)
 *     48 next job's address   56 bytes written
 *     64 errno of the first failure   72 its kind (1 read, 2 write, 3 open)
 *     80 its address (in the task, or offset in the file)   88 bytes got   96 bytes wanted
 *    104 "/proc/PID/mem\0" (24 bytes)
 *    128 per chunk: offset in the file, first iovec, iovec count, bytes
 *        then the iovecs: address in the task, length
 *
 * Freestanding: no libc, no globals, position independent; the entry point is the first byte.
 */
#include "syscall.h"

#define NR_process_vm_readv 310
#define NR_pwrite64 18
#define NR_futex 202
#define NR_sync_file_range 277
#define SYNC_FILE_RANGE_WRITE 2
#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129
#define O_RDONLY_CLOEXEC 02000000
#define EIO 5
#define PAGE 4096

struct queue {
	int posted;
	int closed;
	u64 first;
};

struct job {
	int next;
	int stop;
	int inflight;
	int writeback;
	u64 nchunks;
	u64 pid;
	u64 fd;
	u64 lenient;
	u64 next_job;
	u64 written;
	u64 err;
	u64 err_kind;
	u64 err_at;
	u64 err_got;
	u64 err_len;
	char mem_path[24];
	u64 chunks[];
};

#define LOAD(p) __atomic_load_n(p, __ATOMIC_ACQUIRE)

static void futex_wait(int *word, int seen)
{
	sys6(NR_futex, (s64)word, FUTEX_WAIT_PRIVATE, seen, 0, 0, 0);
}

static void futex_wake(int *word)
{
	sys6(NR_futex, (s64)word, FUTEX_WAKE_PRIVATE, 0x7fffffff, 0, 0, 0);
}

/* The first failure of the job is kept; every participant stops taking chunks. */
static void fail(struct job *j, u64 kind, s64 err, u64 at, u64 got, u64 len)
{
	u64 none = 0;
	if (__atomic_compare_exchange_n(&j->err, &none, (u64)err, 0, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE)) {
		j->err_kind = kind;
		j->err_at = at;
		j->err_got = got;
		j->err_len = len;
	}
	__atomic_store_n(&j->stop, 1, __ATOMIC_RELEASE);
}

static s64 pread_again(s64 fd, char *buf, u64 len, u64 at)
{
	s64 r;
	do
		r = sys6(NR_pread64, fd, (s64)buf, len, at, 0, 0);
	while (r == -EINTR);
	return r;
}

static void zero(char *p, u64 len)
{
	for (u64 i = 0; i < len / 8; i++)
		((volatile u64 *)p)[i] = 0;
}

/* Fills buf from the iovecs through /proc/PID/mem; with lenient, what is gone reads as zeros. */
static int read_mem(struct job *j, u64 *iov, u64 n, char *buf)
{
	s64 fd = sys3(NR_open, (s64)j->mem_path, O_RDONLY_CLOEXEC, 0);
	if (fd < 0) {
		fail(j, 3, -fd, 0, 0, 0);
		return -1;
	}
	u64 off = 0;
	int ok = 0;
	for (u64 i = 0; i < n; i++) {
		u64 at = iov[2 * i], len = iov[2 * i + 1];
		s64 got = pread_again(fd, buf + off, len, at);
		if (got < 0 && !j->lenient) {
			fail(j, 1, -got, at, 0, len);
			ok = -1;
			break;
		}
		if (got < 0)
			got = 0;
		if ((u64)got != len && j->lenient) {
			/* Page by page: what is still there, and zeros for the rest. */
			for (u64 p = (u64)got / PAGE * PAGE; p < len; p += PAGE) {
				if (pread_again(fd, buf + off + p, PAGE, at + p) != PAGE)
					zero(buf + off + p, PAGE);
			}
		} else if ((u64)got != len) {
			fail(j, 1, EIO, at, got, len);
			ok = -1;
			break;
		}
		off += len;
	}
	sys3(NR_close, fd, 0, 0);
	return ok;
}

static int copy_chunk(struct job *j, u64 c, char *buf)
{
	u64 *chunk = &j->chunks[4 * c];
	u64 off = chunk[0], bytes = chunk[3];
	u64 *iov = &j->chunks[4 * j->nchunks] + 2 * chunk[1];
	u64 local[2] = { (u64)buf, bytes };
	s64 got = sys6(NR_process_vm_readv, j->pid, (s64)local, 1, (s64)iov, chunk[2], 0);
	if ((u64)got != bytes && read_mem(j, iov, chunk[2], buf))
		return -1;
	for (u64 done = 0; done < bytes;) {
		s64 w = sys6(NR_pwrite64, j->fd, (s64)(buf + done), bytes - done, off + done, 0, 0);
		if (w == -EINTR)
			continue;
		if (w <= 0) {
			fail(j, 2, w < 0 ? -w : EIO, off + done, done, bytes);
			return -1;
		}
		done += w;
	}
	/* The disk takes the chunk while the copy goes on: the final fsync waits for less. A
	 * failure here is the fsync's to report. */
	if (j->writeback)
		sys6(NR_sync_file_range, j->fd, off, bytes, SYNC_FILE_RANGE_WRITE, 0, 0);
	__atomic_add_fetch(&j->written, bytes, __ATOMIC_RELEASE);
	return 0;
}

/* Takes chunks of the job until none is left or it is stopped; returns the bytes written. */
static s64 copy_chunks(struct job *j, char *buf)
{
	s64 total = 0;
	while (!LOAD(&j->stop)) {
		/* Counted as copying before taking: a waiter never sees none left and none copying
		 * while a chunk is between the two. */
		__atomic_add_fetch(&j->inflight, 1, __ATOMIC_ACQ_REL);
		u64 c = (u64)__atomic_fetch_add(&j->next, 1, __ATOMIC_ACQ_REL);
		int go = c < j->nchunks && !LOAD(&j->stop);
		int ok = go && copy_chunk(j, c, buf) == 0;
		if (ok)
			total += j->chunks[4 * c + 3];
		if (__atomic_sub_fetch(&j->inflight, 1, __ATOMIC_ACQ_REL) == 0)
			futex_wake(&j->inflight);
		if (!ok)
			break;
	}
	return total;
}

static void wait_job(struct job *j)
{
	for (;;) {
		int copying = LOAD(&j->inflight);
		if (!copying && ((u64)LOAD(&j->next) >= j->nchunks || LOAD(&j->stop)))
			return;
		futex_wait(&j->inflight, copying);
	}
}

static void copier(struct queue *q, char *buf)
{
	struct job *cur = 0;
	for (;;) {
		int seen = LOAD(&q->posted);
		u64 next = cur ? LOAD(&cur->next_job) : LOAD(&q->first);
		if (next) {
			cur = (struct job *)next;
			copy_chunks(cur, buf);
			continue;
		}
		if (LOAD(&q->closed))
			return;
		futex_wait(&q->posted, seen);
	}
}

__attribute__((section(".text.entry"), used)) s64 copier_entry(s64 op, u64 a, u64 b)
{
	switch (op) {
	case 0:
		copier((struct queue *)a, (char *)b);
		return 0;
	case 1:
		return copy_chunks((struct job *)a, (char *)b);
	case 2:
		wait_job((struct job *)a);
		return 0;
	}
	return -1;
}
