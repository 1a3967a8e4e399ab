/*
 * A list of syscalls a blob runs for criu (batch.c, restorer.c's CALLS): each entry's number
 * and six arguments, and its raw result (-errno on failure) written back into it.
 *
 *   struct call (all u64): nr, arg[6], ret
 */
#ifndef DENO_CRIU_CALLS_H
#define DENO_CRIU_CALLS_H

#include "syscall.h"

struct call {
	s64 nr;
	s64 arg[6];
	s64 ret;
};

static inline void run_calls(struct call *calls, u64 n)
{
	for (u64 i = 0; i < n; i++) {
		struct call *c = &calls[i];
		c->ret = sys6(c->nr, c->arg[0], c->arg[1], c->arg[2], c->arg[3], c->arg[4], c->arg[5]);
	}
}

#endif
