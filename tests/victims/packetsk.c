/*
 * Packet sockets: R (SOCK_RAW, all protocols, bound to lo, TPACKET_V2, reserve 64, aux data,
 * loss, promiscuous on lo twice, in a hash fanout group with F), F (the group's other member),
 * D (SOCK_DGRAM for IPv4, unbound, non-blocking, TPACKET_V3 with a receive ring of 2 blocks)
 * and P (the old SOCK_PACKET). argv: OUT. On
 * SIGTERM each must have its settings, and R must see a UDP datagram sent over lo now.
 * argv[2] "interop": promiscuous once (CRIU 4.2 refuses a membership counted twice) and no
 * fanout flag (it reads the group from sock_diag, which leaves the flags out).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int get(int fd, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, SOL_PACKET, opt, &v, &l))
		return -1;
	return v;
}

int main(int argc, char **argv)
{
	char msg[256];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int lo = if_nametoindex("lo");
	int r = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	int f = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	int d = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, htons(ETH_P_IP));
	int p = socket(AF_PACKET, SOCK_PACKET, htons(ETH_P_ALL));
	struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_ifindex = lo};
	int v2 = TPACKET_V2, reserve = 64, one = 1;
	int fanout = 77 | (PACKET_FANOUT_HASH << 16) | (argc < 3 ? PACKET_FANOUT_FLAG_DEFRAG << 16 : 0);
	struct packet_mreq mr = {.mr_ifindex = lo, .mr_type = PACKET_MR_PROMISC};
	if (r < 0 || f < 0 || d < 0 || p < 0 || bind(r, (void *)&ll, sizeof(ll)) ||
	    bind(f, (void *)&ll, sizeof(ll)) ||
	    setsockopt(r, SOL_PACKET, PACKET_VERSION, &v2, sizeof(v2)) ||
	    setsockopt(r, SOL_PACKET, PACKET_RESERVE, &reserve, sizeof(reserve)) ||
	    setsockopt(r, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) ||
	    setsockopt(r, SOL_PACKET, PACKET_LOSS, &one, sizeof(one)) ||
	    setsockopt(r, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) ||
	    (argc < 3 && setsockopt(r, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr))) ||
	    setsockopt(r, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof(fanout)) ||
	    setsockopt(f, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof(fanout)))
		return 2;
	int v3 = TPACKET_V3;
	struct tpacket_req3 req = {.tp_block_size = 4096, .tp_block_nr = 2, .tp_frame_size = 2048,
				   .tp_frame_nr = 4, .tp_retire_blk_tov = 60};
	if (setsockopt(d, SOL_PACKET, PACKET_VERSION, &v3, sizeof(v3)) ||
	    setsockopt(d, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
		return 2;
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();

	const char *why = NULL;
	struct sockaddr_ll got;
	socklen_t gl = sizeof(got);
	int type = 0;
	socklen_t tl = sizeof(type);
	if (get(r, PACKET_VERSION) != TPACKET_V2 || get(r, PACKET_RESERVE) != 64)
		why = "R: version or reserve";
	else if (get(r, PACKET_AUXDATA) != 1 || get(r, PACKET_LOSS) != 1)
		why = "R: aux data or loss";
	else if (get(r, PACKET_FANOUT) != fanout || get(f, PACKET_FANOUT) != fanout)
		why = "R, F: fanout group";
	else if (getsockname(r, (void *)&got, &gl) || got.sll_ifindex != lo ||
		 got.sll_protocol != htons(ETH_P_ALL))
		why = "R: bound elsewhere";
	else if (getsockname(d, (void *)&got, &gl) || got.sll_ifindex != 0 ||
		 got.sll_protocol != htons(ETH_P_IP) || !(fcntl(d, F_GETFL) & O_NONBLOCK))
		why = "D: protocol, interface or flags";
	else if (getsockopt(p, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_PACKET)
		why = "P: not SOCK_PACKET";
	else if (get(d, PACKET_VERSION) != TPACKET_V3 ||
		 mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, d, 0) == MAP_FAILED)
		why = "D: no ring of 2 blocks";
	if (!why) {
		/* A datagram over lo, marked, must reach R (or F: the group shares the flow). */
		int u = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		char mark[32], buf[2048];
		snprintf(mark, sizeof(mark), "packetsk-%d", getpid());
		sendto(u, mark, strlen(mark), 0, (void *)&to, sizeof(to));
		int seen = 0;
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		fcntl(r, F_SETFL, O_NONBLOCK);
		fcntl(f, F_SETFL, O_NONBLOCK);
		while (!seen) {
			for (int s = 0; s < 2 && !seen; s++) {
				ssize_t n = recv(s ? f : r, buf, sizeof(buf), 0);
				if (n > 0 && memmem(buf, n, mark, strlen(mark)))
					seen = 1;
			}
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (t.tv_sec - t0.tv_sec > 2)
				break;
		}
		if (!seen)
			why = "R, F: the datagram did not come";
	}
	snprintf(msg, sizeof(msg), why ? "FAIL packetsk: %s\n" : "PASS packetsk\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
