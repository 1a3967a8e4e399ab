/*
 * io_uring instances, idle at the checkpoint. argv: OUT [MODE].
 *
 * Default: four instances, their rings mapped.
 *  A: no flags, 8 entries. 600 requests done (NOPs, some posting no completion, writes and
 *     reads of a file), two completions left unreaped, one NOP written and queued but not
 *     submitted. Rings mapped once (the CQ ring shares the SQ ring's mapping), SQEs apart,
 *     both MADV_DONTFORK.
 *  B: CQSIZE (64), SUBMIT_ALL, COOP_TASKRUN, TASKRUN_FLAG, 4 entries; its clock BOOTTIME;
 *     70000 NOPs (its indices wrap its rings many times over); SQ ring, CQ ring and SQEs each
 *     mapped at their own offset.
 *  C: SQE128, CQE32, NO_SQARRAY, 16 entries, 37 NOPs.
 *  D: R_DISABLED, never enabled.
 *  E: no flags, 8 entries: 25 NOPs and 3 SQEs the kernel dropped (an index past its SQ array),
 *     none skipping its completion (so drains stay allowed).
 *  F: files registered in slots 1 (A's file) and 3 (/dev/null) of 4, buffers in slots 0 (in
 *     the data segment) and 2 (a mapping of its own) of 3, an eventfd (from 5, then 3
 *     NOPs); after, its eventfd reads 8, it reads A's file through slot 1 into buffer 2,
 *     finds slot 0 empty, writes buffer 0 to slot 3, and its eventfd counts those 3.
 *  G: made without CAP_IPC_LOCK (its pinned memory charged to root's user), a buffer
 *     registered.
 * Each instance's fdinfo (heads, tails, counters) and the process's io_uring mappings (with
 * their VmFlags) are written down before "ready". On SIGTERM they must read the same, and each instance must work
 * on: A's two completions are there, its queued NOP completes when submitted and a read
 * through it returns the file's bytes; B, C take NOPs (C's 128-byte SQE, 32-byte CQE); A
 * refuses a drain (it skipped completions), E takes one and still counts 3 dropped SQEs; D
 * refuses requests until enabled, then takes one.
 *
 * Modes refused by the dump: "inflight" (a read waits on an empty pipe), "files" (a file
 * registered that no descriptor holds), "sqpoll" (an SQPOLL thread), "iowqaff" (the thread's
 * io-wq workers bound to CPU 0), "remapped" (a registered buffer with a page mapped over it),
 * "ringfdthread" (a second thread registered the ring's descriptor).
 * Mode "worker": A's requests are all forced through io-wq (IOSQE_ASYNC): its worker threads
 * idle at the checkpoint, and the default checks hold. Mode "settle FIFO": see settle_mode;
 * mode "hugebuf": see hugebuf_mode; mode "shared": see shared_mode; mode "ringfd": see
 * ringfd_mode; mode "nommap": see nommap_mode.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/io_uring.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Newer than this system's header. */
#define SETUP_SUBMIT_ALL (1U << 7)
#define SETUP_COOP_TASKRUN (1U << 8)
#define SETUP_TASKRUN_FLAG (1U << 9)
#define SETUP_SQE128 (1U << 10)
#define SETUP_CQE32 (1U << 11)
#define SETUP_NO_SQARRAY (1U << 16)
#define SETUP_NO_MMAP (1U << 14)
#define REGISTER_ENABLE_RINGS 12
#define REGISTER_CLOCK 29
#define SKIP_SUCCESS (1U << 6)

struct ring {
	int fd;
	unsigned flags, sq_entries, cq_entries;
	char *sq, *cq;
	char *sqes;
	unsigned *sq_head, *sq_tail, *sq_array, *sq_dropped, *cq_head, *cq_tail;
	char *cqes;
	size_t sq_len, cq_len, sqes_len;
};

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int setup(struct ring *r, unsigned entries, unsigned flags, unsigned cq, int split)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = flags;
	p.cq_entries = cq;
	r->fd = syscall(__NR_io_uring_setup, entries, &p);
	if (r->fd < 0)
		return -1;
	r->flags = flags;
	r->sq_entries = p.sq_entries;
	r->cq_entries = p.cq_entries;
	size_t cqe = flags & SETUP_CQE32 ? 32 : 16, sqe = flags & SETUP_SQE128 ? 128 : 64;
	r->sq_len = flags & SETUP_NO_SQARRAY ? p.cq_off.cqes + p.cq_entries * cqe
					     : p.sq_off.array + p.sq_entries * 4;
	r->cq_len = p.cq_off.cqes + p.cq_entries * cqe;
	if (!split && r->cq_len > r->sq_len)
		r->sq_len = r->cq_len;
	r->sqes_len = p.sq_entries * sqe;
	r->sq = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
		     IORING_OFF_SQ_RING);
	r->cq = split ? mmap(NULL, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			     r->fd, IORING_OFF_CQ_RING)
		      : r->sq;
	r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
		       IORING_OFF_SQES);
	if (r->sq == MAP_FAILED || r->cq == MAP_FAILED || r->sqes == MAP_FAILED)
		return -1;
	r->sq_head = (unsigned *)(r->sq + p.sq_off.head);
	r->sq_tail = (unsigned *)(r->sq + p.sq_off.tail);
	r->sq_dropped = (unsigned *)(r->sq + p.sq_off.dropped);
	r->sq_array = flags & SETUP_NO_SQARRAY ? NULL : (unsigned *)(r->sq + p.sq_off.array);
	r->cq_head = (unsigned *)(r->cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(r->cq + p.cq_off.tail);
	r->cqes = r->cq + p.cq_off.cqes;
	return 0;
}

