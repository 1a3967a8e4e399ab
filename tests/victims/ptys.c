/*
 * Pseudo-terminals the program opened itself. argv: OUT [interop].
 *
 * P (a session leader, started under setsid) holds:
 *  A: master and slave, the slave chowned to 4242:4243, its termios and window size changed;
 *     unread input on the slave (two lines and a partial one, which echoed) and unread output
 *     on the master.
 *  B: the master, whose slave is the controlling terminal of C (a child in a session of its
 *     own, holding /dev/tty), with G (C's child, in a group of its own) in the foreground.
 * "interop" leaves out what CRIU 4.2 refuses or changes: the queued data (it writes input
 * back with the terminal's echo on), /dev/tty (it wants it in the task that holds the
 * terminal's first descriptor it dumps), and G (it makes the controlling terminal after
 * the session leader's children, who come back without it): C keeps its slave, writes
 * through it, and has no child.
 *  D: a slave whose master was closed (hung up).
 *  E: a master never unlocked, in packet mode.
 * On SIGTERM each is checked: indices, settings, queued data byte for byte, sessions, the
 * foreground group, /dev/tty of C, the hangup, and SIGHUP to C when B's master goes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static volatile sig_atomic_t term, asked, hup;
static void on_term(int sig) { (void)sig; term = 1; }
static void on_usr1(int sig) { (void)sig; asked = 1; }
static void on_hup(int sig) { (void)sig; hup = 1; }

static int out;
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	write(out, buf, strlen(buf));
}

static int open_master(int *index, int unlock)
{
	int m = open("/dev/ptmx", O_RDWR | O_NOCTTY);
	if (m < 0 || ioctl(m, TIOCGPTN, index))
		exit(2);
	if (unlock) {
		int zero = 0;
		ioctl(m, TIOCSPTLCK, &zero);
	}
	return m;
}

static int open_slave(int index, int flags)
{
	char path[32];
	snprintf(path, sizeof(path), "/dev/pts/%d", index);
	return open(path, O_RDWR | flags);
}

/* The tty number /proc/PID/stat shows (field 7). */
static long tty_nr(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	long v[5];
	if (!p || sscanf(p + 2, "%*c %ld %ld %ld %ld", &v[0], &v[1], &v[2], &v[3]) != 4)
		return -1;
	return v[3];
}

/* Everything readable now on a non-blocking descriptor, one read() per chunk, joined by '|'. */
static int drain(int fd, char *buf, int size)
{
	int off = 0;
	for (;;) {
		ssize_t n = read(fd, buf + off, size - off - 2);
		if (n <= 0)
			break;
		off += n;
		buf[off++] = '|';
	}
	buf[off] = 0;
	return off;
}

static int pipefd[2];

/* C: leads its own session on B's slave, with G in the foreground. */
static int interop;

