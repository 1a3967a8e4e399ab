/*
 * spawn: the child side of a program criu starts as its own sibling (restore --restore-sibling:
 * the restored tree is born its caller's child, so the helper that makes it must be too).
 * criu, a Deno process that must never fork itself, calls glibc's
 *
 *     clone(spawn, stack, CLONE_PARENT | CLONE_VM | CLONE_VFORK | SIGCHLD, args)
 *
 * with every signal blocked: the child runs only this code, on its own small stack, sharing
 * criu's memory until execve replaces it (criu's thread waits until then). It puts its
 * descriptors at 0, 1 and 2, gives every signal its default action and unblocks them, and
 * runs the program; should execve fail, it exits with 127.
 *
 *   struct spawn_args { u64 path, argv, envp; s64 fd[3]; }   (fd -1: left as it is)
 */
#include "syscall.h"

#define NR_rt_sigprocmask 14

struct spawn_args {
	u64 path, argv, envp;
	s64 fd[3];
};

struct kernel_sigaction {
	u64 handler, flags, restorer, mask;
};

__attribute__((section(".text.entry"), used)) int spawn(struct spawn_args *a)
{
	for (int i = 0; i < 3; i++)
		if (a->fd[i] >= 0 && a->fd[i] != i)
			sys3(NR_dup2, a->fd[i], i, 0);
	struct kernel_sigaction dfl = {0, 0, 0, 0};
	for (int sig = 1; sig <= 64; sig++)
		if (sig != 9 && sig != 19)
			sys6(NR_rt_sigaction, sig, (s64)&dfl, 0, 8, 0, 0);
	u64 none = 0;
	sys6(NR_rt_sigprocmask, 2 /* SIG_SETMASK */, (s64)&none, 0, 8, 0, 0);
	sys3(NR_execve, (s64)a->path, (s64)a->argv, (s64)a->envp);
	sys3(NR_exit_group, 127, 0, 0);
	return 0;
}