/* The next SQE, zeroed; queued (tail moved) by queue(). */
static struct io_uring_sqe *sqe_at(struct ring *r)
{
	unsigned slot = *r->sq_tail & (r->sq_entries - 1);
	size_t size = r->flags & SETUP_SQE128 ? 128 : 64;
	struct io_uring_sqe *s = (void *)(r->sqes + slot * size);
	memset(s, 0, size);
	if (r->sq_array)
		r->sq_array[slot] = slot;
	return s;
}

static void queue(struct ring *r)
{
	__atomic_store_n(r->sq_tail, *r->sq_tail + 1, __ATOMIC_RELEASE);
}

static int enter(struct ring *r, unsigned submit, unsigned wait)
{
	return syscall(__NR_io_uring_enter, r->fd, submit, wait, wait ? IORING_ENTER_GETEVENTS : 0,
		       NULL, 0);
}

/* The CQE at `index`. */
static struct io_uring_cqe *cqe_at(struct ring *r, unsigned index)
{
	size_t size = r->flags & SETUP_CQE32 ? 32 : 16;
	return (void *)(r->cqes + (index & (r->cq_entries - 1)) * size);
}

/* Submits one request prepared by the caller and waits for its completion: its result. */
static int one(struct ring *r, int *res)
{
	queue(r);
	if (enter(r, 1, 1) != 1)
		return -1;
	unsigned h = *r->cq_head;
	if (__atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) == h)
		return -1;
	*res = cqe_at(r, h)->res;
	__atomic_store_n(r->cq_head, h + 1, __ATOMIC_RELEASE);
	return 0;
}

static int nops(struct ring *r, unsigned n, unsigned skip_every)
{
	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *s = sqe_at(r);
		s->opcode = IORING_OP_NOP;
		s->user_data = i;
		if (skip_every && i % skip_every == 0)
			s->flags = SKIP_SUCCESS;
		queue(r);
		if (enter(r, 1, 0) != 1)
			return -1;
		__atomic_store_n(r->cq_head, __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE),
				 __ATOMIC_RELEASE);
	}
	return 0;
}

/* The counters fdinfo shows of `fd`. */
static void counters(int fd, char *out, size_t len)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	ssize_t n = read(f, buf, sizeof(buf) - 1);
	close(f);
	buf[n > 0 ? n : 0] = 0;
	out[0] = 0;
	static const char *keys[] = {"SqMask", "SqHead", "SqTail", "CachedSqHead", "CqMask",
				     "CqHead", "CqTail", "CachedCqTail", "SQEs", "CQEs"};
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		char *p = strstr(buf, keys[k]);
		char *e = p ? strchr(p, '\n') : NULL;
		if (p && e)
			snprintf(out + strlen(out), len - strlen(out), "%.*s ", (int)(e - p), p);
	}
}

/* The process's io_uring mappings, one line each, with their VmFlags. */
static void ring_maps(char *out, size_t len)
{
	char line[512];
	int ring = 0;
	FILE *f = fopen("/proc/self/smaps", "r");
	out[0] = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e, off;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s %lx", &s, &e, perms, &off) == 4) {
			ring = strstr(line, "[io_uring]") != NULL;
			if (ring)
				snprintf(out + strlen(out), len - strlen(out), "%lx-%lx %s %lx ", s, e,
					 perms, off);
		} else if (ring && !strncmp(line, "VmFlags:", 8)) {
			snprintf(out + strlen(out), len - strlen(out), "%s", line + 8);
		}
	}
	fclose(f);
}

/* "ringfdthread": a second thread registers the ring's descriptor, and stays. */
static volatile int ring_registered;
static void *register_ring_thread(void *arg)
{
	struct ring *r = arg;
	struct io_uring_rsrc_update upd = {.offset = 1, .data = r->fd};
	ring_registered =
		syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_RING_FDS, &upd, 1) == 1 ? 1 : -1;
	for (;;)
		pause();
	return NULL;
}

