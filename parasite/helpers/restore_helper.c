/*
 * restore-helper: creates the task to restore, with its dumped PID, on behalf of the restorer
 * (a Deno process must never fork itself). Static, freestanding, no libc.
 *
 *   restore-helper PID [detach|wait [CLONE_FLAGS [MONO_SEC MONO_NSEC BOOT_SEC BOOT_NSEC]]]
 *
 * clone3() with set_tid = PID (and CLONE_FLAGS, decimal: the namespaces the task had of its
 * own, made for it; with CLONE_NEWPID, PID is 1, its id in its new namespace) makes a child
 * that only sleeps in pause() until the restorer seizes it with ptrace and rebuilds it. With CLONE_NEWTIME the child is made in a new time namespace
 * whose monotonic and boot clocks read MONO and BOOT now (the values they had at the dump:
 * they go on from there); the helper makes it with unshare() and timens_offsets before the
 * clone, as the kernel wants. The helper prints "child PID\n" on stdout, or
 * "error ERRNO\n" when clone3 fails (EEXIST: the PID is taken).
 *
 * Then it waits for the restorer's word on stdin. "g" (go) means the tree is released: with
 * "detach" the helper exits (the child is reparented); otherwise it waits for the child and
 * exits with its status (128 + signal when killed), which `criu restore` without -d passes on.
 * End of file before that means the restorer died or gave up: nothing it made may stay, so the
 * helper kills the whole tree, released tasks included, and reaps it: it is the subreaper of
 * the tree until "g", so the children of each task it kills come to it in turn (the restorer
 * also traces the tasks with PTRACE_O_EXITKILL, so those still traced die with it).
 * The child dies with the helper too (PR_SET_PDEATHSIG), should the helper be killed first.
 */
#include "../syscall.h"

struct clone_args {
	u64 flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
		set_tid_size, cgroup;
};

#define SIGCHLD 17
#define SIGKILL 9
#define PR_SET_PDEATHSIG 1
#define PR_SET_CHILD_SUBREAPER 36
#define WALL 0x40000000
#define CLONE_NEWTIME 0x80
#define CLONE_NEWPID 0x20000000
#define CLOCK_MONOTONIC 1
#define CLOCK_BOOTTIME 7
#define NSEC 1000000000LL

struct timespec64 {
	s64 sec, nsec;
};

static u64 parse(const char *s)
{
	u64 v = 0;
	while (*s >= '0' && *s <= '9')
		v = v * 10 + (u64)(*s++ - '0');
	return v;
}

