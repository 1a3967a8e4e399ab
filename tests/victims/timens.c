/*
 * The monotonic and boot clocks across a checkpoint: as with criu, the restored task's clocks go
 * on from where they stood at the dump (a time namespace of its own hides the pause), and never
 * go back. argv: OUT GAP_MS. On SIGTERM the real time elapsed since it started must exceed the
 * monotonic and boot times elapsed by at least GAP_MS (the time it spent checkpointed), and its
 * time namespace must be another than PID 1's when GAP_MS > 0. Prints PASS or FAIL.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static long long ms(clockid_t c)
{
	struct timespec t;
	clock_gettime(c, &t);
	return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	long long gap = argc > 2 ? atoll(argv[2]) : 0;
	long long r0 = ms(CLOCK_REALTIME), m0 = ms(CLOCK_MONOTONIC), b0 = ms(CLOCK_BOOTTIME);
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d\n", getpid());
	while (!term)
		pause();
	long long r = ms(CLOCK_REALTIME) - r0, m = ms(CLOCK_MONOTONIC) - m0,
		  b = ms(CLOCK_BOOTTIME) - b0;
	struct stat me, init;
	stat("/proc/self/ns/time", &me);
	stat("/proc/1/ns/time", &init);
	const char *why = NULL;
	if (m < 0 || b < 0)
		why = "a clock went back";
	else if (r - m < gap || r - b < gap)
		why = "the pause shows in the monotonic or boot clock";
	else if (gap > 0 && me.st_ino == init.st_ino)
		why = "in PID 1's time namespace";
	dprintf(out, "%s timens (real %lld ms, monotonic %lld, boot %lld)\n", why ? "FAIL" : "PASS",
		r, m, b);
	if (why)
		dprintf(out, "FAIL timens: %s\n", why);
	return 0;
}