/* Says "ready" with the instance's descriptor `fd`, then waits for SIGTERM. */
static void ready_and_wait(int out, int fd)
{
	char msg[128];
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d fd=%d\n", getpid(), fd);
	write(out, msg, strlen(msg));
	while (!term)
		pause();
}

/* Writes the verdict of mode `mode`: PASS, or FAIL and why. */
static int report(int out, const char *mode, const char *why)
{
	char msg[256];
	if (why)
		snprintf(msg, sizeof(msg), "FAIL uring %s: %s\n", mode, why);
	else
		snprintf(msg, sizeof(msg), "PASS uring %s\n", mode);
	write(out, msg, strlen(msg));
	return 0;
}

static int refused_mode(const char *mode, int out)
{
	struct ring r;
	char msg[256];
	if (!strcmp(mode, "sqpoll")) {
		if (setup(&r, 8, IORING_SETUP_SQPOLL, 0, 0))
			return 2;
	} else {
		if (setup(&r, 8, 0, 0, 0))
			return 2;
	}
	if (!strcmp(mode, "inflight")) {
		static int p[2];
		static char b[16];
		pipe(p);
		struct io_uring_sqe *s = sqe_at(&r);
		s->opcode = IORING_OP_READ;
		s->fd = p[0];
		s->addr = (uintptr_t)b;
		s->len = sizeof(b);
		queue(&r);
		if (enter(&r, 1, 0) != 1)
			return 3;
	} else if (!strcmp(mode, "files")) {
		int fds[1] = {open("/dev/null", O_RDONLY)};
		if (syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_FILES, fds, 1))
			return 3;
		close(fds[0]); /* held by the instance alone */
	} else if (!strcmp(mode, "ringfdthread")) {
		pthread_t t;
		if (pthread_create(&t, NULL, register_ring_thread, &r))
			return 3;
		while (!ring_registered)
			usleep(1000);
		if (ring_registered < 0)
			return 3;
	} else if (!strcmp(mode, "iowqaff")) {
		/* A NOP makes this thread's io-wq; its workers are bound to CPU 0 alone. */
		unsigned long cpus = 1;
		int res;
		sqe_at(&r)->opcode = IORING_OP_NOP;
		if (one(&r, &res) ||
		    syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_IOWQ_AFF, &cpus, sizeof(cpus)))
			return 3;
	} else if (!strcmp(mode, "remapped")) {
		/* A buffer of two pages registered, then a new page mapped over its second. */
		char *b = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		memset(b, 7, 8192);
		struct iovec iov = {b, 8192};
		if (syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_BUFFERS, &iov, 1) ||
		    mmap(b + 4096, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) != b + 4096)
			return 3;
	}
	ready_and_wait(out, r.fd);
	snprintf(msg, sizeof(msg), "PASS uring %s\n", mode);
	write(out, msg, strlen(msg));
	return 0;
}

/*
 * "shared": an instance held by the process and its child, inherited through fork (its rings
 * mapped in both), a buffer registered before the fork (in the parent's memory). After, each
 * finds the counters and ring mappings it noted; the child submits a NOP and reaps it first,
 * then the parent submits one and writes its registered buffer to a pipe through the instance.
 */
static int shared_mode(int out)
{
	struct ring r;
	static char buf[4096], msg[256], before[256], now[256], maps_before[4096], maps_now[4096];
	int res, go[2], done[2], p[2];
	char c = 0;
	if (setup(&r, 8, 0, 0, 0) || nops(&r, 10, 3))
		return 2;
	strcpy(buf, "registered before the fork");
	struct iovec iov = {buf, sizeof(buf)};
	if (syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_BUFFERS, &iov, 1) || pipe(go) ||
	    pipe(done) || pipe(p))
		return 3;
	counters(r.fd, before, sizeof(before));
	pid_t child = fork();
	if (child == 0) {
		ring_maps(maps_before, sizeof(maps_before));
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		counters(r.fd, now, sizeof(now));
		ring_maps(maps_now, sizeof(maps_now));
		sqe_at(&r)->opcode = IORING_OP_NOP;
		c = strcmp(before, now) ? 'c' : strcmp(maps_before, maps_now) ? 'm'
		    : one(&r, &res) || res ? 'n' : 'y';
		write(done[1], &c, 1);
		_exit(0);
	}
	ring_maps(maps_before, sizeof(maps_before));
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d fd=%d child=%d\n", getpid(), r.fd, child);
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	const char *why = NULL;
	counters(r.fd, now, sizeof(now));
	ring_maps(maps_now, sizeof(maps_now));
	if (strcmp(before, now))
		why = "the parent's counters changed";
	else if (strcmp(maps_before, maps_now))
		why = "the parent's ring mappings changed";
	else if (write(go[1], "g", 1) != 1 || read(done[0], &c, 1) != 1 || c != 'y')
		why = c == 'c' ? "the child's counters changed" : c == 'm' ? "the child's ring mappings changed"
		    : "the child's NOP failed";
	struct io_uring_sqe *s = sqe_at(&r);
	s->opcode = IORING_OP_NOP;
	if (!why && (one(&r, &res) || res))
		why = "the parent's NOP after the child's failed";
	s = sqe_at(&r);
	s->opcode = IORING_OP_WRITE_FIXED;
	s->fd = p[1];
	s->addr = (uintptr_t)buf;
	s->len = strlen(buf);
	char back[64] = "";
	if (!why && (one(&r, &res) || res != (int)strlen(buf) || read(p[0], back, sizeof(back)) != res ||
		     memcmp(back, buf, res)))
		why = "the registered buffer was not written through the instance";
	waitpid(child, NULL, 0);
	return report(out, "shared", why);
}