/* Appends the decimal `v` (with its sign) at buf[n]; returns the new length. */
static int put_num(char *buf, int n, s64 v)
{
	char digits[20];
	int i = 0;
	u64 u = v < 0 ? (u64)-v : (u64)v;
	if (v < 0)
		buf[n++] = '-';
	do {
		digits[i++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	while (i)
		buf[n++] = digits[--i];
	return n;
}

/* Reads a signed decimal at *s, moving past it (and the blanks before it). */
static s64 parse_signed(const char **s)
{
	while (**s == ' ')
		(*s)++;
	int neg = **s == '-';
	if (neg)
		(*s)++;
	s64 v = 0;
	while (**s >= '0' && **s <= '9')
		v = v * 10 + (*(*s)++ - '0');
	return neg ? -v : v;
}

/*
 * The offset of `clock` in the helper's own time namespace (/proc/self/timens_offsets: lines
 * "monotonic SEC NSEC" and "boottime SEC NSEC"): offsets count from the host's clocks, not from
 * the namespace a new one is made in.
 */
static struct timespec64 own_offset(int clock)
{
	struct timespec64 off = {0, 0};
	char buf[256];
	s64 fd = sys3(NR_open, (s64)"/proc/self/timens_offsets", 0, 0);
	s64 len = fd < 0 ? 0 : sys3(NR_read, fd, (s64)buf, sizeof(buf) - 1);
	if (fd >= 0)
		sys3(NR_close, fd, 0, 0);
	if (len <= 0)
		return off;
	buf[len] = 0;
	const char *want = clock == CLOCK_MONOTONIC ? "monotonic" : "boottime";
	for (const char *p = buf; *p;) {
		int i = 0;
		while (want[i] && p[i] == want[i])
			i++;
		if (!want[i] && p[i] == ' ') {
			p += i;
			off.sec = parse_signed(&p);
			off.nsec = parse_signed(&p);
			return off;
		}
		while (*p && *p != '\n')
			p++;
		if (*p)
			p++;
	}
	return off;
}

/*
 * Moves the helper's children into a new time namespace where `clock` reads `want` now:
 * the line "CLOCK SEC NSEC" for /proc/self/timens_offsets, appended at buf[n].
 */
static int offset_line(char *buf, int n, int clock, struct timespec64 want, struct timespec64 own)
{
	struct timespec64 now;
	sys3(NR_clock_gettime, clock, (s64)&now, 0);
	/* The host's clock: ours less our own namespace's offset. */
	now.sec -= own.sec;
	now.nsec -= own.nsec;
	s64 sec = want.sec - now.sec, nsec = want.nsec - now.nsec;
	while (nsec >= NSEC) {
		nsec -= NSEC;
		sec++;
	}
	if (nsec < 0) {
		nsec += NSEC;
		sec--;
	}
	n = put_num(buf, n, clock);
	buf[n++] = ' ';
	n = put_num(buf, n, sec);
	buf[n++] = ' ';
	n = put_num(buf, n, nsec);
	buf[n++] = '\n';
	return n;
}

/* A new time namespace for the children, its clocks reading what `argv` gives; -errno. */
static s64 time_namespace(char **argv)
{
	struct timespec64 mono = {(s64)parse(argv[0]), (s64)parse(argv[1])};
	struct timespec64 boot = {(s64)parse(argv[2]), (s64)parse(argv[3])};
	/* Read before unshare(): /proc/self/timens_offsets then shows the new namespace's. */
	struct timespec64 own_mono = own_offset(CLOCK_MONOTONIC);
	struct timespec64 own_boot = own_offset(CLOCK_BOOTTIME);
	s64 r = sys3(NR_unshare, CLONE_NEWTIME, 0, 0);
	if (r < 0)
		return r;
	char buf[128];
	int n = offset_line(buf, 0, CLOCK_MONOTONIC, mono, own_mono);
	n = offset_line(buf, n, CLOCK_BOOTTIME, boot, own_boot);
	s64 fd = sys3(NR_open, (s64)"/proc/self/timens_offsets", 1 /* O_WRONLY */, 0);
	if (fd < 0)
		return fd;
	r = sys3(NR_write, fd, (s64)buf, n);
	sys3(NR_close, fd, 0, 0);
	return r < 0 ? r : 0;
}

static void print(const char *prefix, s64 v)
{
	char buf[32];
	int n = 0, i = 0;
	char digits[20];
	while (prefix[n]) {
		buf[n] = prefix[n];
		n++;
	}
	if (v < 0) {
		buf[n++] = '-';
		v = -v;
	}
	do {
		digits[i++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (i)
		buf[n++] = digits[--i];
	buf[n++] = '\n';
	sys3(NR_write, 1, (s64)buf, n);
}

/* Kills every child, reaps, and again with the orphans that came, until none is left. */
__attribute__((noreturn)) static void kill_tree(s64 self)
{
	char path[64] = "/proc/self/task/", buf[4096];
	int n = 16, i = 0;
	char digits[20];
	do {
		digits[i++] = (char)('0' + self % 10);
		self /= 10;
	} while (self);
	while (i)
		path[n++] = digits[--i];
	const char *tail = "/children";
	while (*tail)
		path[n++] = *tail++;
	path[n] = 0;
	for (;;) {
		s64 fd = sys3(NR_open, (s64)path, 0, 0);
		s64 len = fd < 0 ? 0 : sys3(NR_read, fd, (s64)buf, sizeof(buf) - 1);
		if (fd >= 0)
			sys3(NR_close, fd, 0, 0);
		for (s64 j = 0; j < len;) {
			while (j < len && (buf[j] < '0' || buf[j] > '9'))
				j++;
			if (j >= len)
				break;
			sys3(NR_kill, (s64)parse(buf + j), SIGKILL, 0);
			while (j < len && buf[j] >= '0' && buf[j] <= '9')
				j++;
		}
		int st;
		if (sys6(NR_wait4, -1, (s64)&st, WALL, 0, 0, 0) == -ECHILD)
			sys3(NR_exit_group, 1, 0, 0);
	}
}

__attribute__((used)) void helper_main(s64 *sp)
{
	s64 argc = sp[0];
	char **argv = (char **)(sp + 1);
	if (argc < 2) {
		print("error ", 22);
		sys3(NR_exit_group, 2, 0, 0);
	}
	s64 pid = (s64)parse(argv[1]);
	int detach = argc > 2 && argv[2][0] == 'd';
	s64 self = sys3(NR_getpid, 0, 0, 0);
	sys6(NR_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, 0);
	/* DENO_CRIU_JOIN_NET=PATH: the child is made in that network namespace (--join-ns). */
	for (char **e = argv + argc + 1; *e; e++) {
		const char *k = "DENO_CRIU_JOIN_NET=";
		int i = 0;
		while (k[i] && (*e)[i] == k[i])
			i++;
		if (k[i])
			continue;
		s64 fd = sys3(NR_open, (s64)(*e + i), 0 /* O_RDONLY */, 0);
		s64 r = fd < 0 ? fd : sys3(308 /* setns */, fd, 0x40000000 /* CLONE_NEWNET */, 0);
		if (r < 0) {
			print("error ", -r);
			sys3(NR_exit_group, 2, 0, 0);
		}
		sys3(NR_close, fd, 0, 0);
	}
	struct clone_args ca = {0};
	ca.flags = argc > 3 ? parse(argv[3]) : 0;
	if (ca.flags & CLONE_NEWTIME) {
		/* The kernel takes no offsets once a task is in the namespace: unshare, then clone. */
		ca.flags &= ~(u64)CLONE_NEWTIME;
		s64 r = argc > 7 ? time_namespace(argv + 4) : -22;
		if (r < 0) {
			print("error ", -r);
			sys3(NR_exit_group, 2, 0, 0);
		}
	}
	ca.exit_signal = SIGCHLD;
	ca.set_tid = (u64)&pid;
	ca.set_tid_size = 1;
	s64 child = sys3(NR_clone3, (s64)&ca, sizeof(ca), 0);
	if (child == 0) {
		sys6(NR_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0, 0);
		/* The init of a new PID namespace sees no parent (getppid() is 0 there). */
		if (!(ca.flags & CLONE_NEWPID) && sys3(NR_getppid, 0, 0, 0) != self)
			sys3(NR_exit_group, 1, 0, 0);
		for (;;)
			sys3(NR_pause, 0, 0, 0);
	}
	if (child < 0) {
		print("error ", -child);
		sys3(NR_exit_group, 2, 0, 0);
	}
	print("child ", child);
	char word = 0;
	for (;;) {
		s64 r = sys3(NR_read, 0, (s64)&word, 1);
		if (r == -EINTR)
			continue;
		if (r != 1 || word != 'g')
			kill_tree(self);
		break;
	}
	sys6(NR_prctl, PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0, 0);
	if (detach)
		sys3(NR_exit_group, 0, 0, 0);
	int status = 0;
	for (;;) {
		s64 r = sys6(NR_wait4, child, (s64)&status, 0, 0, 0, 0);
		if (r == child)
			break;
		if (r != -EINTR)
			sys3(NR_exit_group, 1, 0, 0);
	}
	if ((status & 0x7f) == 0)
		sys3(NR_exit_group, (status >> 8) & 0xff, 0, 0);
	sys3(NR_exit_group, 128 + (status & 0x7f), 0, 0);
}

/* The kernel enters at _start with the stack pointer on argc. */
__attribute__((naked)) void _start(void)
{
	asm volatile("mov %rsp, %rdi\n"
		     "and $-16, %rsp\n"
		     "call helper_main\n"
		     "hlt\n");
}
