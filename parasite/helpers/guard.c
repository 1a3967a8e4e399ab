/*
 * guard: undoes what a dump did outside the dumped tasks when the dumper dies before the dump
 * is over: TCP sockets left in repair mode (dead connections) and the network lock (packets
 * dropped for ever). Tasks themselves need no guard: they heal on their own (heal.c).
 *
 *   guard /proc/DUMPER/fd/N
 *
 * It opens that pipe (the dumper holds the only write end), says "ready" on stdout, and reads
 * records, each `u8 kind, u32 length, payload`:
 *
 *   'F'  s32 pid, s32 fd, s32 reuseaddr   a TCP socket (descriptor fd of task pid) about to go
 *                                         into repair mode: the guard takes its own duplicate
 *   'C'  argv strings (NUL-ended), an empty string, then bytes for the command's stdin:
 *                                         a command that undoes a network lock
 *   'S'  s32 pids                         processes about to get a SIGSTOP (criu holds them
 *                                         stopped while sockets are in repair mode, so that
 *                                         should it die they stop instead of running into
 *                                         them): the guard opens a pidfd of each
 *   'U'                                   those SIGSTOPs were taken back: forget them
 *   'T'  s32 pids                         the images are complete and the tree is to die with
 *                                         the dumper (the dumper sets PTRACE_O_EXITKILL next):
 *                                         the guard opens a pidfd of each process
 *   'K'                                   the dump is over (finished or undone by the dumper):
 *                                         close everything and exit 0
 *
 * End of file before 'K' (the dumper died):
 *  - before 'T': every socket leaves repair mode and gets its SO_REUSEADDR back (leaving
 *    repair mode clears it), the processes of an 'S' not taken back get SIGCONT, the
 *    commands run in reverse order, and the guard exits 1. The tree goes on.
 *  - after 'T': the dump was finishing; the tree dies whole, as it would have. Every socket
 *    goes into repair mode (its last close is then silent, neither FIN nor reset), every
 *    process gets SIGKILL (those the kernel already killed for EXITKILL too, harmlessly), the
 *    sockets are closed and the lock stays for the restore to remove; exit 1. Without this,
 *    a tree let go half-way through the kill would run on with its connections in repair
 *    mode (recv fails with EPERM) until the guard took them out. The commands run again after 0.3 s and 2 s: a lock tool the dumper had
 * started just before dying may finish after the first run (removing a lock twice is
 * harmless; the second run fails quietly). It ignores SIGINT, SIGHUP and SIGTERM: a Ctrl-C that stops the dumper
 * must not stop its guard.
 *
 * Static, freestanding, no libc.
 */
#include "io.h"

#define O_RDONLY 0
#define SIGINT 2
#define SIGHUP 1
#define SIGTERM 15
#define SIGPIPE 13
#define SIGCHLD 17
#define SOL_SOCKET 1
#define SO_REUSEADDR 2
#define SOL_TCP 6
#define TCP_REPAIR 19

#define SIGKILL 9
#define SIGCONT 18
#define MAX_SOCKS 4096
#define MAX_PROCS 4096
#define MAX_CMDS 256
#define MAX_ARGS 64
#define STORE (4 << 20)

static struct {
	int fd, reuse;
} socks[MAX_SOCKS];
static int nsocks;
static int procs[MAX_PROCS];
static int nprocs, committed;
static int held[MAX_PROCS];
static int nheld;
static struct {
	char *argv[MAX_ARGS];
	char *in;
	u64 inlen;
} cmds[MAX_CMDS];
static int ncmds;
static char store[STORE];
static u64 used;

static void take_socket(const s64 *w)
{
	int pid = (int)(w[0] & 0xffffffff), fd = (int)(w[0] >> 32), reuse = (int)(w[1] & 0xffffffff);
	if (nsocks == MAX_SOCKS)
		return;
	s64 pidfd = sys3(NR_pidfd_open, pid, 0, 0);
	if (pidfd < 0)
		return;
	s64 dup = sys3(NR_pidfd_getfd, pidfd, fd, 0);
	sys3(NR_close, pidfd, 0, 0);
	if (dup < 0)
		return;
	socks[nsocks].fd = (int)dup;
	socks[nsocks].reuse = reuse;
	nsocks++;
}

static void keep_command(char *p, u64 len)
{
	if (ncmds == MAX_CMDS)
		return;
	int argc = 0;
	u64 i = 0;
	while (i < len && p[i] && argc < MAX_ARGS - 1) {
		cmds[ncmds].argv[argc++] = p + i;
		while (i < len && p[i])
			i++;
		i++;
	}
	cmds[ncmds].argv[argc] = 0;
	i++; /* the empty string */
	cmds[ncmds].in = p + (i < len ? i : len);
	cmds[ncmds].inlen = i < len ? len - i : 0;
	if (argc)
		ncmds++;
}