/*
 * "ringfd": an instance whose descriptor the main thread registered as its ring descriptor 2
 * (IORING_REGISTER_RING_FDS), NOPs submitted through it. After, a NOP goes through ring
 * descriptor 2 again, and ring descriptor 0, never registered, is refused.
 */
static int ringfd_mode(int out)
{
	struct ring r;
	struct io_uring_rsrc_update upd = {.offset = 2};
	if (setup(&r, 8, 0, 0, 0))
		return 2;
	upd.data = r.fd;
	if (syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_RING_FDS, &upd, 1) != 1)
		return 3;
	for (int i = 0; i < 3; i++) {
		sqe_at(&r)->opcode = IORING_OP_NOP;
		queue(&r);
		if (syscall(__NR_io_uring_enter, 2, 1, 1,
			    IORING_ENTER_GETEVENTS | IORING_ENTER_REGISTERED_RING, NULL, 0) != 1)
			return 4;
		*r.cq_head = *r.cq_tail;
	}
	ready_and_wait(out, r.fd);
	const char *why = NULL;
	sqe_at(&r)->opcode = IORING_OP_NOP;
	queue(&r);
	if (syscall(__NR_io_uring_enter, 2, 1, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_REGISTERED_RING,
		    NULL, 0) != 1 || *r.cq_tail != 4)
		why = "ring descriptor 2 does not reach the instance";
	else if (syscall(__NR_io_uring_enter, 0, 0, 0, IORING_ENTER_REGISTERED_RING, NULL, 0) != -1)
		why = "ring descriptor 0 was registered";
	return report(out, "ringfd", why);
}

/*
 * "nommap": an instance set up on the process's own memory (IORING_SETUP_NO_MMAP), its rings
 * and SQEs in a shared anonymous mapping (as PostgreSQL 18 makes its backends' in its shared
 * memory before it forks them), held by the process and its child: 40 NOPs, some skipping
 * their completion, and one more whose completion is left unreaped. After, each finds the
 * counters it noted; the child submits a NOP and waits for two completions (without reaping);
 * then the parent finds the unreaped one and the child's, reaps them, and takes a NOP too.
 */
