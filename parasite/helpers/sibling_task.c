/*
 * sibling_task: the program the task a restore with --restore-sibling makes runs until criu
 * seizes it and rebuilds it (parasite/clone_root.c made it, criu's caller's child, with its
 * id and namespaces). It only sleeps. Static, freestanding, no libc.
 */
#include "../syscall.h"

__attribute__((used)) void sibling_main(void)
{
	for (;;)
		sys3(NR_pause, 0, 0, 0);
}

/* The kernel enters at _start with the stack pointer on argc. */
__attribute__((naked)) void _start(void)
{
	asm volatile("and $-16, %rsp\n"
		     "call sibling_main\n"
		     "hlt\n");
}