static void run(int k)
{
	static char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", 0};
	int p[2];
	if (sys3(NR_pipe2, (s64)p, 0, 0) < 0)
		return;
	s64 child = sys6(NR_clone, SIGCHLD, 0, 0, 0, 0, 0);
	if (child == 0) {
		sys3(NR_dup2, p[0], 0, 0);
		sys3(NR_close, p[1], 0, 0);
		s64 null = sys3(NR_open, (s64)"/dev/null", 1 /* O_WRONLY */, 0);
		if (null >= 0) {
			sys3(NR_dup2, null, 1, 0);
			sys3(NR_dup2, null, 2, 0);
		}
		sys3(NR_execve, (s64)cmds[k].argv[0], (s64)cmds[k].argv, (s64)envp);
		sys3(NR_exit_group, 127, 0, 0);
	}
	sys3(NR_close, p[0], 0, 0);
	write_all(p[1], cmds[k].in, cmds[k].inlen);
	/* quiet: a second run's complaints (already removed) go nowhere */
	sys3(NR_close, p[1], 0, 0);
	if (child > 0) {
		int st;
		while (sys6(NR_wait4, child, (s64)&st, 0, 0, 0, 0) == -EINTR)
			;
	}
}

static void undo(void)
{
	int zero = 0;
	for (int i = 0; i < nsocks; i++) {
		sys6(NR_setsockopt, socks[i].fd, SOL_TCP, TCP_REPAIR, (s64)&zero, 4, 0);
		sys6(NR_setsockopt, socks[i].fd, SOL_SOCKET, SO_REUSEADDR, (s64)&socks[i].reuse, 4, 0);
	}
	/* Stopped for the repair (or about to be): they go on now that their sockets work. */
	for (int i = 0; i < nheld; i++)
		sys6(NR_pidfd_send_signal, held[i], SIGCONT, 0, 0, 0, 0);
	for (int round = 0; round < 3; round++) {
		if (round) {
			s64 ts[2] = {round == 1 ? 0 : 1, round == 1 ? 300000000 : 700000000};
			sys3(NR_nanosleep, (s64)ts, 0, 0);
		}
		for (int k = ncmds - 1; k >= 0; k--)
			run(k);
	}
}

/* pidfds of the processes in a record (a pid may be reused once they die), into `into`. */
static void open_pids(const char *p, u64 len, int *into, int *n)
{
	for (u64 i = 0; i + 4 <= len && *n < MAX_PROCS; i += 4) {
		int pid = (unsigned char)p[i] | (unsigned char)p[i + 1] << 8 |
			  (unsigned char)p[i + 2] << 16 | (unsigned char)p[i + 3] << 24;
		s64 pidfd = sys3(NR_pidfd_open, pid, 0, 0);
		if (pidfd >= 0)
			into[(*n)++] = (int)pidfd;
	}
}

/* After 'T': the tree dies whole and its connections close silently. */
static void finish_kill(void)
{
	int one = 1;
	for (int i = 0; i < nsocks; i++)
		sys6(NR_setsockopt, socks[i].fd, SOL_TCP, TCP_REPAIR, (s64)&one, 4, 0);
	for (int i = 0; i < nprocs; i++)
		sys6(NR_pidfd_send_signal, procs[i], SIGKILL, 0, 0, 0, 0);
	for (int i = 0; i < nsocks; i++)
		sys3(NR_close, socks[i].fd, 0, 0);
}

static void ignore(int sig)
{
	u64 act[4] = {1 /* SIG_IGN */, 0, 0, 0};
	sys6(NR_rt_sigaction, sig, (s64)act, 0, 8, 0, 0);
}

__attribute__((used)) void guard_main(s64 *sp)
{
	char **argv = (char **)(sp + 1);
	if (sp[0] < 2)
		sys3(NR_exit_group, 2, 0, 0);
	ignore(SIGINT);
	ignore(SIGHUP);
	ignore(SIGTERM);
	ignore(SIGPIPE);
	s64 in = sys3(NR_open, (s64)argv[1], O_RDONLY, 0);
	if (in < 0) {
		write_all(1, "error\n", 6);
		sys3(NR_exit_group, 2, 0, 0);
	}
	write_all(1, "ready\n", 6);
	for (;;) {
		struct {
			unsigned char kind;
			unsigned char len[4];
		} __attribute__((packed)) h;
		if (!read_all(in, (char *)&h, sizeof(h)))
			break;
		u64 len = h.len[0] | (u64)h.len[1] << 8 | (u64)h.len[2] << 16 | (u64)h.len[3] << 24;
		if (len > STORE - used)
			break;
		char *p = store + used;
		if (!read_all(in, p, len))
			break;
		if (h.kind == 'K') {
			for (int i = 0; i < nsocks; i++)
				sys3(NR_close, socks[i].fd, 0, 0);
			sys3(NR_exit_group, 0, 0, 0);
		}
		if (h.kind == 'F' && len >= 12) {
			s64 w[2] = {0, 0};
			for (int i = 0; i < 12; i++)
				((char *)w)[i] = p[i];
			take_socket(w);
		} else if (h.kind == 'C') {
			used += len;
			keep_command(p, len);
		} else if (h.kind == 'S') {
			open_pids(p, len, held, &nheld);
		} else if (h.kind == 'U') {
			for (int i = 0; i < nheld; i++)
				sys3(NR_close, held[i], 0, 0);
			nheld = 0;
		} else if (h.kind == 'T') {
			committed = 1;
			open_pids(p, len, procs, &nprocs);
		}
	}
	if (committed)
		finish_kill();
	else
		undo();
	sys3(NR_exit_group, 1, 0, 0);
}

/* The kernel enters at _start with the stack pointer on argc. */
__attribute__((naked)) void _start(void)
{
	asm volatile("mov %rsp, %rdi\n"
		     "and $-16, %rsp\n"
		     "call guard_main\n"
		     "hlt\n");
}
