/*
 * Victim for inet sockets: serves on TCP and UDP, in IPv4 and IPv6, and counts while it waits.
 *
 *   inet OUT PORT [hold]
 *
 *   PORT      TCP listener on 127.0.0.1 (SO_REUSEADDR, SO_KEEPALIVE, backlog 7, O_NONBLOCK)
 *   PORT + 1  TCP listener on [::1] (IPV6_V6ONLY, SO_RCVBUF set)
 *   PORT + 2  UDP socket bound to 127.0.0.1: answers each datagram
 *   a UDP socket connected to 127.0.0.1:PORT + 2, and a TCP socket bound to PORT + 3 that never
 *   listens
 *
 * A TCP client gets one line: the counter, the secret chosen at start, what the socket options
 * read now, and whether a datagram sent over the connected UDP socket arrived at the bound one.
 * The client is expected to close first. With "hold" the accepted connections are kept open (an
 * established connection to refuse).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int out;

static void say(const char *s)
{
	if (write(out, s, strlen(s)) < 0)
		exit(3);
}

static void die(const char *what)
{
	char buf[160];
	snprintf(buf, sizeof(buf), "FAIL %s: %s\n", what, strerror(errno));
	say(buf);
	exit(1);
}

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, level, name, &v, &len))
		die("getsockopt");
	return v;
}

static int tcp4(int port, int listening)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (listening) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	}
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
		die("bind tcp4");
	if (listening && listen(fd, 7))
		die("listen tcp4");
	if (listening)
		fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

static int tcp6(int port)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0), one = 1, buf = 100000;
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	inet_pton(AF_INET6, "::1", &a.sin6_addr);
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
		die("bind tcp6");
	if (listen(fd, 3))
		die("listen tcp6");
	return fd;
}

static int udp(int port, int connected)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if ((connected ? connect : bind)(fd, (struct sockaddr *)&a, sizeof(a)))
		die(connected ? "connect udp" : "bind udp");
	return fd;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int port = atoi(argv[2]);
	int hold = argc > 3 && !strcmp(argv[3], "hold");
	srand(getpid() ^ time(NULL));
	unsigned secret = (unsigned)rand();
	int l4 = tcp4(port, 1), l6 = tcp6(port + 1), us = udp(port + 2, 0), uc = udp(port + 2, 1);
	int idle = tcp4(port + 3, 0);
	char buf[512];
	snprintf(buf, sizeof(buf), "ready pid=%d secret=%u\n", getpid(), secret);
	say(buf);

	unsigned long counter = 0;
	for (;;) {
		struct pollfd p[3] = { { l4, POLLIN, 0 }, { l6, POLLIN, 0 }, { us, POLLIN, 0 } };
		int n = poll(p, 3, 20);
		if (n < 0 && errno != EINTR)
			die("poll");
		if (n <= 0) {
			counter++;
			continue;
		}
		if (p[2].revents & POLLIN) {
			struct sockaddr_storage from;
			socklen_t flen = sizeof(from);
			char d[64];
			ssize_t got = recvfrom(us, d, sizeof(d), MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
			if (got > 0) {
				int len = snprintf(buf, sizeof(buf), "udp counter=%lu secret=%u", counter, secret);
				sendto(us, buf, len, 0, (struct sockaddr *)&from, flen);
			}
		}
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & POLLIN))
				continue;
			int c = accept(p[i].fd, NULL, NULL);
			if (c < 0)
				continue;
			/* The connected UDP socket still reaches the bound one. */
			char d[16] = "";
			int loop = send(uc, "loop", 4, 0) == 4;
			struct pollfd w = { us, POLLIN, 0 };
			loop = loop && poll(&w, 1, 1000) == 1 && recv(us, d, sizeof(d), 0) == 4 &&
			       !memcmp(d, "loop", 4);
			struct sockaddr_in6 me;
			socklen_t mlen = sizeof(me);
			getsockname(idle, (struct sockaddr *)&me, &mlen);
			int len = snprintf(
				buf, sizeof(buf),
				"counter=%lu secret=%u family=%d reuseaddr=%d keepalive=%d nonblock=%d "
				"v6only=%d rcvbuf=%d udploop=%d idleport=%d\n",
				counter, secret, i ? 6 : 4, opt(p[i].fd, SOL_SOCKET, SO_REUSEADDR),
				opt(p[i].fd, SOL_SOCKET, SO_KEEPALIVE), !!(fcntl(p[i].fd, F_GETFL) & O_NONBLOCK),
				i ? opt(l6, IPPROTO_IPV6, IPV6_V6ONLY) : -1, i ? opt(l6, SOL_SOCKET, SO_RCVBUF) : -1,
				loop, ntohs(me.sin6_port));
			if (write(c, buf, len) != len)
				die("write");
			if (hold)
				continue;
			/* The client closes first, so that TIME_WAIT stays on its side. */
			struct pollfd e = { c, POLLIN, 0 };
			if (poll(&e, 1, 2000) == 1)
				(void)!read(c, d, sizeof(d));
			close(c);
		}
	}
}