static int nommap_mode(int out)
{
	struct ring r;
	struct io_uring_params p;
	static char msg[256], before[256], now[256];
	int res, go[2], done[2];
	char c = 0;
	char *mem = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	memset(&p, 0, sizeof(p));
	p.flags = SETUP_NO_MMAP;
	p.cq_off.resv2 = (uintptr_t)mem;	  /* user_addr: its rings */
	p.sq_off.resv2 = (uintptr_t)(mem + 4096); /* user_addr: its SQEs */
	r.fd = syscall(__NR_io_uring_setup, 8, &p);
	if (r.fd < 0)
		return 2;
	r.flags = SETUP_NO_MMAP;
	r.sq_entries = p.sq_entries;
	r.cq_entries = p.cq_entries;
	r.sq = r.cq = mem;
	r.sqes = mem + 4096;
	r.sq_head = (unsigned *)(mem + p.sq_off.head);
	r.sq_tail = (unsigned *)(mem + p.sq_off.tail);
	r.sq_dropped = (unsigned *)(mem + p.sq_off.dropped);
	r.sq_array = (unsigned *)(mem + p.sq_off.array);
	r.cq_head = (unsigned *)(mem + p.cq_off.head);
	r.cq_tail = (unsigned *)(mem + p.cq_off.tail);
	r.cqes = mem + p.cq_off.cqes;
	if (nops(&r, 40, 4))
		return 3;
	struct io_uring_sqe *s = sqe_at(&r);
	s->opcode = IORING_OP_NOP;
	s->user_data = 4242;
	queue(&r);
	if (enter(&r, 1, 1) != 1 || pipe(go) || pipe(done))
		return 3;
	counters(r.fd, before, sizeof(before));
	pid_t child = fork();
	if (child == 0) {
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		counters(r.fd, now, sizeof(now));
		sqe_at(&r)->opcode = IORING_OP_NOP;
		queue(&r);
		c = strcmp(before, now) ? 'c' : enter(&r, 1, 2) != 1 ? 'n' : 'y';
		write(done[1], &c, 1);
		_exit(0);
	}
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d fd=%d child=%d\n", getpid(), r.fd, child);
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	const char *why = NULL;
	counters(r.fd, now, sizeof(now));
	if (strcmp(before, now))
		why = "the parent's counters changed";
	else if (write(go[1], "g", 1) != 1 || read(done[0], &c, 1) != 1 || c != 'y')
		why = c == 'c' ? "the child's counters changed" : "the child's NOP failed";
	else if (*r.cq_tail - *r.cq_head != 2 || cqe_at(&r, *r.cq_head)->user_data != 4242)
		why = "the unreaped completion and the child's are not both there";
	*r.cq_head += 2;
	sqe_at(&r)->opcode = IORING_OP_NOP;
	if (!why && (one(&r, &res) || res))
		why = "the parent's NOP failed";
	waitpid(child, NULL, 0);
	return report(out, "nommap", why);
}

/*
 * "hugebuf": a buffer of 3 MiB registered from 1 MiB + 123 bytes into a 2 MiB-aligned area
 * in transparent huge pages (where the kernel gives them: the instance holds it by folios),
 * carried. After, the area keeps its bytes, and the instance writes from the buffer's end
 * (WRITE_FIXED) and reads into its middle (READ_FIXED) through a memfd.
 */
static int hugebuf_mode(int out)
{
	struct ring r;
	char msg[256], line[256];
	const size_t huge = 2 << 20, len = 3 << 20;
	if (setup(&r, 8, 0, 0, 0))
		return 2;
	char *area = mmap(NULL, 4 * huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *base = (char *)(((uintptr_t)area + huge - 1) & ~(huge - 1));
	madvise(base, 3 * huge, MADV_HUGEPAGE);
	for (size_t i = 0; i < 3 * huge; i++)
		base[i] = (char)(i * 7 + 3);
	char *buf = base + huge / 2 + 123;
	struct iovec iov = {buf, len};
	if (syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_BUFFERS, &iov, 1))
		return 3;
	long thp = 0;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	while (f && fgets(line, sizeof(line), f))
		sscanf(line, "AnonHugePages: %ld", &thp);
	if (f)
		fclose(f);
	int mfd = memfd_create("hugebuf", 0);
	if (mfd < 0 || ftruncate(mfd, 8192))
		return 4;
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d fd=%d thp=%d\n", getpid(), r.fd, thp > 0);
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	const char *why = NULL;
	static char back[5000];
	int res;
	for (size_t i = 0; i < 3 * huge && !why; i++)
		if (base[i] != (char)(i * 7 + 3))
			why = "the area's bytes changed";
	struct io_uring_sqe *s = sqe_at(&r);
	s->opcode = IORING_OP_WRITE_FIXED;
	s->fd = mfd;
	s->addr = (uintptr_t)(buf + len - sizeof(back));
	s->len = sizeof(back);
	if (!why && (one(&r, &res) || res != (int)sizeof(back) ||
		     pread(mfd, back, sizeof(back), 0) != (ssize_t)sizeof(back) ||
		     memcmp(back, buf + len - sizeof(back), sizeof(back))))
		why = "a write from the buffer's end wrote other bytes";
	pwrite(mfd, "hello huge", 10, 100);
	s = sqe_at(&r);
	s->opcode = IORING_OP_READ_FIXED;
	s->fd = mfd;
	s->addr = (uintptr_t)(buf + huge);
	s->len = 10;
	s->off = 100;
	if (!why && (one(&r, &res) || res != 10 || memcmp(buf + huge, "hello huge", 10)))
		why = "a read into the buffer's middle did not land there";
	return report(out, "hugebuf", why);
}

/*
 * "settle FIFO": an open of FIFO for reading, forced through io-wq (IOSQE_ASYNC), where it
 * blocks until a writer comes (an open is no poll), submitted by a second thread: in flight
 * when the dump comes; the test opens FIFO for writing meanwhile. After the restore its completion must be in the ring, and
 * its descriptor a FIFO's.
 */
struct settle {
	struct ring r;
	const char *fifo;
	int submitted;
};

