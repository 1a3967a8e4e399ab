/*
 * Victim: reports ready, sleeps argv[2] ms in nanosleep (a syscall the kernel restarts after a
 * restore), then exits with code 7. `criu restore` without -d must wait and return that code.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[64];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	long ms = argc > 2 ? atol(argv[2]) : 1000;
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	write(out, buf, strlen(buf));
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts))
		;
	write(out, "exiting\n", 8);
	return 7;
}
