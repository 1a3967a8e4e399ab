/*
 * Demo victim: counts in memory and appends "count N (pid P)" to argv[1] every 200 ms. After a
 * dump and restore it goes on from the number it had reached, under the same PID.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int out = open(argc > 1 ? argv[1] : "/dev/stdout", O_WRONLY | O_CREAT | O_APPEND, 0644);
	char buf[64];
	struct timespec tick = {.tv_nsec = 200 * 1000 * 1000};
	for (unsigned long n = 1;; n++) {
		int len = snprintf(buf, sizeof(buf), "count %lu (pid %d)\n", n, getpid());
		write(out, buf, len);
		nanosleep(&tick, NULL);
	}
}
