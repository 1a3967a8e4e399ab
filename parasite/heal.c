/*
 * heal: how a task that criu works in goes home on its own when criu vanishes (SIGKILL, OOM, a
 * crash). It is the first thing in every parasite area, and every syscall criu injects into a
 * task runs at its offset 0:
 *
 *     0   syscall              the injected syscall (rax, args set by the tracer)
 *     2   heal                 reached only if no tracer stops the task at the syscall's exit
 *
 * While criu lives, it stops the task at the exit of each injected syscall (PTRACE_SYSCALL), so
 * the code after offset 0 never runs. When criu dies, the kernel detaches its tracees; a task
 * sitting at an injected syscall finishes it and falls into heal, which undoes everything criu
 * made in the task and returns to the task's own registers, signal mask and FPU state through
 * rt_sigreturn of a frame criu prepared at infection time. A blob waiting on its lifeline jumps to
 * heal as well when the lifeline closes (criu gone: lifeline.h).
 *
 * r12 holds the thread's heal block throughout (syscalls preserve it).
 *
 *   struct heal_block (one per thread, u64 words)
 *     0  frame       rt_sigframe of the thread's own context (pretcode slot first)
 *     8  stack       top of a small stack for heal
 *    16  table       the process's heal table
 *    24  chain       0, or where on the leader's main stack the frame is to be copied first
 *    32  frame_len   bytes of the frame, fpstate included
 *    40  syscall_ret address of a `syscall; ret` in the task's own code, or 0
 *    48  area        this parasite area
 *    56  area_len
 *    64  sigreturn   address of a `mov $15, %rax; syscall` in the task's own code, or 0
 *    72  leader      1 for the thread that undoes the infection, 0 for one that goes home
 *
 *   struct heal_table (one per process)
 *     0  inflight    1 while another thread's registers may point into the area, 2 while
 *                    they may point to its doorway (below), 0 else
 *     8  fds[32]     s32 descriptors criu made in the task, -1 for none
 *   136  maps[8]     {u64 addr, len} mappings criu made in the task (besides the area)
 *   264  left        set by that other thread when it no longer needs the area
 *
 * With a chain (the leader's stack is a real [stack], and the task's code has both gadgets),
 * the area itself goes too: the frame is copied onto the stack below the red zone (as the
 * kernel places a signal frame), munmap(area) runs at the `syscall; ret` gadget, whose `ret`
 * takes the frame's pretcode, a `mov $15, %rax; syscall` of the task's code (its sa_restorer),
 * into rt_sigreturn. A thread other than the leader inside the area at the same moment copies
 * its own frame further down the leader's stack (the leader is still in heal, not using it)
 * and leaves through the same gadget: futex(FUTEX_WAKE_OP) there sets the word that says it
 * left, from the kernel, once the thread runs no more code of the area, and the gadget's `ret`
 * takes its frame into rt_sigreturn. criu passes the thread through that gadget on its way in
 * and out (its doorway, parasite.ts), and only there says whether it is inside: so the word
 * always comes when the leader is told to wait. The leader waits for it (up to 10 s: a loaded
 * machine may keep the thread from a CPU that long; then 200 ms more, for its last
 * instructions) before it unmaps the area. Without a chain, or if the other thread does not
 * leave, the area stays mapped (inert) and rt_sigreturn reads the frames there.
 *
 * Freestanding: no libc, no globals, position independent; the entry point is the first byte.
 */
#include "syscall.h"

#define HEAL_FDS 32
#define HEAL_MAPS 8
#define NR_futex 202
#define FUTEX_WAKE_OP 5
#define FUTEX_PRIVATE_FLAG 128
/* FUTEX_OP(FUTEX_OP_SET, 1, FUTEX_OP_CMP_EQ, 0): the word at uaddr2 becomes 1. */
#define FUTEX_OP_SET_1 (1 << 12)

struct heal_table {
	volatile u64 inflight;
	volatile int fds[HEAL_FDS];
	struct {
		volatile u64 addr, len;
	} maps[HEAL_MAPS];
	volatile u64 left;
};

