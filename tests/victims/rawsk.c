/*
 * Raw sockets: I (IPv4 ICMP, bound and connected to 127.0.0.1, its ICMP_FILTER dropping echo
 * requests, non-blocking), U (IPv4 UDP with IP_HDRINCL and IP_NODEFRAG), V (IPv6 ICMPv6 bound
 * to ::1, its ICMPV6_FILTER passing echo replies only) and M (IPv6, protocol 253). argv: OUT
 * ["checksum": M gets an IPV6_CHECKSUM offset, which the dump must refuse; "plain": I and V are
 * neither bound nor connected, as CRIU 4.2 restores them]. On SIGTERM each
 * must have its settings and addresses, and I must see the answer to an echo request it
 * sends, not the request itself (its filter drops that). Prints PASS or FAIL.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/icmp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int get(int fd, int level, int opt)
{
	int v = -2;
	socklen_t l = sizeof(v);
	getsockopt(fd, level, opt, &v, &l);
	return v;
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int one = 1, plain = argc > 2 && !strcmp(argv[2], "plain");
	char msg[256];
	struct sockaddr_in lo4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in6 lo6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	int i = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_ICMP);
	int u = socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
	int v = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
	int m = socket(AF_INET6, SOCK_RAW, 253);
	struct icmp_filter f4 = {.data = 1 << ICMP_ECHO};
	struct icmp6_filter f6;
	ICMP6_FILTER_SETBLOCKALL(&f6);
	ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f6);
	if (i < 0 || u < 0 || v < 0 || m < 0 ||
	    (!plain && (bind(i, (void *)&lo4, sizeof(lo4)) || connect(i, (void *)&lo4, sizeof(lo4)))) ||
	    setsockopt(i, SOL_RAW, ICMP_FILTER, &f4, sizeof(f4)) ||
	    setsockopt(u, IPPROTO_IP, IP_HDRINCL, &one, sizeof(one)) ||
	    setsockopt(u, IPPROTO_IP, IP_NODEFRAG, &one, sizeof(one)) ||
	    (!plain && bind(v, (void *)&lo6, sizeof(lo6))) ||
	    setsockopt(v, IPPROTO_ICMPV6, ICMP6_FILTER, &f6, sizeof(f6)))
		return 2;
	if (argc > 2 && !strcmp(argv[2], "checksum")) {
		int off = 2;
		setsockopt(m, IPPROTO_IPV6, IPV6_CHECKSUM, &off, sizeof(off));
	}
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d m=%d\n", getpid(), m);
	write(out, msg, strlen(msg));
	while (!term)
		pause();

	const char *why = NULL;
	struct sockaddr_in6 a6;
	struct sockaddr_in a4;
	socklen_t l4 = sizeof(a4), l6 = sizeof(a6);
	struct icmp_filter g4;
	struct icmp6_filter g6;
	socklen_t lf4 = sizeof(g4), lf6 = sizeof(g6);
	/* (A raw socket has no peer name to get: its send() below needs it connected.) */
	if (!plain &&
	    (getsockname(i, (void *)&a4, &l4) || a4.sin_addr.s_addr != htonl(INADDR_LOOPBACK)))
		why = "I: its address";
	else if (!(fcntl(i, F_GETFL) & O_NONBLOCK))
		why = "I: not non-blocking";
	else if (getsockopt(i, SOL_RAW, ICMP_FILTER, &g4, &lf4) || g4.data != f4.data)
		why = "I: its ICMP filter";
	else if (get(u, IPPROTO_IP, IP_HDRINCL) != 1 || get(u, IPPROTO_IP, IP_NODEFRAG) != 1)
		why = "U: IP_HDRINCL or IP_NODEFRAG";
	else if (!plain &&
		 (getsockname(v, (void *)&a6, &l6) || memcmp(&a6.sin6_addr, &lo6.sin6_addr, 16)))
		why = "V: its address";
	else if (getsockopt(v, IPPROTO_ICMPV6, ICMP6_FILTER, &g6, &lf6) || memcmp(&g6, &f6, sizeof(f6)))
		why = "V: its ICMPv6 filter";
	else if (get(m, IPPROTO_IPV6, IPV6_CHECKSUM) != -1)
		why = "M: its checksum offset";
	if (!why) {
		/* An echo request to 127.0.0.1: I sees the reply, never the request. */
		struct icmphdr req = {.type = ICMP_ECHO, .un.echo.id = htons(getpid() & 0xffff),
				      .un.echo.sequence = htons(7)};
		unsigned sum = 0;
		unsigned short *w = (void *)&req;
		for (unsigned k = 0; k < sizeof(req) / 2; k++)
			sum += w[k];
		req.checksum = ~((sum & 0xffff) + (sum >> 16));
		if (sendto(i, &req, sizeof(req), 0, plain ? (void *)&lo4 : NULL,
			   plain ? sizeof(lo4) : 0) != sizeof(req))
			why = "I: not connected";
		int got = 0;
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		while (!got && !why) {
			char buf[1500];
			struct pollfd p = {.fd = i, .events = POLLIN};
			poll(&p, 1, 100);
			ssize_t n = recv(i, buf, sizeof(buf), 0);
			if (n >= (ssize_t)(sizeof(struct iphdr) + sizeof(struct icmphdr))) {
				struct icmphdr *h = (void *)(buf + ((struct iphdr *)buf)->ihl * 4);
				if (h->un.echo.id == req.un.echo.id) {
					if (h->type == ICMP_ECHO)
						why = "I: its filter let the request in";
					else if (h->type == ICMP_ECHOREPLY)
						got = 1;
				}
			}
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (t.tv_sec - t0.tv_sec > 2 && !got)
				why = "I: no echo reply";
		}
	}
	snprintf(msg, sizeof(msg), why ? "FAIL rawsk: %s\n" : "PASS rawsk\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
