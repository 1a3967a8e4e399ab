/*
 * Victim for established TCP connections: both ends pump a stream of 32-bit counters at each
 * other and check every one they receive, so a lost, duplicated or reordered byte shows.
 *
 *   tcp OUT pair PORT              a server on 127.0.0.1:PORT and its client, in two processes
 *   tcp OUT pair6 PORT             the same over [::1]
 *   tcp OUT server ADDR PORT       a server (IPv4) taking one connection
 *   tcp OUT client ADDR PORT       a client (IPv4)
 *   tcp OUT halfpair PORT          a pair whose client shut down its writing side at once: the
 *                                  server reads EOF (CLOSE_WAIT) and goes on sending
 *   tcp OUT halfpair6 PORT         the same over [::1]
 *   tcp OUT stuckfin PORT          a client whose FIN waits behind data its server does not
 *                                  read yet (FIN_WAIT1); see stuckfin()
 *   tcp OUT lastack PORT           the same after the server half-closed first (LAST_ACK)
 *
 * SIGUSR2 stops a process reading, and the next lets it read again.
 *
 * TCP_ANY_MSS=1 in the environment drops the segment size check below: a connection restored by
 * CRIU 4.2 sends 524-byte segments until its peer offers a window larger than any before.
 *
 * Reports: "ready pid=P" once connected (P: the tree's root), "tick ROLE sent=N recv=M" every
 * 200 ms. SIGTERM: each process prints "PASS ROLE sent=N recv=M nodelay=0|1" (a client sets
 * TCP_NODELAY, a server does not) (or "FAIL ROLE ..." as soon as something is wrong: a bad
 * counter, a reset, an early EOF, over IPv4 a segment size (TCP_MAXSEG) smaller than the
 * connection's at its start: it only grows, with the largest window the peer offered), keeps its socket open for two seconds and exits; the root of a
 * pair passes SIGTERM on to its child. The receiving side reads slowly, so queues are full in
 * both directions.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int out;
static volatile sig_atomic_t stop;
/* SIGUSR2 toggles it: the process reads nothing meanwhile (its receive queue fills up). */
static volatile sig_atomic_t paused;

static void on_usr2(int sig)
{
	(void)sig;
	paused = !paused;
}
static const char *role = "?";
/* TCP_ANY_MSS: the segment size is not checked (see the top). */
static int any_mss;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (write(out, buf, n) < 0)
		exit(3);
}

static void die(const char *what)
{
	say("FAIL %s %s: %s\n", role, what, strerror(errno));
	exit(1);
}

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The connection's segment size (what it sends at most), or -1 if not over IPv4. */
static int mss_v4(int fd)
{
	struct sockaddr_storage a;
	socklen_t al = sizeof(a);
	int mss = -1;
	socklen_t l = sizeof(mss);
	if (getsockname(fd, (struct sockaddr *)&a, &al) || a.ss_family != AF_INET)
		return -1;
	getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, &l);
	return mss;
}