struct heal_block {
	u64 frame, stack;
	struct heal_table *table;
	u64 chain, frame_len, syscall_ret, area, area_len, sigreturn, leader;
};

static void nap(s64 ms)
{
	s64 ts[2] = {ms / 1000, (ms % 1000) * 1000000};
	while (sys3(NR_nanosleep, (s64)ts, (s64)ts, 0) == -EINTR)
		;
}

void heal_main(struct heal_block *b);

__attribute__((section(".text.entry"), naked, used)) void heal_site(void)
{
	asm volatile("syscall\n"
		     "mov 8(%r12), %rsp\n"
		     "mov %r12, %rdi\n"
		     "call heal_main\n"
		     "hlt\n");
}

/* rt_sigreturn of the frame at f: the kernel reads it at sp - 8. */
__attribute__((noreturn)) static inline void go_home(u64 f)
{
	asm volatile("mov %0, %%rsp\n"
		     "mov $15, %%eax\n"
		     "syscall\n"
		     "hlt\n" ::"r"(f + 8)
		     : "memory");
	__builtin_unreachable();
}

__attribute__((used, noreturn)) void heal_main(struct heal_block *b)
{
	struct heal_table *t = b->table;
	if (b->leader) {
		for (int i = 0; i < HEAL_FDS; i++)
			if (t->fds[i] >= 0)
				sys3(NR_close, t->fds[i], 0, 0);
		for (int i = 0; i < HEAL_MAPS; i++)
			if (t->maps[i].len)
				sys3(NR_munmap, t->maps[i].addr, t->maps[i].len, 0);
	}
	if (!b->chain)
		go_home(b->frame);
	volatile const char *from = (const char *)b->frame;
	volatile char *to = (char *)b->chain;
	for (u64 i = 0; i < b->frame_len; i++)
		to[i] = from[i];
	if (!b->leader && b->syscall_ret) {
		/* Out of the area before it says so: futex(FUTEX_WAKE_OP) at the task's own
		 * `syscall; ret` sets the word in the kernel (waking no one), and its `ret` takes the
		 * frame's pretcode, the sa_restorer, into rt_sigreturn. */
		register u64 r10 asm("r10") = 0;
		register u64 r8 asm("r8") = (u64)&t->left;
		register u64 r9 asm("r9") = FUTEX_OP_SET_1;
		asm volatile("mov %0, %%rsp\n"
			     "jmp *%1\n" ::"r"(b->chain),
			     "r"(b->syscall_ret), "a"((u64)NR_futex), "D"((u64)&t->left),
			     "S"((u64)(FUTEX_WAKE_OP | FUTEX_PRIVATE_FLAG)), "d"(0ULL), "r"(r10), "r"(r8),
			     "r"(r9)
			     : "memory");
		__builtin_unreachable();
	}
	if (!b->leader) {
		/* Out of the area: the last two instructions here, then the task's own code. */
		t->left = 1;
		asm volatile("mov %0, %%rsp\n"
			     "jmp *%1\n" ::"r"(b->chain + 8),
			     "r"(b->sigreturn)
			     : "memory");
		__builtin_unreachable();
	}
	if (t->inflight == 1) {
		/* The other thread, let go at the same moment, may wait long for a CPU on a loaded
		 * machine: up to 10 s for its word. */
		for (int i = 0; i < 1000 && !t->left; i++)
			nap(10);
		if (!t->left)
			go_home(b->chain);
	}
	/* Time for its last instructions, which read its frame below the leader's. */
	if (t->inflight)
		nap(200);
	if (!b->syscall_ret)
		go_home(b->chain);
	register u64 rdi asm("rdi") = b->area;
	register u64 rsi asm("rsi") = b->area_len;
	asm volatile("mov %0, %%rsp\n"
		     "mov $11, %%eax\n"
		     "jmp *%1\n" ::"r"(b->chain),
		     "r"(b->syscall_ret), "r"(rdi), "r"(rsi)
		     : "rax", "memory");
	__builtin_unreachable();
}
