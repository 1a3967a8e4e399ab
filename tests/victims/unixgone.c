/*
 * Unix sockets whose names are gone: in DIR/st, a stream connection whose listener was closed
 * (the path unlinked, the directory removed), with bytes queued both ways; in DIR/dg, two
 * datagram sockets bound one after the other at one name (unlinked in between), each with a
 * sender connected to it, and a datagram pair both bound at another; in DIR, a datagram socket
 * connected to its own name with a datagram queued. argv: OUT DIR. On SIGTERM
 * every message must reach its own socket, and neither directory may exist.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static struct sockaddr_un name(const char *dir, const char *sub, const char *leaf)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/%s/%s", dir, sub, leaf);
	return a;
}

static int got(int fd, const char *want)
{
	char buf[64] = {0};
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	return n == (ssize_t)strlen(want) && !memcmp(buf, want, n);
}

int main(int argc, char **argv)
{
	char msg[256], st[512], dg[512];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(st, sizeof(st), "%s/st", argv[2]);
	snprintf(dg, sizeof(dg), "%s/dg", argv[2]);
	mkdir(st, 0755);
	mkdir(dg, 0755);

	struct sockaddr_un a = name(argv[2], "st", "srv");
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(l, (void *)&a, sizeof(a)) || listen(l, 1) || connect(c, (void *)&a, sizeof(a)))
		return 2;
	int s = accept(l, NULL, NULL);
	close(l);
	unlink(a.sun_path);
	rmdir(st);
	send(c, "to server", 9, 0);
	send(s, "to client", 9, 0);

	int d[4], p[2];
	struct sockaddr_un b = name(argv[2], "dg", "one");
	for (int i = 0; i < 4; i += 2) {
		d[i] = socket(AF_UNIX, SOCK_DGRAM, 0);
		d[i + 1] = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (bind(d[i], (void *)&b, sizeof(b)) || connect(d[i + 1], (void *)&b, sizeof(b)))
			return 2;
		unlink(b.sun_path);
	}
	struct sockaddr_un pn = name(argv[2], "dg", "pair");
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, p) || bind(p[0], (void *)&pn, sizeof(pn)))
		return 2;
	unlink(pn.sun_path);
	if (bind(p[1], (void *)&pn, sizeof(pn)))
		return 2;
	unlink(pn.sun_path);
	rmdir(dg);
	struct sockaddr_un me = {.sun_family = AF_UNIX};
	snprintf(me.sun_path, sizeof(me.sun_path), "%s/self", argv[2]);
	int self = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (bind(self, (void *)&me, sizeof(me)) || connect(self, (void *)&me, sizeof(me)) ||
	    send(self, "me", 2, 0) != 2)
		return 2;

	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();

	const char *why = NULL;
	struct stat sb;
	if (!got(s, "to server") || !got(c, "to client"))
		why = "stream: the queued bytes";
	else if (send(c, "again", 5, 0) != 5 || !got(s, "again"))
		why = "stream: not connected";
	else if (send(d[1], "first", 5, 0) != 5 || send(d[3], "second", 6, 0) != 6 ||
		 !got(d[0], "first") || !got(d[2], "second"))
		why = "datagrams: a sender reaches the other socket of the name";
	else if (send(p[0], "ping", 4, 0) != 4 || !got(p[1], "ping"))
		why = "datagram pair";
	else if (!got(self, "me") || send(self, "me again", 8, 0) != 8 || !got(self, "me again"))
		why = "a socket connected to itself";
	else if (!stat(st, &sb) || !stat(dg, &sb))
		why = "a removed directory exists";
	snprintf(msg, sizeof(msg), why ? "FAIL unixgone: %s\n" : "PASS unixgone\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
