/*
 * Parasite: runs a list of syscalls inside a frozen task in one go, each of which would cost
 * the dumper two ptrace stops injected one by one. Only calls that change nothing criu must
 * undo belong in the list (questions about the task, answered into memory criu made): should
 * the dumper die midway, the rest still run, harmlessly, before the blob goes home.
 *
 * When the list is done, the blob sets `done` and waits in read() on its lifeline, a pipe whose
 * only write end the dumper holds, until the dumper interrupts it with PTRACE_INTERRUPT. If the
 * dumper dies instead, the lifeline reads end-of-file and the blob goes to heal (heal.c), which
 * undoes the infection and returns the task to its own context.
 *
 *   struct args (all u64, little-endian)
 *     0  calls       address of struct call[n]
 *     8  n
 *    16  done        0 while running, 1 when finished
 *    24  lifeline    read end of the lifeline pipe
 *    32  heal        address of heal (heal.c, offset 2)
 *    40  heal_block  this thread's heal block, for heal in r12
 *
 *   struct call (all u64): nr, arg[6], ret (the raw result: -errno on failure)
 *
 * Freestanding: no libc, no globals, position independent; the entry point is the first byte.
 */
#include "lifeline.h"

struct call {
	s64 nr;
	s64 arg[6];
	s64 ret;
};

struct args {
	struct call *calls;
	s64 n;
	volatile s64 done;
	s64 lifeline;
	u64 heal;
	u64 heal_block;
};

__attribute__((section(".text.entry"), used, noreturn)) void parasite_batch(struct args *a)
{
	for (s64 i = 0; i < a->n; i++) {
		struct call *c = &a->calls[i];
		c->ret = sys6(c->nr, c->arg[0], c->arg[1], c->arg[2], c->arg[3], c->arg[4], c->arg[5]);
	}
	done_then_wait(&a->done, a->lifeline, a->heal, a->heal_block);
}
