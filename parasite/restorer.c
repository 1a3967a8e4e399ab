/*
 * Restorer: runs inside the task being restored and rebuilds its address space from a list of
 * operations that the restorer side (src/restore/) computed. Executing a list keeps the blob
 * small and free of policy: which mapping goes where, which pages come from which offset of
 * pages-N.img, is decided in TypeScript.
 *
 *   struct args (u64 words)
 *     0  nops
 *     8  ops      address of struct op[nops]
 *    16  done     0 while running, 1 when finished
 *    24  failed   index of the failing op, or -1
 *    32  result   -errno of the failing op, or 0
 *    40  compared pages PREAD_CMP compared with what the task inherited
 *    48  kept     of those, pages left as they were (still shared with the parent)
 *
 *   struct op { u64 code, a, b, c, d, e, f; }   (56 bytes)
 *     MUNMAP   addr len
 *     MREMAP   old len new              move a mapping (vdso, vvar) to a fixed address
 *     MMAP     addr len prot flags fd off (MAP_FIXED is added)
 *     PREAD    fd addr len off          loops until len bytes are in
 *     MPROTECT addr len prot
 *     MADVISE  addr len advice          f != 0: failure is not an error
 *     SHMAT    shmid addr flags         attach a System V segment at addr
 *     PREAD_CMP fd addr len off buf buflen  like PREAD, through buf, writing only the pages
 *                                       that differ from what is at addr: memory inherited
 *                                       from the parent stays shared (copy-on-write) where
 *                                       it is the same
 *     SPAWN    n stack helper           the next n ops (PREAD, COPY) run on a thread of the
 *                                       task's own, started on `stack` with its state at
 *                                       `helper` (struct helper), beside the ops after them:
 *                                       both cores fill the memory. Run here if no thread starts
 *     JOIN     helper                   waits until that thread has run its ops and gone; fails
 *                                       as it failed
 *     CALLS    calls n                  runs n syscalls (struct call, calls.h), each result,
 *                                       -errno on failure, into its entry; never fails (criu
 *                                       reads the results)
 *     SOURCE_OPEN slot fd base len      maps pages file fd (read only) at base and makes a
 *                                       userfaultfd, its number in the u64 at slot (-1 when
 *                                       either cannot be had); never fails
 *     COPY     fd addr len off src slot  fills a fresh anonymous range from src (in the
 *                                       source's mapping) by UFFDIO_COPY, no zeroing first;
 *                                       what that cannot fill is read like PREAD
 *     SOURCE_CLOSE slot base len        closes the userfaultfd and unmaps the source
 *
 *   struct helper
 *     0  running  u32: non-zero until the thread has gone (the kernel clears it and wakes the
 *                 futex: CLONE_CHILD_CLEARTID)
 *     4  tid      u32: the thread's id, for criu to wait until it is free again
 *                 (CLONE_PARENT_SETTID); 0 when none started
 *     8  n, 16 ops, 24 failed (index among its ops, or -1), 32 result (-errno)   (u64 words)
 *
 * The thread is untraced (criu clears PTRACE_O_TRACECLONE while the blob runs), has every
 * signal blocked, as the task does here, and exits on its own.
 *
 * When done it sleeps in pause() with every signal blocked until the restorer interrupts it.
 * Freestanding: no libc, no globals, position independent; the entry point is the first byte.
 */
#include "calls.h"

enum {
	OP_MUNMAP = 1,
	OP_MREMAP,
	OP_MMAP,
	OP_PREAD,
	OP_MPROTECT,
	OP_MADVISE,
	OP_SHMAT,
	OP_PREAD_CMP,
	OP_SPAWN,
	OP_JOIN,
	OP_CALLS,
	OP_SOURCE_OPEN,
	OP_COPY,
	OP_SOURCE_CLOSE,
};

#define PAGE_SIZE 4096

#define NR_ioctl 16
#define NR_userfaultfd 323
#define PROT_READ 1
#define MAP_PRIVATE 2
#define MAP_FIXED_NOREPLACE 0x100000
#define O_CLOEXEC 02000000
#define UFFD_USER_MODE_ONLY 1
#define UFFD_API 0xaa
#define UFFDIO_API 0xc018aa3f
#define UFFDIO_REGISTER 0xc020aa00
#define UFFDIO_UNREGISTER 0x8010aa01
#define UFFDIO_COPY 0xc028aa03
#define UFFDIO_REGISTER_MODE_MISSING 1
#define EAGAIN 11

#define MAP_FIXED 0x10
#define MREMAP_MAYMOVE 1
#define MREMAP_FIXED 2

#define NR_futex 202
#define FUTEX_WAIT 0
/* CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |
 * CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID */
#define HELPER_CLONE_FLAGS 0x350f00

