/*
 * Native AIO contexts (io_setup). argv: OUT MODE.
 *
 * Every mode sets up: context A (io_setup(128)) with five reads of a file of its own
 * completed, two of their events reaped and three left in the ring; context W, small
 * (io_setup(1)), whose ring has wrapped (head near its end, three events unreaped across it);
 * context I, never used. MODE "holes" also sets up a context between A and W and destroys it,
 * leaving its slot of the table empty; MODE "one" sets up A alone. MODE "poll" adds a poll request on a pipe to A (in
 * flight: a dump is refused), MODE "fork" a child that has A's ring mapped but no context.
 *
 * Each ring (header and events, its whole mapping) is copied aside before "ready". On SIGTERM
 * the task checks that each context is still found at its ring's address (its id), with its
 * ring byte for byte as it was; that io_getevents hands out the unreaped events in order; that
 * a new request on each completes into it; in "holes" that a new context takes the empty slot
 * (slots are kept); in "poll" that the poll completes once the pipe is written. Prints PASS or
 * FAIL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct aio_ring {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
	struct io_event events[];
};

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static long io_setup(unsigned n, aio_context_t *c) { return syscall(SYS_io_setup, n, c); }
static long io_destroy(aio_context_t c) { return syscall(SYS_io_destroy, c); }
static long io_submit(aio_context_t c, long n, struct iocb **p) { return syscall(SYS_io_submit, c, n, p); }
static long io_getevents(aio_context_t c, long min, long n, struct io_event *e, struct timespec *t)
{
	return syscall(SYS_io_getevents, c, min, n, e, t);
}

static int file, devnull, pipes[2];
static char bufs[8][64];

/* Submits `n` requests on `ctx`, tagged `tag`, `tag + 1`...: reads of 64 bytes of the file. */
static int submit(aio_context_t ctx, int n, unsigned long long tag)
{
	struct iocb cbs[8], *ps[8];
	for (int i = 0; i < n; i++) {
		memset(&cbs[i], 0, sizeof(cbs[i]));
		cbs[i].aio_data = tag + i;
		cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
		cbs[i].aio_fildes = file;
		cbs[i].aio_buf = (unsigned long)bufs[i];
		cbs[i].aio_nbytes = 64;
		cbs[i].aio_offset = 64 * i;
		ps[i] = &cbs[i];
	}
	return io_submit(ctx, n, ps) == n ? 0 : -1;
}

/* Reaps exactly `n` events of `ctx`, checking their tags from `tag` on. */
static int reap(aio_context_t ctx, int n, unsigned long long tag)
{
	struct io_event ev[8];
	struct timespec zero = {0, 0};
	if (io_getevents(ctx, 0, 8, ev, &zero) != n)
		return -1;
	for (int i = 0; i < n; i++)
		if (ev[i].data != tag + i || ev[i].res != 64)
			return -1;
	return 0;
}

static size_t ring_len(aio_context_t ctx)
{
	struct aio_ring *r = (void *)ctx;
	return (sizeof(*r) + r->nr * sizeof(struct io_event) + 4095) & ~4095UL;
}

static char *copy(aio_context_t ctx)
{
	char *c = malloc(ring_len(ctx));
	memcpy(c, (void *)ctx, ring_len(ctx));
	return c;
}