static void c_main(int ib)
{
	setsid();
	signal(SIGHUP, on_hup);
	signal(SIGUSR1, on_usr1);
	int s = open_slave(ib, 0); /* becomes the controlling terminal */
	int tty = s;
	if (!interop) {
		tty = open("/dev/tty", O_RDWR);
		close(s);
	}
	pid_t g = interop ? getpid() : fork();
	if (!g) {
		setpgid(0, 0);
		for (;;)
			pause();
	}
	signal(SIGTTOU, SIG_IGN);
	if (!interop) {
		setpgid(g, g);
		tcsetpgrp(tty, g);
	}
	char msg[32];
	int n = snprintf(msg, sizeof(msg), "%d\n", g);
	write(pipefd[1], msg, n);
	while (!asked)
		pause();
	/* Through /dev/tty to whoever holds B's master. */
	const char *why = NULL;
	if (write(tty, "via ctty\n", 9) != 9)
		why = "write /dev/tty";
	else if (getsid(0) != getpid())
		why = "not a session leader";
	while (!why && !hup)
		pause(); /* P closes B's master: SIGHUP, as the terminal's session leader */
	n = snprintf(msg, sizeof(msg), "%s\n", why ? why : "ok");
	write(pipefd[1], msg, n);
	if (g != getpid())
		kill(g, SIGKILL);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	interop = argc > 2 && !strcmp(argv[2], "interop");
	int data = !interop;
	int ia, ib, id, ie;
	int ma = open_master(&ia, 1);
	int sa = open_slave(ia, O_NOCTTY | O_NONBLOCK);
	int mb = open_master(&ib, 1);
	int md = open_master(&id, 1);
	int sd = open_slave(id, O_NOCTTY);
	int me = open_master(&ie, 0);
	int one = 1;
	if (sa < 0 || sd < 0 || ioctl(me, TIOCPKT, &one))
		return 2;
	close(md); /* D hangs up */
	fchown(sa, 4242, 4243);

	struct termios ta;
	tcgetattr(sa, &ta);
	ta.c_cc[VINTR] = 1;
	ta.c_cc[VEOL] = '#';
	ta.c_iflag |= IUTF8;
	cfsetospeed(&ta, B9600);
	tcsetattr(sa, TCSANOW, &ta);
	struct winsize wa = {.ws_row = 33, .ws_col = 101, .ws_xpixel = 7, .ws_ypixel = 9};
	ioctl(sa, TIOCSWINSZ, &wa);
	tcgetattr(sa, &ta);
	const char *in = "line one\nline#two\npart";
	const char *out_data = "out data\n";
	if (data) {
		write(ma, in, strlen(in));
		usleep(20000);
		write(sa, out_data, strlen(out_data));
		usleep(20000);
	}
	fcntl(ma, F_SETFL, O_NONBLOCK);

	pipe(pipefd);
	pid_t c = fork();
	if (!c) {
		/* Only P holds the masters: closing B's must hang it up. */
		close(ma), close(sa), close(mb), close(sd), close(me), close(pipefd[0]);
		c_main(ib);
	}
	char buf[256];
	int n = read(pipefd[0], buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	pid_t g = atoi(buf);
	struct stat sta;
	fstat(sa, &sta);

	signal(SIGTERM, on_term);
	say("ready pid=%d c=%d g=%d pty=%d,%d,%d,%d\n", getpid(), c, g, ia, ib, id, ie);
	while (!term)
		pause();

	char why[2200] = "";
	int idx, v;
	struct termios t;
	struct winsize w;
	struct stat st;
	pid_t sid = 0, pgrp = 0;
	if (ioctl(ma, TIOCGPTN, &idx) || idx != ia)
		snprintf(why, sizeof(why), "A index %d, was %d", idx, ia);
	else if (ioctl(mb, TIOCGPTN, &idx) || idx != ib)
		snprintf(why, sizeof(why), "B index %d, was %d", idx, ib);
	else if (ioctl(me, TIOCGPTN, &idx) || idx != ie)
		snprintf(why, sizeof(why), "E index %d, was %d", idx, ie);
	else if (tcgetattr(sa, &t) || memcmp(&t, &ta, sizeof(t)))
		snprintf(why, sizeof(why), "A termios changed");
	else if (ioctl(sa, TIOCGWINSZ, &w) || memcmp(&w, &wa, sizeof(w)))
		snprintf(why, sizeof(why), "A window size %dx%d", w.ws_row, w.ws_col);
	else if (fstat(sa, &st) || st.st_uid != 4242 || st.st_gid != 4243 ||
		 st.st_mode != sta.st_mode || st.st_rdev != sta.st_rdev)
		snprintf(why, sizeof(why), "A slave %d:%d mode %o", st.st_uid, st.st_gid, st.st_mode);
	else if (ioctl(me, TIOCGPKT, &v) || v != 1)
		snprintf(why, sizeof(why), "E not in packet mode");
	else if (ioctl(me, TIOCGPTLCK, &v) || v != 1)
		snprintf(why, sizeof(why), "E not locked");
	else if (ioctl(mb, TIOCGSID, &sid) || sid != c)
		snprintf(why, sizeof(why), "B session %d, was %d", sid, c);
	else if (ioctl(mb, TIOCGPGRP, &pgrp) || pgrp != g)
		snprintf(why, sizeof(why), "B foreground %d, was %d", pgrp, g);
	else if (tty_nr(c) != (long)makedev(136, ib) || tty_nr(g) != tty_nr(c) || tty_nr(getpid()) != 0)
		snprintf(why, sizeof(why), "controlling ttys %ld %ld %ld", tty_nr(c), tty_nr(g),
			 tty_nr(getpid()));
	else if (read(sd, buf, 1) != 0 || write(sd, "x", 1) != -1 || errno != EIO)
		snprintf(why, sizeof(why), "D not hung up");
	if (!why[0] && data) {
		/* Input: two whole lines, then the partial one completes; output: as echoed. */
		char got[2048];
		drain(sa, got, sizeof(got));
		if (strcmp(got, "line one\n|line#|two\n|"))
			snprintf(why, sizeof(why), "A input [%s]", got);
		drain(ma, got, sizeof(got));
		if (!why[0] && strcmp(got, "line one\r\nline#two\r\npartout data\r\n|"))
			snprintf(why, sizeof(why), "A output [%s]", got);
		write(ma, "!\n", 2);
		usleep(20000);
		drain(sa, got, sizeof(got));
		if (!why[0] && strcmp(got, "part!\n|"))
			snprintf(why, sizeof(why), "A input after [%s]", got);
	}
	if (!why[0]) {
		char got[2048];
		/* A still works both ways, without anything queued. */
		write(sa, "up\n", 3);
		usleep(20000);
		drain(ma, got, sizeof(got));
		if (strncmp(got, data ? "!\r\nup\r\n|" : "up\r\n|", 8))
			snprintf(why, sizeof(why), "A after [%s]", got);
	}
	if (!why[0]) {
		char got[2048];
		kill(c, SIGUSR1);
		usleep(50000);
		fcntl(mb, F_SETFL, O_NONBLOCK);
		drain(mb, got, sizeof(got));
		if (strcmp(got, "via ctty\r\n|"))
			snprintf(why, sizeof(why), "B got [%s]", got);
		close(mb);
		n = read(pipefd[0], buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = 0;
		if (!why[0] && strcmp(buf, "ok\n"))
			snprintf(why, sizeof(why), "C: %s", buf);
	}
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	if (why[0])
		say("FAIL ptys: %s\n", why);
	else
		say("PASS ptys\n");
	return 0;
}
