/*
 * Victim: socket state a restore must give back exactly.
 *
 *   tcp      a listener with SO_REUSEADDR, SO_KEEPALIVE, TCP_KEEPIDLE 77, SO_LINGER {1, 5},
 *            TCP_NODELAY, TCP_CORK, IP_TOS 0x10, IP_FREEBIND
 *   all      the sockets that did not set SO_LINGER have it off (a close sends FIN, not RST);
 *            SO_BUF_LOCK as it was (a size set by hand stays locked, others tuned)
 *   udp      one with a classic BPF filter (accept 32 bytes at most), SO_PRIORITY 3 and
 *            SO_RCVBUF set; one
 *            connected and shut down for writing (sending fails with EPIPE)
 *   unix     a stream socket with SO_PASSCRED listening at a name relative to the working
 *            directory, its file mode 0640; a stream pair whose other end was closed with
 *            bytes in flight (read them, then end-of-file); a named datagram socket with two
 *            senders connected to it, its file deleted afterwards (they can still send)
 *
 * argv: OUT DIR PORT. Prints "ready pid=P"; on SIGTERM checks it all, PASS or FAIL <what>.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int out, tcp_l, udp_f, udp_s, ux_l, ux_half, dg_srv, dg_cli[2];
static const char *failed;

static void say(const char *s) { write(out, s, strlen(s)); }
static void fail(const char *why) { if (!failed) failed = why; }

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	getsockopt(fd, level, name, &v, &len);
	return v;
}

static void check(int sig)
{
	(void)sig;
	if (!opt(tcp_l, SOL_SOCKET, SO_REUSEADDR) || !opt(tcp_l, SOL_SOCKET, SO_KEEPALIVE) ||
	    opt(tcp_l, IPPROTO_TCP, TCP_KEEPIDLE) != 77)
		fail("SO_REUSEADDR, SO_KEEPALIVE or TCP_KEEPIDLE");
	struct linger lg = {0};
	socklen_t len = sizeof(lg);
	getsockopt(tcp_l, SOL_SOCKET, SO_LINGER, &lg, &len);
	if (!lg.l_onoff || lg.l_linger != 5)
		fail("SO_LINGER");
	int others[] = {udp_f, udp_s, ux_l, ux_half, dg_srv, dg_cli[0], dg_cli[1]};
	for (unsigned i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		struct linger off = {1, 1};
		len = sizeof(off);
		getsockopt(others[i], SOL_SOCKET, SO_LINGER, &off, &len);
		if (off.l_onoff)
			fail("SO_LINGER on a socket that never set it");
	}
#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif
	int lock_f = opt(udp_f, SOL_SOCKET, SO_BUF_LOCK), lock_s = opt(udp_s, SOL_SOCKET, SO_BUF_LOCK);
	if (lock_f >= 0 && (lock_f != 2 || lock_s != 0))
		fail("SO_BUF_LOCK");
	if (!opt(tcp_l, IPPROTO_TCP, TCP_NODELAY) || !opt(tcp_l, IPPROTO_TCP, TCP_CORK))
		fail("TCP_NODELAY or TCP_CORK");
	if (opt(tcp_l, IPPROTO_IP, IP_TOS) != 0x10 || !opt(tcp_l, IPPROTO_IP, IP_FREEBIND))
		fail("IP_TOS or IP_FREEBIND");
	struct sock_filter flt[4];
	len = 0;
	getsockopt(udp_f, SOL_SOCKET, SO_ATTACH_FILTER, NULL, &len);
	if (len != 1 || getsockopt(udp_f, SOL_SOCKET, SO_ATTACH_FILTER, flt, &len) || flt[0].k != 32)
		fail("socket filter");
	if (opt(udp_f, SOL_SOCKET, SO_PRIORITY) != 3)
		fail("SO_PRIORITY");
	if (send(udp_s, "x", 1, MSG_DONTWAIT) != -1 || errno != EPIPE)
		fail("a UDP socket shut down for writing can send");
	if (!opt(ux_l, SOL_SOCKET, SO_PASSCRED))
		fail("SO_PASSCRED");
	struct stat st;
	if (stat("ux.sock", &st) || (st.st_mode & 0777) != 0640)
		fail("mode of the unix socket file");
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX, .sun_path = "ux.sock"};
	if (connect(c, (struct sockaddr *)&a, sizeof(a)))
		fail("connect to the relative name");
	close(c);
	char buf[16];
	if (read(ux_half, buf, sizeof(buf)) != 5 || memcmp(buf, "half!", 5) || read(ux_half, buf, 1) != 0)
		fail("bytes sent before the peer closed, then end-of-file");
	for (int i = 0; i < 2; i++)
		if (send(dg_cli[i], "dgram", 5, 0) != 5)
			fail("sending to a datagram socket whose file was deleted");
	for (int i = 0; i < 2; i++)
		if (recv(dg_srv, buf, sizeof(buf), MSG_DONTWAIT) != 5)
			fail("datagrams lost");
	say(failed ? "FAIL " : "PASS");
	say(failed ? failed : "");
	say("\n");
	_exit(failed ? 1 : 0);
}

int main(int argc, char **argv)
{
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (chdir(argv[2]))
		return 1;
	int one = 1, port = atoi(argv[3]);

	tcp_l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(tcp_l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(tcp_l, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	int idle = 77, tos = 0x10;
	setsockopt(tcp_l, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	struct linger lg = {1, 5};
	setsockopt(tcp_l, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	setsockopt(tcp_l, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(tcp_l, IPPROTO_TCP, TCP_CORK, &one, sizeof(one));
	setsockopt(tcp_l, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
	setsockopt(tcp_l, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one));
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(port)};
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(tcp_l, (struct sockaddr *)&in, sizeof(in)) || listen(tcp_l, 8))
		return 1;

	udp_f = socket(AF_INET, SOCK_DGRAM, 0);
	struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, 32)};
	struct sock_fprog prog = {.len = 1, .filter = code};
	setsockopt(udp_f, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
	int prio = 3;
	setsockopt(udp_f, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio));
	int rcvbuf = 100000; /* set by hand: locked (SO_BUF_LOCK bit 2) */
	setsockopt(udp_f, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	udp_s = socket(AF_INET, SOCK_DGRAM, 0);
	connect(udp_s, (struct sockaddr *)&in, sizeof(in));
	shutdown(udp_s, SHUT_WR);

	ux_l = socket(AF_UNIX, SOCK_STREAM, 0);
	setsockopt(ux_l, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "ux.sock"};
	unlink("ux.sock");
	if (bind(ux_l, (struct sockaddr *)&un, sizeof(un)) || listen(ux_l, 4))
		return 1;
	chmod("ux.sock", 0640);
	int pair[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
	write(pair[1], "half!", 5);
	close(pair[1]);
	ux_half = pair[0];

	dg_srv = socket(AF_UNIX, SOCK_DGRAM, 0);
	struct sockaddr_un dn = {.sun_family = AF_UNIX, .sun_path = "dg.sock"};
	unlink("dg.sock");
	bind(dg_srv, (struct sockaddr *)&dn, sizeof(dn));
	for (int i = 0; i < 2; i++) {
		dg_cli[i] = socket(AF_UNIX, SOCK_DGRAM, 0);
		connect(dg_cli[i], (struct sockaddr *)&dn, sizeof(dn));
	}
	unlink("dg.sock");

	signal(SIGTERM, check);
	char buf[64];
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	say(buf);
	for (;;)
		pause();
}
