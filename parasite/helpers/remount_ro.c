/*
 * remount_ro: makes mounts of a task's mount namespace read-only (their own flag), from outside,
 * with criu's privileges: the last step of a restore whose tasks may already have dropped
 * theirs (a runc container's init keeps only a few capabilities).
 *
 *   remount_ro PID USERNS PATH...
 *
 * It enters the mount namespace of task PID (its user namespace first when USERNS is 1), whose
 * root becomes its own, then sets MOUNT_ATTR_RDONLY on the mount each PATH reaches, in order.
 * It exits 0, or writes the index of the PATH that failed and -errno (two s32) on its
 * standard output and exits 1.
 *
 * Static, freestanding, no libc.
 */
#include "io.h"

#define NR_setns 308
#define NR_mount_setattr 442
#define CLONE_NEWNS 0x00020000
#define CLONE_NEWUSER 0x10000000
#define AT_FDCWD -100
#define MOUNT_ATTR_RDONLY 1

static void fail(s64 index, s64 err)
{
	int w[2] = {(int)index, (int)err};
	write_all(1, (const char *)w, sizeof(w));
	sys3(NR_exit_group, 1, 0, 0);
}

__attribute__((used)) void remount_ro_main(s64 *sp)
{
	char **argv = (char **)(sp + 1);
	if (sp[0] < 3)
		sys3(NR_exit_group, 2, 0, 0);
	s64 pid = decimal(argv[1]);
	s64 flags = CLONE_NEWNS | (argv[2][0] == '1' ? CLONE_NEWUSER : 0);
	s64 pidfd = sys3(NR_pidfd_open, pid, 0, 0);
	if (pidfd < 0)
		fail(-1, pidfd);
	s64 r = sys3(NR_setns, pidfd, flags, 0);
	if (r < 0)
		fail(-1, r);
	/* struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd; } */
	u64 attr[4] = {MOUNT_ATTR_RDONLY, 0, 0, 0};
	for (s64 i = 3; i < sp[0]; i++) {
		r = sys6(NR_mount_setattr, AT_FDCWD, (s64)argv[i], 0, (s64)attr, sizeof(attr), 0);
		if (r < 0)
			fail(i - 3, r);
	}
	sys3(NR_exit_group, 0, 0, 0);
}

/* The kernel enters at _start with the stack pointer on argc. */
__attribute__((naked)) void _start(void)
{
	asm volatile("mov %rsp, %rdi\n"
		     "and $-16, %rsp\n"
		     "call remount_ro_main\n"
		     "hlt\n");
}