/* Sends counters and checks the peer's until SIGTERM (or, half-closed, until EOF is due). */
static void pump(int fd, int can_send, int can_recv)
{
	const int mss = mss_v4(fd);
	uint32_t next_out = 0, next_in = 0;
	unsigned char obuf[4096], ibuf[1536];
	size_t opos = 0, olen = 0, ipos = 0;
	unsigned char partial[4];
	int eof = 0;
	double last = 0;

	while (!stop) {
		struct pollfd p = { .fd = fd,
				    .events = (can_send ? POLLOUT : 0) | (paused ? 0 : POLLIN) };
		if (poll(&p, 1, 2) < 0 && errno != EINTR)
			die("poll");
		if (p.revents & (POLLERR)) {
			int err = 0;
			socklen_t l = sizeof(err);
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
			errno = err;
			die("socket error");
		}
		if (can_send && (p.revents & POLLOUT)) {
			if (opos == olen) {
				for (olen = 0; olen < sizeof(obuf); olen += 4) {
					uint32_t v = htonl(next_out++);
					memcpy(obuf + olen, &v, 4);
				}
				opos = 0;
			}
			ssize_t n = send(fd, obuf + opos, olen - opos, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				die("send");
			if (n > 0)
				opos += n;
		}
		if (!paused && (p.revents & (POLLIN | POLLHUP))) {
			ssize_t n = recv(fd, ibuf, sizeof(ibuf), MSG_DONTWAIT);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				die("recv");
			if (n == 0 && !eof) {
				if (can_recv) {
					say("FAIL %s early EOF after %u\n", role, next_in);
					exit(1);
				}
				eof = 1;
			}
			if (n > 0 && !can_recv) {
				say("FAIL %s data after EOF\n", role);
				exit(1);
			}
			for (ssize_t i = 0; i < n; i++) {
				partial[ipos++] = ibuf[i];
				if (ipos < 4)
					continue;
				ipos = 0;
				uint32_t v;
				memcpy(&v, partial, 4);
				if (ntohl(v) != next_in) {
					say("FAIL %s got %u, expected %u\n", role, ntohl(v), next_in);
					exit(1);
				}
				next_in++;
			}
			if (eof)
				usleep(1000);
		}
		double t = now();
		if (t - last > 0.2) {
			say("tick %s sent=%u recv=%u\n", role, next_out - (uint32_t)(olen - opos) / 4, next_in);
			last = t;
		}
	}
	/* Half-closed: the peer's FIN is still there to read, and our own side is still shut. */
	if (!can_recv && (!eof || recv(fd, ibuf, 1, MSG_DONTWAIT) != 0)) {
		say("FAIL %s no EOF from the peer\n", role);
		exit(1);
	}
	if (!can_send && (send(fd, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL) != -1 || errno != EPIPE)) {
		say("FAIL %s could write after shutdown\n", role);
		exit(1);
	}
	if (!any_mss && mss_v4(fd) < mss) {
		say("FAIL %s segment size %d, was %d\n", role, mss_v4(fd), mss);
		exit(1);
	}
	int nodelay = 0;
	socklen_t l = sizeof(nodelay);
	getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &l);
	say("PASS %s sent=%u recv=%u nodelay=%d\n", role, next_out - (uint32_t)(olen - opos) / 4,
	    next_in, nodelay);
}

/* After the verdict, the socket stays open a while: the peer, told to stop at the same time,
 * must not see a reset (closing with unread bytes sends one) before it gave its own. */
static void linger_then_exit(pid_t child)
{
	if (child > 0)
		kill(child, SIGTERM);
	sleep(2);
	if (child > 0)
		waitpid(child, NULL, 0);
	exit(0);
}

/* Fills `ss` with ADDR:PORT of `family`; returns its length. */
static socklen_t sockaddr_of(int family, const char *addr, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (void *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		inet_pton(AF_INET, addr, &a->sin_addr);
		return sizeof(*a);
	}
	struct sockaddr_in6 *a = (void *)ss;
	a->sin6_family = AF_INET6;
	a->sin6_port = htons(port);
	inet_pton(AF_INET6, addr, &a->sin6_addr);
	return sizeof(*a);
}

static int listener(int family, const char *addr, int port)
{
	int fd = socket(family, SOCK_STREAM, 0), one = 1;
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(family, addr, port, &ss);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (void *)&ss, len) || listen(fd, 4))
		die("listen");
	return fd;
}

/* The first connection of listener `l`, which is closed then. */
static int accept_one(int l)
{
	int fd = accept(l, NULL, NULL);
	if (fd < 0)
		die("accept");
	close(l);
	return fd;
}

static int connect_to(int family, const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(family, addr, port, &ss);
	for (int tries = 0; tries < 200; tries++) {
		int fd = socket(family, SOCK_STREAM, 0);
		if (connect(fd, (void *)&ss, len) == 0) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			return fd;
		}
		close(fd);
		usleep(20000);
	}
	die("connect");
	return -1;
}

