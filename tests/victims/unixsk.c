/*
 * Victim: unix sockets with data in flight.
 *
 *   - a stream socketpair with "hello stream" queued one way and "back" the other way
 *   - a datagram socketpair with "one", "two", "three" queued (boundaries must hold)
 *   - a seqpacket socketpair with "alpha", "beta" queued
 *   - a listening stream socket bound to DIR/listen.sock
 *   - an abstract datagram socket with two datagrams queued from a sender since closed
 *   - a stream socketpair shared with a child process, which answers "pong" to "ping"
 *   - a listener DIR/conn.sock with one accepted connection (data queued both ways) and one
 *     connection still waiting to be accepted
 *   - options on the pairs: a receive timeout, a send timeout, a send buffer size
 *
 * On SIGTERM it checks all of it and prints PASS or FAIL with the reason.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }
static int out;

#define CHECK(cond, what)                                   \
	do {                                                \
		if (!(cond)) {                              \
			write(out, "FAIL " what "\n", strlen("FAIL " what "\n")); \
			return 1;                           \
		}                                           \
	} while (0)

static int got(int fd, const char *want)
{
	char buf[64] = {0};
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	return n == (ssize_t)strlen(want) && !memcmp(buf, want, n);
}

int main(int argc, char **argv)
{
	char buf[256];
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int sp[2], dp[2], qp[2], cp[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
	socketpair(AF_UNIX, SOCK_DGRAM, 0, dp);
	socketpair(AF_UNIX, SOCK_SEQPACKET, 0, qp);
	socketpair(AF_UNIX, SOCK_STREAM, 0, cp);
	send(sp[1], "hello stream", 12, 0);
	send(sp[0], "back", 4, 0);
	send(dp[1], "one", 3, 0);
	send(dp[1], "two", 3, 0);
	send(dp[1], "three", 5, 0);
	send(qp[1], "alpha", 5, 0);
	send(qp[1], "beta", 4, 0);
	struct timeval rto = {3, 500000}, sto = {1, 0};
	int sndbuf = 100000;
	setsockopt(dp[0], SOL_SOCKET, SO_RCVTIMEO, &rto, sizeof(rto));
	setsockopt(qp[1], SOL_SOCKET, SO_SNDTIMEO, &sto, sizeof(sto));
	setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));

	struct sockaddr_un la = {.sun_family = AF_UNIX};
	snprintf(la.sun_path, sizeof(la.sun_path), "%s/listen.sock", argv[2]);
	unlink(la.sun_path);
	int ls = socket(AF_UNIX, SOCK_STREAM, 0);
	bind(ls, (struct sockaddr *)&la, sizeof(la));
	listen(ls, 7);

	struct sockaddr_un aa = {.sun_family = AF_UNIX};
	int alen = snprintf(aa.sun_path + 1, sizeof(aa.sun_path) - 1, "deno-criu-test-%d", getpid()) + 1 +
		   (int)sizeof(sa_family_t);
	int as = socket(AF_UNIX, SOCK_DGRAM, 0);
	bind(as, (struct sockaddr *)&aa, alen);
	int sender = socket(AF_UNIX, SOCK_DGRAM, 0);
	sendto(sender, "d1", 2, 0, (struct sockaddr *)&aa, alen);
	sendto(sender, "d2", 2, 0, (struct sockaddr *)&aa, alen);
	close(sender);

	struct sockaddr_un ca = {.sun_family = AF_UNIX};
	snprintf(ca.sun_path, sizeof(ca.sun_path), "%s/conn.sock", argv[2]);
	unlink(ca.sun_path);
	int l2 = socket(AF_UNIX, SOCK_STREAM, 0);
	bind(l2, (struct sockaddr *)&ca, sizeof(ca));
	listen(l2, 4);
	int c1 = socket(AF_UNIX, SOCK_STREAM, 0);
	connect(c1, (struct sockaddr *)&ca, sizeof(ca));
	int s1 = accept(l2, NULL, NULL);
	send(c1, "from client", 11, 0);
	send(s1, "from server", 11, 0);
	int c2 = socket(AF_UNIX, SOCK_STREAM, 0);
	connect(c2, (struct sockaddr *)&ca, sizeof(ca));

	pid_t child = fork();
	if (child == 0) {
		char b[8];
		for (;;) {
			ssize_t n = read(cp[1], b, 4);
			if (n == 4 && !memcmp(b, "ping", 4))
				write(cp[1], "pong", 4);
			if (n <= 0)
				_exit(0);
		}
	}
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d child=%d\n", getpid(), child);
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	struct timeval tv;
	socklen_t tl = sizeof(tv);
	CHECK(getsockopt(dp[0], SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) == 0 && tv.tv_sec == 3 &&
		      tv.tv_usec == 500000, "receive timeout");
	CHECK(getsockopt(qp[1], SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) == 0 && tv.tv_sec == 1 &&
		      tv.tv_usec == 0, "send timeout");
	int v = 0;
	socklen_t vl = sizeof(v);
	CHECK(getsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &v, &vl) == 0 && v == 2 * sndbuf, "send buffer");
	CHECK(got(sp[0], "hello stream"), "stream queue");
	CHECK(got(sp[1], "back"), "stream queue back");
	CHECK(got(dp[0], "one") && got(dp[0], "two") && got(dp[0], "three"), "dgram queue");
	CHECK(got(qp[0], "alpha") && got(qp[0], "beta"), "seqpacket queue");
	CHECK(got(as, "d1") && got(as, "d2"), "abstract dgram queue");
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(connect(c, (struct sockaddr *)&la, sizeof(la)) == 0, "connect to listener");
	int a = accept(ls, NULL, NULL);
	CHECK(a >= 0 && send(c, "x", 1, 0) == 1 && got(a, "x"), "accept");
	CHECK(got(s1, "from client") && got(c1, "from server"), "accepted connection queues");
	struct sockaddr_un sn;
	socklen_t snl = sizeof(sn);
	CHECK(getsockname(s1, (struct sockaddr *)&sn, &snl) == 0 && !strcmp(sn.sun_path, ca.sun_path), "accepted name");
	int a2 = accept(l2, NULL, NULL);
	CHECK(a2 >= 0 && send(a2, "hi", 2, 0) == 2 && got(c2, "hi"), "pending connection");
	CHECK(write(cp[0], "ping", 4) == 4, "ping");
	char b[8] = {0};
	CHECK(read(cp[0], b, 4) == 4 && !memcmp(b, "pong", 4), "pong from the child");
	write(out, "PASS unix\n", 10);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return 0;
}
