/*
 * clone_root: the task a restore with --restore-sibling makes, born criu's caller's child.
 * criu (a Deno process that must never fork itself) calls this blob with every signal blocked:
 * clone3 with CLONE_PARENT | CLONE_VM | CLONE_VFORK, the namespace flags and the task's id
 * (set_tid), on a stack of its own. The child runs only child_main: it gives every signal its
 * default action, unblocks them, and execs the sibling_task helper (it sleeps until criu
 * seizes it); criu's thread waits until then. Returns the child's PID, or -errno.
 *
 * With `go` set (a child in a user namespace of its own, cloned without CLONE_VFORK), the child
 * first waits until criu, which wrote the namespace's id maps meanwhile, sets the word `go`
 * points at: 1, and the child becomes the namespace's root (ids 0, which an exec keeps its
 * capabilities for) and execs; -1, and it exits. criu keeps the blob and its stack until the
 * child has exec'd or exited (CLONE_CHILD_CLEARTID).
 *
 * With `netns` set (the descriptor of a network namespace to join, plus one), the child joins
 * it before anything else: the tree's namespace given by the caller (--join-ns net, or one the
 * dump named external). If it cannot, it writes -errno there and exits.
 *
 *   struct root_args { u64 clone_args, size, path, argv, envp, go, netns; }
 */
#include "syscall.h"

#define NR_rt_sigprocmask 14
#define NR_setresuid 117
#define NR_setresgid 119
#define NR_futex 202
#define FUTEX_WAIT 0

#define NR_setns 308
#define CLONE_NEWNET 0x40000000

struct root_args {
	u64 clone_args, size, path, argv, envp, go;
	s64 netns;
};

struct kernel_sigaction {
	u64 handler, flags, restorer, mask;
};

__attribute__((used, noreturn)) static void child_main(struct root_args *a)
{
	struct kernel_sigaction dfl = {0, 0, 0, 0};
	if (a->netns) {
		s64 r = sys3(NR_setns, a->netns - 1, CLONE_NEWNET, 0);
		if (r < 0) {
			a->netns = r;
			sys3(NR_exit_group, 125, 0, 0);
		}
	}
	for (int sig = 1; sig <= 64; sig++)
		if (sig != 9 && sig != 19)
			sys6(NR_rt_sigaction, sig, (s64)&dfl, 0, 8, 0, 0);
	if (a->go) {
		volatile int *go = (volatile int *)a->go;
		while (!*go)
			sys6(NR_futex, (s64)go, FUTEX_WAIT, 0, 0, 0, 0);
		if (*go < 0 || sys3(NR_setresgid, 0, 0, 0) < 0 || sys3(NR_setresuid, 0, 0, 0) < 0)
			sys3(NR_exit_group, 126, 0, 0);
	}
	u64 none = 0;
	sys6(NR_rt_sigprocmask, 2 /* SIG_SETMASK */, (s64)&none, 0, 8, 0, 0);
	sys3(NR_execve, (s64)a->path, (s64)a->argv, (s64)a->envp);
	sys3(NR_exit_group, 127, 0, 0);
	__builtin_unreachable();
}

__attribute__((section(".text.entry"), used)) s64 clone_root(struct root_args *a)
{
	s64 ret;
	/* The child comes back from clone3 on its own stack: r12 (kept) holds the arguments. */
	asm volatile("mov %[a], %%r12\n"
		     "syscall\n"
		     "test %%rax, %%rax\n"
		     "jnz 1f\n"
		     "mov %%r12, %%rdi\n"
		     "and $-16, %%rsp\n"
		     "call child_main\n"
		     "1:\n"
		     : "=a"(ret)
		     : "a"((s64)NR_clone3), "D"(a->clone_args), "S"(a->size), [a] "r"(a)
		     : "rcx", "r11", "r12", "memory");
	return ret;
}