/*
 * stuckfin: the client fills the connection (the server does not read) and shuts its writing
 * side: its FIN waits behind the data (FIN_WAIT1). On SIGTERM the server reads everything,
 * checks every counter and the EOF, and reports how many it got.
 * lastack: the same, but the server shut its own writing side first, so the client fills and
 * shuts a connection in CLOSE_WAIT: LAST_ACK, its FIN behind the data; the server in FIN_WAIT2.
 */
static void stuckfin(int port, int lastack)
{
	int l = listener(AF_INET, "127.0.0.1", port);
	pid_t child = fork();
	if (child == 0) {
		role = "server";
		int fd = accept_one(l);
		if (lastack && shutdown(fd, SHUT_WR))
			die("shutdown");
		while (!stop)
			pause();
		uint32_t next = 0, v;
		unsigned char b[4];
		size_t have = 0;
		for (;;) {
			ssize_t n = recv(fd, b + have, 4 - have, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				die("recv");
			if (n == 0)
				break;
			have += n;
			if (have < 4)
				continue;
			have = 0;
			memcpy(&v, b, 4);
			if (ntohl(v) != next) {
				say("FAIL server got %u, expected %u\n", ntohl(v), next);
				exit(1);
			}
			next++;
		}
		say("%s server recv=%u\n", have ? "FAIL" : "PASS", next);
		exit(0);
	}
	close(l);
	role = "client";
	int fd = connect_to(AF_INET, "127.0.0.1", port);
	char c;
	if (lastack && recv(fd, &c, 1, 0) != 0)
		die("no EOF from the server");
	uint32_t sent = 0;
	for (;;) {
		uint32_t v = htonl(sent);
		ssize_t n = send(fd, &v, 4, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n == 4) {
			sent++;
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			break;
		die("send");
	}
	if (shutdown(fd, SHUT_WR))
		die("shutdown");
	say("ready pid=%d child=%d sent=%u\n", getpid(), child, sent);
	while (!stop)
		pause();
	kill(child, SIGTERM);
	waitpid(child, NULL, 0);
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	out = open(argv[1], 01 | 02000 | 0100, 0644); /* O_WRONLY | O_APPEND | O_CREAT */
	if (out < 0)
		return 2;
	signal(SIGTERM, on_term);
	signal(SIGUSR2, on_usr2);
	signal(SIGPIPE, SIG_IGN);
	const char *mode = argv[2];
	any_mss = getenv("TCP_ANY_MSS") != NULL;

	if (!strcmp(mode, "server") || !strcmp(mode, "client")) {
		if (argc < 5)
			return 2;
		int port = atoi(argv[4]), fd;
		if (!strcmp(mode, "server")) {
			role = "server";
			int l = listener(AF_INET, argv[3], port);
			say("listening pid=%d\n", getpid());
			fd = accept_one(l);
		} else {
			role = "client";
			fd = connect_to(AF_INET, argv[3], port);
		}
		say("ready pid=%d\n", getpid());
		pump(fd, 1, 1);
		linger_then_exit(0);
	}

	if (!strcmp(mode, "stuckfin") || !strcmp(mode, "lastack"))
		stuckfin(atoi(argv[3]), !strcmp(mode, "lastack"));
	int six = !strcmp(mode, "pair6") || !strcmp(mode, "halfpair6");
	int half = !strncmp(mode, "halfpair", 8);
	int family = six ? AF_INET6 : AF_INET;
	const char *addr = six ? "::1" : "127.0.0.1";
	int port = atoi(argv[3]);
	int l = listener(family, addr, port);
	pid_t child = fork();
	if (child == 0) {
		role = "server";
		int fd = accept_one(l);
		/* Half-closed: the client sends nothing and shut its side; we only send. */
		pump(fd, 1, !half);
		linger_then_exit(0);
	}
	close(l);
	role = "client";
	int fd = connect_to(family, addr, port);
	if (half && shutdown(fd, SHUT_WR))
		die("shutdown");
	say("ready pid=%d child=%d\n", getpid(), child);
	pump(fd, !half, 1);
	linger_then_exit(child);
}
