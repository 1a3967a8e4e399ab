/*
 * A packet socket's rings mapped: S (SOCK_DGRAM, unbound, so nothing arrives, TPACKET_V2) with
 * a receive ring of 8 frames and a send ring of 8, mapped shared, and mapped once more,
 * privately (as zdtm's packet_sock_mmap does). argv: OUT [used]. On SIGTERM
 * the mappings must be where they were and be S's rings: S is bound to lo for IPv4, a UDP
 * datagram sent over lo must show in the shared receive ring, and a frame queued in the send
 * ring must be sent. "used": S is bound before the checkpoint and a datagram lands in its ring
 * (whose kernel position no restore can set again: the dump must refuse it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define FRAME 2048
#define FRAMES 8

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

/* Whether /proc/self/maps shows `addr` as a mapping of the socket `sk`. */
static int mapped_socket(void *addr, int sk)
{
	struct stat st;
	char line[512];
	int found = 0;
	fstat(sk, &st);
	FILE *f = fopen("/proc/self/maps", "r");
	while (fgets(line, sizeof(line), f)) {
		unsigned long start;
		unsigned long long ino;
		unsigned maj, min;
		if (sscanf(line, "%lx-%*x %*s %*s %x:%x %llu", &start, &maj, &min, &ino) == 4 &&
		    start == (unsigned long)addr && ino == st.st_ino)
			found = 1;
	}
	fclose(f);
	return found;
}

static void send_mark(const char *mark)
{
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	sendto(u, mark, strlen(mark), 0, (void *)&to, sizeof(to));
	close(u);
}

/* Waits for `mark` in the receive ring at `rx`, handing frames back as it goes. */
static int ring_sees(char *rx, const char *mark)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		for (int i = 0; i < FRAMES; i++) {
			struct tpacket2_hdr *h = (void *)(rx + i * FRAME);
			if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
				continue;
			int hit = memmem((char *)h + h->tp_mac, h->tp_snaplen, mark, strlen(mark)) != NULL;
			__atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
			if (hit)
				return 1;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 2)
			return 0;
		usleep(1000);
	}
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int used = argc > 2 && !strcmp(argv[2], "used");
	char msg[256], mark[64];
	int s = socket(AF_PACKET, SOCK_DGRAM, 0);
	int v2 = TPACKET_V2;
	struct tpacket_req req = {.tp_block_size = BLOCK, .tp_block_nr = FRAMES * FRAME / BLOCK,
				  .tp_frame_size = FRAME, .tp_frame_nr = FRAMES};
	if (s < 0 || setsockopt(s, SOL_PACKET, PACKET_VERSION, &v2, sizeof(v2)) ||
	    setsockopt(s, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) ||
	    setsockopt(s, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req)))
		return 2;
	size_t ring = FRAMES * FRAME;
	char *rx = mmap(NULL, 2 * ring, PROT_READ | PROT_WRITE, MAP_SHARED, s, 0);
	char *priv = mmap(NULL, 2 * ring, PROT_READ, MAP_PRIVATE, s, 0);
	if (rx == MAP_FAILED || priv == MAP_FAILED)
		return 3;
	char *tx = rx + ring;
	struct sockaddr_ll lo = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP),
				 .sll_ifindex = if_nametoindex("lo")};
	if (used) {
		bind(s, (void *)&lo, sizeof(lo));
		snprintf(mark, sizeof(mark), "packetring-used-%d", getpid());
		send_mark(mark);
		if (!ring_sees(rx, mark))
			return 4;
	}
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d rx=%p priv=%p\n", getpid(), rx, priv);
	write(out, msg, strlen(msg));
	while (!term)
		pause();

	const char *why = NULL;
	snprintf(mark, sizeof(mark), "packetring-%d", getpid());
	if (!mapped_socket(rx, s) || !mapped_socket(priv, s))
		why = "the rings are not mapped where they were";
	else if (bind(s, (void *)&lo, sizeof(lo)))
		why = "cannot bind";
	else {
		send_mark(mark);
		if (!ring_sees(rx, mark))
			why = "the datagram did not show in the receive ring";
	}
	if (!why) {
		/* A frame in the send ring: an IPv4 datagram to lo's broadcast-free 127.0.0.1. */
		struct tpacket2_hdr *h = (void *)tx;
		if (h->tp_status != TP_STATUS_AVAILABLE)
			why = "the send ring's first frame is not free";
		else {
			unsigned char *p = (unsigned char *)h + TPACKET2_HDRLEN - sizeof(struct sockaddr_ll);
			static const unsigned char ip[20] = {0x45, 0, 0, 20, 0, 0, 0, 0, 64, 253, 0, 0,
							     127, 0, 0, 1, 127, 0, 0, 1};
			memcpy(p, ip, sizeof(ip));
			h->tp_len = sizeof(ip);
			__atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
			struct sockaddr_ll to = lo;
			to.sll_halen = 0;
			if (sendto(s, NULL, 0, 0, (void *)&to, sizeof(to)) < 0)
				why = "the send ring would not send";
			else if (h->tp_status != TP_STATUS_AVAILABLE)
				why = "the send ring's frame did not go";
		}
	}
	snprintf(msg, sizeof(msg), why ? "FAIL packetring: %s\n" : "PASS packetring\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
