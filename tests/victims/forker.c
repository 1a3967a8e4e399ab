/*
 * Victim: keeps forking short-lived children (each lives ~30 ms) and reaps them, so that a
 * dump always meets a tree that is changing, with children being born and dying.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[64];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	write(out, buf, strlen(buf));
	struct timespec tick = {.tv_nsec = 2 * 1000 * 1000}, life = {.tv_nsec = 30 * 1000 * 1000};
	for (unsigned long n = 0;; n++) {
		if (fork() == 0) {
			nanosleep(&life, NULL);
			_exit(0);
		}
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		nanosleep(&tick, NULL);
	}
}
