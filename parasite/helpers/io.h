/*
 * Whole reads and writes on pipes for the helpers, retried on EINTR and short counts.
 */
#ifndef DENO_CRIU_HELPERS_IO_H
#define DENO_CRIU_HELPERS_IO_H

#include "../syscall.h"

/* Moves exactly n bytes through read or write (nr); 0 on end of file or error. */
static int io_all(s64 nr, int fd, char *p, u64 n)
{
	while (n) {
		s64 r = sys3(nr, fd, (s64)p, n);
		if (r == -EINTR)
			continue;
		if (r <= 0)
			return 0;
		p += r;
		n -= r;
	}
	return 1;
}

/* Reads exactly n bytes; 0 on end of file or error. */
static int read_all(int fd, char *p, u64 n)
{
	return io_all(NR_read, fd, p, n);
}

/* Writes all n bytes; 0 on error. */
static int write_all(int fd, const char *p, u64 n)
{
	return io_all(NR_write, fd, (char *)p, n);
}

/* The decimal number `s` starts with (a PID, a uid). */
static inline s64 decimal(const char *s)
{
	s64 n = 0;
	for (; *s >= '0' && *s <= '9'; s++)
		n = n * 10 + (*s - '0');
	return n;
}

#endif
