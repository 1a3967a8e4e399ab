/*
 * tun and tap devices in a network namespace of its own, with the files attached to them.
 * argv: OUT. The task unshares a network namespace and makes:
 *   - tun0 (a tun, not persistent) through fd A, O_NONBLOCK, 10.88.0.1/24, up;
 *   - tap0 (a multi-queue tap with a 12-byte virtio header, not persistent) through fds B and C,
 *     C's queue detached;
 *   - ptun0 (a persistent tun, owner 4321, send buffer 65536) that no file holds;
 *   - fd D, /dev/net/tun attached to nothing.
 * On SIGTERM it checks that each file is attached as before (TUNGETIFF: device and flags; D to
 * none), keeps its open flags, that the devices look the same (`ip -d link`: kinds, flags,
 * queues, persistence, owner; addresses and routes), and that tun0 still works: a datagram sent
 * to 10.88.0.2 comes out of fd A as an IPv4 packet. Prints PASS or FAIL.
 *
 * argv[2] "interop" leaves out of the devices' comparison what CRIU 4.2 does not bring back:
 * the operational state (a tun up before its file attached), the IPv6 address mode and the
 * link-local addresses (random ones become stable-privacy, with a second address).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int attach(const char *name, int flags)
{
	int fd = open("/dev/net/tun", O_RDWR);
	struct ifreq ifr = {0};
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	ifr.ifr_flags = flags;
	if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr))
		exit(3);
	return fd;
}

/* What a file shows of itself: its device and flags, its open flags. */
static void describe(int fd, char *b, size_t n)
{
	struct ifreq ifr = {0};
	if (ioctl(fd, TUNGETIFF, &ifr))
		snprintf(b, n, "none(%d) fl=%o", errno, fcntl(fd, F_GETFL));
	else
		snprintf(b, n, "%s/%x fl=%o", ifr.ifr_name, ifr.ifr_flags, fcntl(fd, F_GETFL));
}

static const char SHOW[] =
	"ip -d -o link | sed 's/qlen [0-9]*//'; ip -o addr | sed 's/valid_lft.*//' | sort; "
	"ip route show table all | sort";

static const char SHOW_INTEROP[] =
	"ip -d -o link | sed -E 's/qlen [0-9]*//; s/state [A-Z]+//; s/addrgenmode [a-z_]+//'; "
	"ip -o addr | grep -v 'inet6 fe80' | sed 's/valid_lft.*//' | sort; "
	"ip route show table all | grep -v fe80 | sort";

static int interop;

static char *show(void)
{
	static char buf[2][16384];
	static int which;
	char *b = buf[which++ % 2];
	FILE *f = popen(interop ? SHOW_INTEROP : SHOW, "r");
	size_t n = fread(b, 1, sizeof(buf[0]) - 1, f);
	b[n] = 0;
	pclose(f);
	return b;
}

/* A datagram to 10.88.0.2 comes out of tun file `fd`. */
static const char *through(int fd)
{
	char pkt[2048];
	while (read(fd, pkt, sizeof(pkt)) > 0) /* what came before */
		;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9)};
	inet_pton(AF_INET, "10.88.0.2", &a.sin_addr);
	if (sendto(s, "ping", 4, 0, (struct sockaddr *)&a, sizeof(a)) != 4)
		return "sendto 10.88.0.2";
	close(s);
	for (int i = 0; i < 50; i++) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 100) <= 0)
			continue;
		int n = read(fd, pkt, sizeof(pkt));
		/* IPv4, UDP, to 10.88.0.2, "ping". */
		if (n == 32 && (pkt[0] >> 4) == 4 && pkt[9] == 17 && !memcmp(pkt + 16, "\x0a\x58\x00\x02", 4) &&
		    !memcmp(pkt + 28, "ping", 4))
			return NULL;
	}
	return "no packet out of tun0";
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	interop = argc > 2 && !strcmp(argv[2], "interop");
	if (unshare(CLONE_NEWNET))
		return 2;
	int a = attach("tun0", IFF_TUN | IFF_NO_PI);
	fcntl(a, F_SETFL, O_NONBLOCK);
	int b = attach("tap0", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE);
	int hdr = 12;
	if (ioctl(b, TUNSETVNETHDRSZ, &hdr))
		return 4;
	int c = attach("tap0", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE);
	struct ifreq q = {.ifr_flags = IFF_DETACH_QUEUE};
	if (ioctl(c, TUNSETQUEUE, &q))
		return 5;
	int p = attach("ptun0", IFF_TUN | IFF_NO_PI);
	int sndbuf = 65536;
	if (ioctl(p, TUNSETPERSIST, 1) || ioctl(p, TUNSETOWNER, 4321) || ioctl(p, TUNSETSNDBUF, &sndbuf))
		return 6;
	close(p);
	int d = open("/dev/net/tun", O_RDWR);
	if (system("ip link set lo up && ip addr add 10.88.0.1/24 dev tun0 && ip link set tun0 up"))
		return 7;
	const char *why = through(a);
	if (why) {
		dprintf(out, "FAIL tun: before the dump: %s\n", why);
		return 8;
	}
	int fds[] = {a, b, c, d};
	char before[4][64], after[64];
	for (int i = 0; i < 4; i++)
		describe(fds[i], before[i], sizeof(before[i]));
	char *shown = strdup(show());
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d\n", getpid());
	while (!term)
		pause();
	for (int i = 0; i < 4 && !why; i++) {
		describe(fds[i], after, sizeof(after));
		if (strcmp(before[i], after)) {
			dprintf(out, "file %d: %s, now %s\n", i, before[i], after);
			why = "a tun file's device or flags";
		}
	}
	char *now = show();
	if (!why && strcmp(shown, now)) {
		dprintf(out, "before:\n%s\nafter:\n%s\n", shown, now);
		why = "the devices";
	}
	if (!why)
		why = through(a);
	dprintf(out, why ? "FAIL tun: %s\n" : "PASS tun\n", why);
	return 0;
}
