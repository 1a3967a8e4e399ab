/*
 * hidden_mount: a detached copy of a mount other mounts hide, for criu to read (a tmpfs's files
 * for its tar): criu cannot enter the task's mount namespace (Deno), and must not change it.
 *
 *   hidden_mount PID USERNS TARGET [HIDER...]
 *
 * It enters the mount namespace of task PID (and its user namespace first when USERNS is 1, so
 * that the copy below is its own, its mounts not locked), makes a private copy of it (unshare,
 * then every mount private: nothing done here reaches the task's), unmounts each HIDER in turn
 * (lazily, with what lies on it), then copies the mount TARGET reaches now (open_tree, alone).
 * It writes that descriptor's number (a s32) on its standard output, or -errno, then waits for
 * end of file on its standard input (criu takes the descriptor with pidfd_getfd meanwhile).
 *
 * Static, freestanding, no libc.
 */
#include "io.h"

#define NR_umount2 166
#define NR_mount 165
#define NR_setns 308
#define NR_open_tree 428
#define CLONE_NEWNS 0x00020000
#define CLONE_NEWUSER 0x10000000
#define MS_REC 0x4000
#define MS_PRIVATE 0x40000
#define MNT_DETACH 2
#define OPEN_TREE_CLONE 1
#define AT_FDCWD -100
#define EINVAL 22

static void answer(s64 v)
{
	int w = (int)v;
	write_all(1, (const char *)&w, sizeof(w));
}

__attribute__((used)) void hidden_mount_main(s64 *sp)
{
	char **argv = (char **)(sp + 1);
	if (sp[0] < 4)
		sys3(NR_exit_group, 2, 0, 0);
	s64 pid = decimal(argv[1]);
	s64 flags = CLONE_NEWNS | (argv[2][0] == '1' ? CLONE_NEWUSER : 0);
	s64 pidfd = sys3(NR_pidfd_open, pid, 0, 0);
	s64 r = pidfd < 0 ? pidfd : sys3(NR_setns, pidfd, flags, 0);
	if (r >= 0)
		r = sys3(NR_unshare, CLONE_NEWNS, 0, 0);
	if (r >= 0)
		r = sys6(NR_mount, (s64) "none", (s64) "/", 0, MS_REC | MS_PRIVATE, 0, 0);
	/* (One gone with another already is no mount point there: EINVAL, passed over; criu
	 * checks what the copy shows.) */
	for (s64 i = 4; r >= 0 && i < sp[0]; i++) {
		r = sys3(NR_umount2, (s64)argv[i], MNT_DETACH, 0);
		if (r == -EINVAL)
			r = 0;
	}
	if (r >= 0)
		r = sys3(NR_open_tree, AT_FDCWD, (s64)argv[3], OPEN_TREE_CLONE);
	answer(r);
	char c;
	while (read_all(0, &c, 1))
		;
	sys3(NR_exit_group, r < 0 ? 1 : 0, 0, 0);
}

/* The kernel enters at _start with the stack pointer on argc. */
__attribute__((naked)) void _start(void)
{
	asm volatile("mov %rsp, %rdi\n"
		     "and $-16, %rsp\n"
		     "call hidden_mount_main\n"
		     "hlt\n");
}