/* The submitter: a thread that stays (a task's requests die with it). */
static void *settle_thread(void *arg)
{
	struct settle *st = arg;
	struct io_uring_sqe *s = sqe_at(&st->r);
	s->opcode = IORING_OP_OPENAT;
	s->fd = AT_FDCWD;
	s->addr = (uintptr_t)st->fifo;
	s->open_flags = O_RDONLY;
	s->flags = IOSQE_ASYNC;
	s->user_data = 99;
	queue(&st->r);
	__atomic_store_n(&st->submitted, enter(&st->r, 1, 0) == 1 ? 1 : -1, __ATOMIC_RELEASE);
	for (;;)
		pause();
	return NULL;
}

static int settle_mode(int out, const char *fifo)
{
	static struct settle set;
	struct ring r;
	char msg[256];
	pthread_t t;
	set.fifo = fifo;
	if (setup(&set.r, 8, 0, 0, 0) || pthread_create(&t, NULL, settle_thread, &set))
		return 2;
	while (!__atomic_load_n(&set.submitted, __ATOMIC_ACQUIRE))
		usleep(1000);
	if (set.submitted < 0)
		return 3;
	r = set.r;
	ready_and_wait(out, r.fd);
	unsigned h = *r.cq_head;
	const char *why = NULL;
	struct stat st;
	if (*r.cq_tail != h + 1 || cqe_at(&r, h)->user_data != 99)
		why = "the open's completion is not in the ring";
	else if (cqe_at(&r, h)->res < 0 || fstat(cqe_at(&r, h)->res, &st) || !S_ISFIFO(st.st_mode))
		why = "the open's descriptor is not the FIFO's";
	snprintf(msg, sizeof(msg), why ? "FAIL uring: %s\n" : "PASS uring settle\n", why);
	write(out, msg, strlen(msg));
	return 0;
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	const char *mode = argc > 2 ? argv[2] : "idle";
	char msg[9100];
	if (!strcmp(mode, "settle"))
		return settle_mode(out, argv[3]);
	if (!strcmp(mode, "hugebuf"))
		return hugebuf_mode(out);
	if (!strcmp(mode, "shared"))
		return shared_mode(out);
	if (!strcmp(mode, "ringfd"))
		return ringfd_mode(out);
	if (!strcmp(mode, "nommap"))
		return nommap_mode(out);
	if (strcmp(mode, "idle") && strcmp(mode, "worker"))
		return refused_mode(mode, out);
	unsigned async = !strcmp(mode, "worker") ? IOSQE_ASYNC : 0;

	struct ring a, b, c, d, e, f, g;
	if (setup(&a, 8, 0, 0, 0) || setup(&e, 8, 0, 0, 0) || setup(&f, 8, 0, 0, 0) ||
	    setup(&b, 4, IORING_SETUP_CQSIZE | SETUP_SUBMIT_ALL | SETUP_COOP_TASKRUN |
			     SETUP_TASKRUN_FLAG, 64, 1) ||
	    setup(&c, 16, SETUP_SQE128 | SETUP_CQE32 | SETUP_NO_SQARRAY, 0, 0) ||
	    setup(&d, 8, IORING_SETUP_R_DISABLED, 0, 0))
		return 2;
	struct {
		uint32_t clockid, resv[3];
	} clk = {CLOCK_BOOTTIME, {0}};
	if (syscall(__NR_io_uring_register, b.fd, REGISTER_CLOCK, &clk, 0))
		return 3;

	/* A: a file written and read through it, NOPs between. */
	char path[] = "/tmp/uring-XXXXXX";
	int file = mkstemp(path);
	unlink(path);
	static char data[4096], back[4096];
	for (int i = 0; i < 600; i++) {
		struct io_uring_sqe *s = sqe_at(&a);
		int res;
		snprintf(data, sizeof(data), "block %d of %d", i / 3, getpid());
		if (i % 3 == 0) {
			s->opcode = IORING_OP_WRITE;
			s->fd = file;
			s->addr = (uintptr_t)data;
			s->len = 64;
			s->off = (i / 3) * 64;
		} else if (i % 3 == 1) {
			s->opcode = IORING_OP_READ;
			s->fd = file;
			s->addr = (uintptr_t)back;
			s->len = 64;
			s->off = (i / 3) * 64;
		} else {
			s->opcode = IORING_OP_NOP;
		}
		s->flags = async;
		s->user_data = i;
		if (one(&a, &res) || (i % 3 != 2 && res != 64))
			return 4;
		if (i % 3 == 1 && strcmp(back, data))
			return 5;
	}
	/* Two completions left unreaped, a NOP skipping its own, one queued unsubmitted. */
	for (int i = 0; i < 3; i++) {
		struct io_uring_sqe *s = sqe_at(&a);
		s->opcode = IORING_OP_NOP;
		s->user_data = 1000 + i;
		s->flags = (i == 1 ? SKIP_SUCCESS : 0) | async;
		queue(&a);
		if (enter(&a, 1, i == 1 ? 0 : 1) != 1)
			return 6;
	}
	struct io_uring_sqe *queued = sqe_at(&a);
	queued->opcode = IORING_OP_NOP;
	queued->user_data = 777;
	queue(&a);
	if (nops(&b, 70000, 7) || nops(&c, 37, 5))
		return 7;
	/* E: SQEs the kernel drops (an index past its SQ array), no completion skipped. */
	if (nops(&e, 20, 0))
		return 7;
	for (int i = 0; i < 3; i++) {
		struct io_uring_sqe *s = sqe_at(&e);
		s->opcode = IORING_OP_NOP;
		e.sq_array[*e.sq_tail & (e.sq_entries - 1)] = e.sq_entries;
		queue(&e);
		if (enter(&e, 1, 0) != 0)
			return 7;
	}
	if (nops(&e, 5, 0) || *e.sq_dropped != 3)
		return 7;
	/* F: files registered in slots 1 and 3 of 4, buffers in slots 0 and 2 of 3. */
	static char fbuf[8192];
	char *mbuf = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int nul = open("/dev/null", O_WRONLY);
	int ftable[4] = {-1, file, -1, nul};
	struct iovec btable[3] = {{fbuf, sizeof(fbuf)}, {NULL, 0}, {mbuf, 4096}};
	int efd = eventfd(5, 0);
	if (syscall(__NR_io_uring_register, f.fd, IORING_REGISTER_FILES, ftable, 4) ||
	    syscall(__NR_io_uring_register, f.fd, IORING_REGISTER_BUFFERS, btable, 3) ||
	    syscall(__NR_io_uring_register, f.fd, IORING_REGISTER_EVENTFD, &efd, 1) || nops(&f, 3, 0))
		return 8;
	/* G: made without CAP_IPC_LOCK, a buffer registered: its pinned memory is charged. */
	struct {
		uint32_t version;
		int pid;
	} hdr = {0x20080522, 0};
	uint32_t caps[6], nolock[6];
	static char gbuf[4096];
	struct iovec gtable[1] = {{gbuf, sizeof(gbuf)}};
	if (syscall(__NR_capget, &hdr, caps))
		return 9;
	memcpy(nolock, caps, sizeof(caps));
	nolock[0] &= ~(1U << 14);
	if (syscall(__NR_capset, &hdr, nolock) || setup(&g, 8, 0, 0, 0) ||
	    syscall(__NR_capset, &hdr, caps) ||
	    syscall(__NR_io_uring_register, g.fd, IORING_REGISTER_BUFFERS, gtable, 1))
		return 9;
	/* As liburing may: A's rings are not passed on to children. */
	if (madvise(a.sq, a.sq_len, MADV_DONTFORK) || madvise(a.sqes, a.sqes_len, MADV_DONTFORK))
		return 8;

	char before[7][256], maps_before[4096], now[256], maps_now[4096];
	struct ring *rings[7] = {&a, &b, &c, &d, &e, &f, &g};
	for (int i = 0; i < 7; i++)
		counters(rings[i]->fd, before[i], sizeof(before[i]));
	ring_maps(maps_before, sizeof(maps_before));
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d a=%d b=%d c=%d d=%d e=%d f=%d g=%d\n", getpid(),
		 a.fd, b.fd, c.fd, d.fd, e.fd, f.fd, g.fd);
	write(out, msg, strlen(msg));
	while (!term)
		pause();

	const char *why = NULL;
	static char whybuf[9000];
	ring_maps(maps_now, sizeof(maps_now));
	for (int i = 0; i < 7 && !why; i++) {
		counters(rings[i]->fd, now, sizeof(now));
		if (strcmp(now, before[i])) {
			snprintf(whybuf, sizeof(whybuf), "ring %c counters: %s, not %s", 'a' + i, now,
				 before[i]);
			why = whybuf;
		}
	}
	if (!why && strcmp(maps_now, maps_before)) {
		snprintf(whybuf, sizeof(whybuf), "mappings now:\n%s, not:\n%s", maps_now, maps_before);
		why = whybuf;
	}
	int res;
	if (!why) {
		/* A: the two completions left, then the queued NOP's. */
		unsigned h = *a.cq_head;
		if (*a.cq_tail - h != 2 || cqe_at(&a, h)->user_data != 1000 ||
		    cqe_at(&a, h + 1)->user_data != 1002)
			why = "ring a lost its unreaped completions";
		else {
			__atomic_store_n(a.cq_head, h + 2, __ATOMIC_RELEASE);
			if (enter(&a, 1, 1) != 1 || *a.cq_tail != h + 3 ||
			    cqe_at(&a, h + 2)->user_data != 777)
				why = "ring a's queued NOP did not complete";
			else
				__atomic_store_n(a.cq_head, h + 3, __ATOMIC_RELEASE);
		}
	}
	if (!why) {
		struct io_uring_sqe *s = sqe_at(&a);
		s->opcode = IORING_OP_READ;
		s->fd = file;
		s->addr = (uintptr_t)back;
		s->len = 64;
		s->off = 64 * 5;
		snprintf(data, sizeof(data), "block %d of %d", 5, getpid());
		if (one(&a, &res) || res != 64 || strcmp(back, data))
			why = "a read through ring a failed";
	}
	if (!why) {
		unsigned tail = *b.cq_tail;
		struct io_uring_sqe *s = sqe_at(&b);
		s->opcode = IORING_OP_NOP;
		s->user_data = 4242;
		if (one(&b, &res) || res != 0 || cqe_at(&b, tail)->user_data != 4242)
			why = "ring b took no NOP";
	}
	if (!why) {
		unsigned tail = *c.cq_tail;
		struct io_uring_sqe *s = sqe_at(&c);
		s->opcode = IORING_OP_NOP;
		s->user_data = 4343;
		if (one(&c, &res) || res != 0 || cqe_at(&c, tail)->user_data != 4343)
			why = "ring c took no NOP (128-byte SQEs, 32-byte CQEs)";
	}
	if (!why) {
		/* A skipped completions: drains are refused there; not in E, which dropped SQEs. */
		struct io_uring_sqe *s = sqe_at(&a);
		s->opcode = IORING_OP_NOP;
		s->flags = IOSQE_IO_DRAIN;
		if (one(&a, &res) || res != -EOPNOTSUPP)
			why = "ring a takes drains";
		s = sqe_at(&e);
		s->opcode = IORING_OP_NOP;
		s->flags = IOSQE_IO_DRAIN;
		if (!why && (*e.sq_dropped != 3 || one(&e, &res) || res != 0))
			why = "ring e lost its dropped count or refuses drains";
	}
	uint64_t signals = 0;
	if (!why && (read(efd, &signals, 8) != 8 || signals != 8))
		why = "ring f's eventfd did not count 5 + 3 completions";
	if (!why) {
		/* F: the file in slot 1 read into the buffer in slot 2; slot 0 has no file. */
		struct io_uring_sqe *s = sqe_at(&f);
		s->opcode = IORING_OP_READ_FIXED;
		s->fd = 1;
		s->flags = IOSQE_FIXED_FILE;
		s->addr = (uintptr_t)mbuf;
		s->len = 64;
		s->off = 64 * 7;
		s->buf_index = 2;
		snprintf(data, sizeof(data), "block %d of %d", 7, getpid());
		if (one(&f, &res) || res != 64 || strcmp(mbuf, data))
			why = "ring f cannot read its registered file into its registered buffer";
		s = sqe_at(&f);
		s->opcode = IORING_OP_READ;
		s->fd = 0;
		s->flags = IOSQE_FIXED_FILE;
		s->addr = (uintptr_t)back;
		s->len = 8;
		if (!why && (one(&f, &res) || res != -EBADF))
			why = "ring f's empty file slot holds a file";
		s = sqe_at(&f);
		s->opcode = IORING_OP_WRITE_FIXED;
		s->fd = 3;
		s->flags = IOSQE_FIXED_FILE;
		s->addr = (uintptr_t)fbuf;
		s->len = 100;
		s->buf_index = 0;
		if (!why && (one(&f, &res) || res != 100))
			why = "ring f cannot write its first buffer to /dev/null (slot 3)";
		if (!why && (read(efd, &signals, 8) != 8 || signals != 3))
			why = "ring f's eventfd is not signalled by its completions";
	}
	if (!why) {
		struct io_uring_sqe *s = sqe_at(&d);
		s->opcode = IORING_OP_NOP;
		queue(&d);
		if (enter(&d, 1, 0) != -1 || errno != EBADFD)
			why = "ring d is not disabled";
		else if (syscall(__NR_io_uring_register, d.fd, REGISTER_ENABLE_RINGS, NULL, 0))
			why = "ring d cannot be enabled";
		else if (enter(&d, 1, 1) != 1 || *d.cq_tail != 1)
			why = "ring d took no NOP once enabled";
	}
	if (why)
		snprintf(msg, sizeof(msg), "FAIL uring: %s\n", why);
	else
		snprintf(msg, sizeof(msg), "PASS uring %s\n", mode);
	write(out, msg, strlen(msg));
	return 0;
}
