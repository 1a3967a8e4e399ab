/*
 * Parasite: runs inside a frozen task and hands its pages to the dumper without copying them.
 *
 * The page stream (the iovecs, back to back) is cut into chunks of `chunk` bytes; chunk k is
 * vmspliced into pipe k % 2. Two copiers on the dumper side splice one pipe each into
 * pages-N.img at offset k * chunk, so that both CPUs copy at once. When every chunk is in, the
 * blob stores the result, sets `done`, and sleeps in pause() with every signal blocked until
 * the dumper interrupts it with PTRACE_INTERRUPT.
 *
 *   struct args (all u64, little-endian)
 *     0  fd[2]   pipe write ends in the task
 *    16  iov     address of struct iovec[niov] in the task
 *    24  niov
 *    32  chunk   bytes per chunk: the pipes' size, at most MAX_PIECES pages
 *    40  done    0 while running, 1 when finished
 *    48  result  0, or -errno of the failing vmsplice
 *
 * Freestanding: no libc, no globals, position independent; the entry point is the first byte.
 */
#include "syscall.h"

struct iovec {
	u64 base;
	u64 len;
};

struct args {
	s64 fd[2];
	struct iovec *iov;
	s64 niov;
	u64 chunk;
	volatile s64 done;
	s64 result;
};

#define MAX_PIECES 256

/* Puts all of piece[0..n) into the pipe, however many calls it takes. */
static inline s64 splice_all(s64 fd, struct iovec *piece, s64 n)
{
	while (n > 0) {
		s64 ret = sys6(NR_vmsplice, fd, (s64)piece, n, 0, 0, 0);
		if (ret == -EINTR || ret == -EAGAIN)
			continue;
		if (ret < 0)
			return ret;
		while (ret > 0 && n > 0) {
			if ((u64)ret >= piece->len) {
				ret -= piece->len;
				piece++;
				n--;
			} else {
				piece->base += ret;
				piece->len -= ret;
				ret = 0;
			}
		}
	}
	return 0;
}

__attribute__((section(".text.entry"), used, noreturn)) void parasite_dump_pages(struct args *a)
{
	struct iovec piece[MAX_PIECES];
	struct iovec *iov = a->iov, *end = a->iov + a->niov;
	u64 off = 0; /* bytes of *iov already taken */
	s64 ret = 0;

	for (u64 k = 0; iov < end && ret == 0; k++) {
		u64 need = a->chunk;
		s64 n = 0;
		while (need && iov < end && n < MAX_PIECES) {
			u64 take = iov->len - off < need ? iov->len - off : need;
			piece[n].base = iov->base + off;
			piece[n].len = take;
			n++;
			need -= take;
			off += take;
			if (off == iov->len) {
				iov++;
				off = 0;
			}
		}
		ret = splice_all(a->fd[k & 1], piece, n);
	}
	a->result = ret;
	a->done = 1;
	for (;;)
		sys3(NR_pause, 0, 0, 0);
}
