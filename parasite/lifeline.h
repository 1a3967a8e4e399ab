/*
 * How a blob that criu runs in a task ends (batch.c): it says it is done, then
 * waits in read() on its lifeline, a pipe whose only write end criu holds, until criu stops it
 * with PTRACE_INTERRUPT; should criu die instead, the read sees end-of-file and the blob goes
 * to heal (heal.c) with the thread's heal block in r12, which takes the task home.
 */
#ifndef DENO_CRIU_LIFELINE_H
#define DENO_CRIU_LIFELINE_H

#include "syscall.h"

static inline __attribute__((noreturn)) void done_then_wait(volatile s64 *done, s64 lifeline,
							     u64 heal, u64 heal_block)
{
	*done = 1;
	char c;
	while (sys3(NR_read, lifeline, (s64)&c, 1) == -EINTR)
		;
	register u64 hb asm("r12") = heal_block;
	asm volatile("jmp *%0\n" ::"r"(heal), "r"(hb) : "memory");
	__builtin_unreachable();
}

#endif
