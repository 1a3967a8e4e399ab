/*
 * Parasite: runs inside a frozen task and hands its pages to the dumper without copying them.
 *
 * The dumper maps this code and an argument block into the task, points rdi at the block and
 * resumes the task here. The code vmsplices every iovec into the pipe whose write end is
 * `fd` (the dumper splices the other end into pages-N.img as the pipe fills), then stores the
 * result, sets `done`, and sleeps in pause() with every signal blocked until the dumper
 * interrupts it with PTRACE_INTERRUPT.
 *
 *   struct args (all u64, little-endian)
 *     0  fd      pipe write end in the task
 *     8  iov     address of struct iovec[niov] in the task
 *    16  niov
 *    24  done    0 while running, 1 when finished
 *    32  result  0, or -errno of the failing vmsplice
 *
 * Freestanding: no libc, no globals, position independent; the entry point is the first byte.
 */
#include "syscall.h"

struct iovec {
	u64 base;
	u64 len;
};

struct args {
	s64 fd;
	struct iovec *iov;
	s64 niov;
	volatile s64 done;
	s64 result;
};

#define IOV_BATCH 512

__attribute__((section(".text.entry"), used, noreturn)) void parasite_dump_pages(struct args *a)
{
	struct iovec *iov = a->iov;
	s64 n = a->niov, ret = 0;

	while (n > 0) {
		ret = sys6(NR_vmsplice, a->fd, (s64)iov, n > IOV_BATCH ? IOV_BATCH : n, 0, 0, 0);
		if (ret == -EINTR || ret == -EAGAIN)
			continue;
		if (ret < 0)
			break;
		/* Skip what went into the pipe; a partly taken iovec is trimmed in place. */
		while (ret > 0 && n > 0) {
			if ((u64)ret >= iov->len) {
				ret -= iov->len;
				iov++;
				n--;
			} else {
				iov->base += ret;
				iov->len -= ret;
				ret = 0;
			}
		}
	}
	a->result = ret < 0 ? ret : 0;
	a->done = 1;
	for (;;)
		sys3(NR_pause, 0, 0, 0);
}