/* A request completing at once on `ctx` (a write to /dev/null), reaped: it must come back. */
static int works(aio_context_t ctx, unsigned long long tag)
{
	struct iocb cb = {0}, *p = &cb;
	struct io_event ev;
	cb.aio_data = tag;
	cb.aio_lio_opcode = IOCB_CMD_PWRITE;
	cb.aio_fildes = devnull;
	cb.aio_buf = (unsigned long)bufs[0];
	cb.aio_nbytes = 1;
	return io_submit(ctx, 1, &p) == 1 && io_getevents(ctx, 1, 1, &ev, NULL) == 1 &&
	       ev.data == tag && ev.res == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	const char *mode = argc > 2 ? argv[2] : "plain";
	char path[] = "/tmp/aio-victim-XXXXXX", data[512];
	file = mkstemp(path);
	unlink(path);
	for (int i = 0; i < 512; i++)
		data[i] = (char)i;
	if (write(file, data, sizeof(data)) != sizeof(data))
		return 2;
	devnull = open("/dev/null", O_WRONLY);
	aio_context_t a = 0, hole = 0, w = 0, idle = 0;
	if (io_setup(128, &a))
		return 3;
	if (!strcmp(mode, "holes") && io_setup(4, &hole))
		return 3;
	int one = !strcmp(mode, "one");
	if (!one && (io_setup(1, &w) || io_setup(16, &idle) || (hole && io_destroy(hole))))
		return 3;
	/* A: five done, two reaped. */
	struct io_event ev[8];
	if (submit(a, 5, 0x100))
		return 4;
	if (io_getevents(a, 2, 2, ev, NULL) != 2 || ev[0].data != 0x100 || ev[1].data != 0x101)
		return 4;
	/* W: round and round until its head is two short of the end, then three more. */
	struct aio_ring *wr = (void *)w;
	unsigned long long tag = 0x1000;
	while (!one && wr->head != wr->nr - 2) {
		int n = wr->nr - 2 - wr->head > 8 ? 8 : wr->nr - 2 - wr->head;
		if (submit(w, n, tag) || reap(w, n, tag))
			return 5;
		tag += n;
	}
	if (!one && (submit(w, 3, 0x2000) || wr->tail != 1))
		return 5;
	if (!strcmp(mode, "poll")) {
		struct iocb cb = {0}, *p = &cb;
		pipe(pipes);
		cb.aio_data = 0x3000;
		cb.aio_lio_opcode = IOCB_CMD_POLL;
		cb.aio_fildes = pipes[0];
		cb.aio_buf = POLLIN;
		if (io_submit(a, 1, &p) != 1)
			return 6;
	}
	pid_t child = 0;
	if (!strcmp(mode, "fork") && !(child = fork())) {
		while (1)
			pause();
	}
	aio_context_t ctxs[] = {a, w, idle};
	int n = one ? 1 : 3;
	char *before[3];
	for (int i = 0; i < n; i++)
		before[i] = copy(ctxs[i]);
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d a=%llx w=%llx i=%llx child=%d\n", getpid(),
		(unsigned long long)a, (unsigned long long)w, (unsigned long long)idle, child);
	while (!term)
		pause();
	const char *why = NULL;
	for (int i = 0; i < n && !why; i++)
		if (memcmp((void *)ctxs[i], before[i], ring_len(ctxs[i])))
			why = "a ring's bytes";
	if (!why && (reap(a, 3, 0x102) || (!one && (reap(w, 3, 0x2000) || reap(idle, 0, 0)))))
		why = "the unreaped events";
	if (!why && (works(a, 0x4000) || (!one && (works(w, 0x4001) || works(idle, 0x4002)))))
		why = "a new request";
	if (!why && !strcmp(mode, "holes")) {
		aio_context_t n = 0;
		if (io_setup(1, &n) || ((struct aio_ring *)n)->id != 1 || works(n, 0x5000) ||
		    io_destroy(n))
			why = "the empty slot";
	}
	if (!why && !strcmp(mode, "poll")) {
		struct timespec sec = {1, 0};
		if (write(pipes[1], "x", 1) != 1 || io_getevents(a, 1, 1, ev, &sec) != 1 ||
		    ev[0].data != 0x3000 || !(ev[0].res & POLLIN))
			why = "the poll";
	}
	if (!why && (io_destroy(a) || (!one && (io_destroy(w) || io_destroy(idle)))))
		why = "io_destroy";
	if (child)
		kill(child, SIGKILL);
	if (why)
		dprintf(out, "FAIL aio %s: %s\n", mode, why);
	else
		dprintf(out, "PASS aio %s\n", mode);
	return 0;
}
