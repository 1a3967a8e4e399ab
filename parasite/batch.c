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
 *   struct call (calls.h): nr, arg[6], ret (the raw result: -errno on failure)
 *
 * Freestanding: no libc, no globals, position independent; the entry point is the first byte.
 */
#include "calls.h"
#include "lifeline.h"


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
	run_calls(a->calls, a->n);
	done_then_wait(&a->done, a->lifeline, a->heal, a->heal_block);
}
