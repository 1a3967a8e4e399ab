/*
 * Victim for a restore that hands the task new stdio: writes "tick N" to its stdout every
 * 50 ms, N counting in memory. On SIGTERM it checks that its stdout is still a pipe (with
 * argv[2] "tty": its controlling terminal, its group in the foreground) and exits 0 if so (2 if
 * not), writing PASS or FAIL to argv[1].
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <termios.h>
#include <unistd.h>

static int out, tty;

static void say(const char *s)
{
	write(out, s, strlen(s));
}

static void on_term(int sig)
{
	struct stat st;
	(void)sig;
	if (tty) {
		if (isatty(1) && tcgetpgrp(1) == getpgrp() && getsid(0) == getpid()) {
			say("PASS\n");
			_exit(0);
		}
		say("FAIL stdout is not its controlling terminal\n");
		_exit(2);
	}
	if (fstat(1, &st) == 0 && S_ISFIFO(st.st_mode)) {
		say("PASS\n");
		_exit(0);
	}
	say("FAIL stdout is no pipe\n");
	_exit(2);
}

int main(int argc, char **argv)
{
	char buf[64];
	struct timespec tick = {.tv_nsec = 50 * 1000 * 1000};
	out = open(argc > 1 ? argv[1] : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
	tty = argc > 2 && argv[2][0] == 't';
	signal(SIGTERM, on_term);
	signal(SIGPIPE, SIG_IGN);
	write(out, "ready\n", 6);
	for (unsigned long n = 1;; n++) {
		int len = snprintf(buf, sizeof(buf), "tick %lu\n", n);
		write(1, buf, len);
		nanosleep(&tick, NULL);
	}
}
