/*
 * ns_sockets: makes sockets inside the network namespace of a task, for criu to take
 * (pidfd_getfd): a socket belongs to the namespace of whoever made it, and criu, a Deno process,
 * cannot enter one (setns is per thread; Deno must not fork).
 *
 *   ns_sockets PID /proc/CRIU/fd/REQUESTS /proc/CRIU/fd/REPLIES [UID:GID]
 *
 * It enters the network namespace of task PID (setns on its pidfd); with UID:GID, it makes
 * what it makes as them (its file-system ids, and its effective gid, which a ping socket is
 * checked against), its capabilities kept (SECBIT_NO_SETUID_FIXUP). Then it answers requests read
 * from the first pipe with replies on the second, each four or two s32 words:
 *
 *   request 1 (socket):      domain, type, protocol   reply: fd or -errno, 0
 *   request 2 (socketpair):  domain, type, protocol   reply: fd, fd or -errno, 0
 *   request 3 (close):       fd                        reply: 0, 0
 *   request 4 (tun file):    -                         reply: fd or -errno, 0
 *
 * A tun file (/dev/net/tun, opened read-write) belongs to the namespace of whoever opened it too:
 * the devices it makes and attaches to are that namespace's.
 *
 * Every descriptor is made close-on-exec. The first reply says whether it entered the
 * namespace (0, 0) or not (-errno, 0). End of file on the requests: it exits.
 *
 * Static, freestanding, no libc.
 */
#include "io.h"

#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR 2
#define O_CLOEXEC 02000000
#define SOCK_CLOEXEC 02000000
#define CLONE_NEWNET 0x40000000
#define NR_socket 41
#define NR_socketpair 53
#define NR_setns 308
#define NR_prctl 157
#define NR_setresgid 119
#define NR_setfsuid 122
#define NR_setfsgid 123
#define PR_SET_SECUREBITS 28
#define SECBIT_NO_SETUID_FIXUP (1 << 2)

static void reply(int fd, int a, int b)
{
	int w[2] = {a, b};
	if (!write_all(fd, (char *)w, sizeof(w)))
		sys3(NR_exit_group, 3, 0, 0);
}

__attribute__((used)) void ns_sockets_main(s64 *sp)
{
	char **argv = (char **)(sp + 1);
	if (sp[0] < 4)
		sys3(NR_exit_group, 2, 0, 0);
	s64 pid = decimal(argv[1]);
	s64 in = sys3(NR_open, (s64)argv[2], O_RDONLY, 0);
	s64 out = sys3(NR_open, (s64)argv[3], O_WRONLY, 0);
	if (in < 0 || out < 0)
		sys3(NR_exit_group, 2, 0, 0);
	s64 pidfd = sys3(NR_pidfd_open, pid, 0, 0);
	s64 r = pidfd < 0 ? pidfd : sys3(NR_setns, pidfd, CLONE_NEWNET, 0);
	if (r >= 0 && sp[0] > 4) {
		s64 uid = 0, gid = 0;
		const char *s = argv[4];
		for (; *s >= '0' && *s <= '9'; s++)
			uid = uid * 10 + (*s - '0');
		if (*s == ':')
			s++;
		for (; *s >= '0' && *s <= '9'; s++)
			gid = gid * 10 + (*s - '0');
		r = sys6(NR_prctl, PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0, 0);
		if (r >= 0)
			r = sys3(NR_setresgid, -1, gid, -1);
		if (r >= 0) {
			sys3(NR_setfsgid, gid, 0, 0);
			sys3(NR_setfsuid, uid, 0, 0);
		}
	}
	reply((int)out, (int)r, 0);
	if (r < 0)
		sys3(NR_exit_group, 1, 0, 0);
	sys3(NR_close, pidfd, 0, 0);
	for (;;) {
		int q[4];
		if (!read_all((int)in, (char *)q, sizeof(q)))
			sys3(NR_exit_group, 0, 0, 0);
		if (q[0] == 1) {
			reply((int)out, (int)sys3(NR_socket, q[1], q[2] | SOCK_CLOEXEC, q[3]), 0);
		} else if (q[0] == 2) {
			int pair[2] = {-1, -1};
			s64 e = sys6(NR_socketpair, q[1], q[2] | SOCK_CLOEXEC, q[3], (s64)pair, 0, 0);
			if (e < 0)
				reply((int)out, (int)e, 0);
			else
				reply((int)out, pair[0], pair[1]);
		} else if (q[0] == 4) {
			reply((int)out, (int)sys3(NR_open, (s64) "/dev/net/tun", O_RDWR | O_CLOEXEC, 0), 0);
		} else if (q[0] == 3) {
			sys3(NR_close, q[1], 0, 0);
			reply((int)out, 0, 0);
		} else {
			reply((int)out, -22, 0);
		}
	}
}

/* The kernel enters at _start with the stack pointer on argc. */
__attribute__((naked)) void _start(void)
{
	asm volatile("mov %rsp, %rdi\n"
		     "and $-16, %rsp\n"
		     "call ns_sockets_main\n"
		     "hlt\n");
}