struct op {
	u64 code, a, b, c, d, e, f;
};


struct args {
	u64 nops;
	struct op *ops;
	volatile s64 done;
	s64 failed;
	s64 result;
	u64 compared;
	u64 kept;
};

/* Reads len bytes at off of fd into buf, whole. */
static s64 read_full(u64 fd, u64 buf, u64 len, u64 off)
{
	while (len) {
		s64 ret = sys6(NR_pread64, fd, buf, len, off, 0, 0);
		if (ret == -EINTR)
			continue;
		if (ret < 0)
			return ret;
		if (ret == 0)
			return -5; /* EIO: the pages file ended early */
		buf += ret;
		off += ret;
		len -= ret;
	}
	return 0;
}

static int same_page(const u64 *a, const u64 *b)
{
	for (u64 i = 0; i < PAGE_SIZE / 8; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

static s64 pread_cmp(const struct op *o, struct args *a)
{
	u64 addr = o->b, left = o->c, off = o->d, buf = o->e;
	while (left) {
		u64 n = left < o->f ? left : o->f;
		s64 ret = read_full(o->a, buf, n, off);
		if (ret < 0)
			return ret;
		for (u64 p = 0; p < n; p += PAGE_SIZE) {
			u64 *dst = (u64 *)(addr + p);
			const u64 *src = (const u64 *)(buf + p);
			a->compared++;
			if (same_page(dst, src)) {
				a->kept++;
				continue;
			}
			for (u64 i = 0; i < PAGE_SIZE / 8; i++)
				dst[i] = src[i];
		}
		addr += n;
		off += n;
		left -= n;
	}
	return 0;
}

/*
 * Filling fresh anonymous memory by UFFDIO_COPY from a mapping of the pages file: each page is
 * made with its contents, where a read into the range first makes it zeroed, then copies.
 * The source (`slot` holds its userfaultfd, or -1 when there is none) is opened once; a range
 * it cannot fill (not anonymous, pages already there, no userfaultfd) is read as before.
 */
static void source_open(s64 *slot, u64 fd, u64 base, u64 len)
{
	*slot = -1;
	s64 m = sys6(NR_mmap, base, len, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0);
	if (m < 0 && m > -4096)
		return;
	if ((u64)m != base) {
		sys3(NR_munmap, m, len, 0);
		return;
	}
	s64 u = sys3(NR_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY, 0, 0);
	u64 api[3] = { UFFD_API, 0, 0 };
	if (u >= 0 && sys3(NR_ioctl, u, UFFDIO_API, (s64)api) == 0) {
		*slot = u;
		return;
	}
	if (u >= 0)
		sys3(NR_close, u, 0, 0);
	sys3(NR_munmap, base, len, 0);
}

static void source_close(s64 *slot, u64 base, u64 len)
{
	if (*slot < 0)
		return;
	sys3(NR_close, *slot, 0, 0);
	sys3(NR_munmap, base, len, 0);
	*slot = -1;
}

/* Fills len bytes at dst from src through the source's userfaultfd; the bytes filled. */
static u64 copy_in(s64 u, u64 dst, u64 src, u64 len)
{
	u64 reg[4] = { dst, len, UFFDIO_REGISTER_MODE_MISSING, 0 };
	if (sys3(NR_ioctl, u, UFFDIO_REGISTER, (s64)reg) != 0)
		return 0;
	u64 done = 0;
	for (int again = 0; done < len && again < 1000;) {
		s64 c[5] = { (s64)(dst + done), (s64)(src + done), (s64)(len - done), 0, 0 };
		s64 ret = sys3(NR_ioctl, u, UFFDIO_COPY, (s64)c);
		if (c[4] > 0)
			done += c[4];
		if (ret == 0)
			continue;
		if (ret != -EAGAIN)
			break;
		again++;
	}
	u64 range[2] = { dst, len };
	sys3(NR_ioctl, u, UFFDIO_UNREGISTER, (s64)range);
	return done;
}

/* OP_COPY: fd, dst, len, offset in the file, source address, slot. */
static s64 copy_or_read(const struct op *o)
{
	s64 u = *(volatile s64 *)o->f;
	u64 done = u >= 0 ? copy_in(u, o->b, o->e, o->c) : 0;
	return read_full(o->a, o->b + done, o->c - done, o->d + done);
}

struct helper {
	volatile int running;
	int tid;
	u64 n;
	const struct op *ops;
	s64 failed;
	s64 result;
};

static inline s64 run_op(const struct op *o, struct args *a);

/* Runs the helper's ops; the index of the failing one, or -1. */
static s64 run_ops(struct helper *h, struct args *a)
{
	for (u64 i = 0; i < h->n; i++) {
		s64 ret = run_op(&h->ops[i], a);
		if (ret < 0) {
			h->result = ret;
			return i;
		}
	}
	return -1;
}

__attribute__((used, noreturn)) static void helper_main(struct helper *h)
{
	h->failed = run_ops(h, 0);
	for (;;)
		sys3(NR_exit, 0, 0, 0);
}

/* Starts the helper thread on `stack` (its top); -errno when it cannot. */
static s64 spawn(struct helper *h, u64 stack)
{
	s64 ret;
	register s64 r10 asm("r10") = (s64)&h->running;
	register s64 r8 asm("r8") = 0;
	h->running = 1;
	h->tid = 0;
	h->failed = -1;
	h->result = 0;
	/* The thread comes back from clone on its own stack: r12 (kept) holds its state. */
	asm volatile("mov %[h], %%r12\n"
		     "syscall\n"
		     "test %%rax, %%rax\n"
		     "jnz 1f\n"
		     "mov %%r12, %%rdi\n"
		     "and $-16, %%rsp\n"
		     "call helper_main\n"
		     "1:\n"
		     : "=a"(ret)
		     : "a"((s64)NR_clone), "D"((s64)HELPER_CLONE_FLAGS), "S"(stack), "d"(&h->tid),
		       "r"(r10), "r"(r8), [h] "r"(h)
		     : "rcx", "r11", "r12", "memory");
	if (ret < 0)
		h->running = 0;
	return ret;
}

static s64 join(struct helper *h)
{
	int v;
	while ((v = h->running) != 0)
		sys6(NR_futex, (s64)&h->running, FUTEX_WAIT, v, 0, 0, 0);
	return h->failed < 0 ? 0 : h->result;
}

static inline s64 run_op(const struct op *o, struct args *a)
{
	s64 ret = 0;
	switch (o->code) {
	case OP_MUNMAP:
		return sys3(NR_munmap, o->a, o->b, 0);
	case OP_MREMAP:
		ret = sys6(NR_mremap, o->a, o->b, o->b, MREMAP_MAYMOVE | MREMAP_FIXED, o->c, 0);
		return ret < 0 ? ret : ((u64)ret == o->c ? 0 : -22);
	case OP_MMAP:
		ret = sys6(NR_mmap, o->a, o->b, o->c, o->d | MAP_FIXED, o->e, o->f);
		return ret < 0 && ret > -4096 ? ret : ((u64)ret == o->a ? 0 : -22);
	case OP_PREAD:
		return read_full(o->a, o->b, o->c, o->d);
	case OP_PREAD_CMP:
		return pread_cmp(o, a);
	case OP_MPROTECT:
		return sys3(NR_mprotect, o->a, o->b, o->c);
	case OP_MADVISE:
		ret = sys3(NR_madvise, o->a, o->b, o->c);
		return o->f ? 0 : ret;
	case OP_SHMAT:
		ret = sys3(NR_shmat, o->a, o->b, o->c);
		return ret < 0 && ret > -4096 ? ret : ((u64)ret == o->b ? 0 : -22);
	case OP_CALLS:
		run_calls((struct call *)o->a, o->b);
		return 0;
	case OP_SOURCE_OPEN:
		source_open((s64 *)o->a, o->b, o->c, o->d);
		return 0;
	case OP_COPY:
		return copy_or_read(o);
	case OP_SOURCE_CLOSE:
		source_close((s64 *)o->a, o->b, o->c);
		return 0;
	}
	return -22;
}

__attribute__((section(".text.entry"), used, noreturn)) void restorer_main(struct args *a)
{
	a->failed = -1;
	a->result = 0;
	a->compared = 0;
	a->kept = 0;
	struct helper *h = 0;
	u64 first = 0; /* where the helper's ops start */
	for (u64 i = 0; i < a->nops; i++) {
		const struct op *o = &a->ops[i];
		s64 ret = 0;
		if (o->code == OP_SPAWN) {
			h = (struct helper *)o->c;
			h->n = o->a;
			h->ops = o + 1;
			first = i + 1;
			/* Else (tid left 0) they are run here, in turn. */
			if (spawn(h, o->b) >= 0)
				i += o->a; /* its ops are the thread's */
		} else if (o->code == OP_JOIN) {
			ret = join(h);
			if (ret < 0) {
				a->failed = first + h->failed;
				a->result = ret;
				break;
			}
		} else {
			ret = run_op(o, a);
		}
		if (ret < 0) {
			a->failed = i;
			a->result = ret;
			break;
		}
	}
	/* Failed with the thread still running: it must be gone before criu goes on. */
	if (h && a->failed >= 0)
		join(h);
	a->done = 1;
	for (;;)
		sys3(NR_pause, 0, 0, 0);
}
