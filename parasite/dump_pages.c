/*
 * Parasite: runs inside a frozen task and hands its pages to the dumper without copying them.
 *
 * The page stream (the iovecs, back to back) is cut into chunks of `chunk` bytes; chunk k is
 * vmspliced into pipe k % 2. Two copiers on the dumper side splice one pipe each into
 * pages-N.img at offset k * chunk, so that both CPUs copy at once. When every chunk is in (or a
 * vmsplice failed), the blob stores the result, sets `done`, and waits in read() on its
 * lifeline, a pipe whose only write end the dumper holds, until the dumper interrupts it with
 * PTRACE_INTERRUPT. If the dumper dies instead, its ends of the pipes close: a vmsplice fails
 * with EPIPE, the lifeline reads end-of-file, and the blob goes to heal (heal.c), which undoes
 * the infection and returns the task to its own context.
 *
 *   struct args (all u64, little-endian)
 *     0  fd[2]   pipe write ends in the task
 *    16  iov     address of struct iovec[niov] in the task
 *    24  niov
 *    32  chunk   bytes per chunk: the pipes' size, at most MAX_PIECES pages
 *    40  done    0 while running, 1 when finished
 *    48  result  0, or -errno of the failing vmsplice
 *    56  lifeline  read end of the lifeline pipe
 *    64  heal      address of heal (heal.c, offset 2)
 *    72  heal_block  this thread's heal block, for heal in r12
 *    80  sigpipe   1 if the thread had a SIGPIPE pending before criu came
 *
 * A vmsplice into a pipe nobody reads any more (criu died, or gave up) raises SIGPIPE, which
 * stays pending under the blocked mask and would kill the task once its own mask is back. The
 * blob takes that signal off the thread's queue, unless the task had one pending already.
 *
 * Freestanding: no libc, no globals, position independent; the entry point is the first byte.
 */
#include "lifeline.h"

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
	s64 lifeline;
	u64 heal;
	u64 heal_block;
	s64 sigpipe;
};

#define EPIPE 32
#define SIGPIPE 13

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
	if (ret == -EPIPE && !a->sigpipe) {
		u64 set = 1UL << (SIGPIPE - 1);
		s64 zero[2] = {0, 0};
		sys6(NR_rt_sigtimedwait, (s64)&set, 0, (s64)zero, 8, 0, 0);
	}
	a->result = ret;
	done_then_wait(&a->done, a->lifeline, a->heal, a->heal_block);
}
