/*
 * A network namespace of its own, holding no socket. argv: OUT. The task unshares a network
 * namespace, then a shell it runs sets it up: the loopback up with MTU 16000 and a second
 * address (10.77.0.1/24), a route to 10.78.0.0/16 through it, a rule (from 10.77.0.0/24 lookup
 * 100), a firewall rule (nft: a table with a counter; and the ip and ip6 filter tables with
 * their INPUT and OUTPUT chains, which criu 4.2's lock of the namespace leaves behind), and
 * sysctls criu carries
 * (net.ipv4.conf.all.forwarding, conf.lo.accept_local, net.unix.max_dgram_qlen,
 * ipv4.ping_group_range). On SIGTERM the same shell prints the namespace's state again, the
 * task compares it with what it printed before, and checks that its namespace is not PID 1's.
 * Prints PASS or FAIL.
 *
 * argv[2] "sockets" adds sockets inside the namespace (dumped with --tcp-established): an
 * established TCP connection over 10.77.0.1 with bytes in flight both ways, a UDP socket bound
 * there, and a datagram socket bound to an abstract name (abstract names are per namespace).
 * On SIGTERM it also checks that each socket belongs to its namespace (SIOCGSKNS), that the
 * connection delivers the bytes sent before the dump and new ones, and that the abstract name
 * still reaches its socket.
 *
 * argv[2] "devices" adds devices: a bridge (index 7, an address, up) with one end of a veth pair
 * (both ends inside) as its port, and compares them in detail (`ip -d`: kinds, bridge and port
 * settings, master; STP's running timers left out), addresses and routes in sorted order (the
 * kernel lists those made again in the order they come back).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static const char SETUP[] =
	"ip link set lo mtu 16000 && ip link set lo up && ip addr add 10.77.0.1/24 dev lo && "
	"ip route add 10.78.0.0/16 dev lo && ip rule add from 10.77.0.0/24 lookup 100 && "
	"nft add table inet victim && nft add chain inet victim input '{ type filter hook input "
	"priority 0; }' && nft add rule inet victim input tcp dport 4444 counter && "
	"nft add table ip filter && "
	"nft add chain ip filter INPUT '{ type filter hook input priority 0; }' && "
	"nft add chain ip filter OUTPUT '{ type filter hook output priority 0; }' && "
	"nft add table ip6 filter && "
	"nft add chain ip6 filter INPUT '{ type filter hook input priority 0; }' && "
	"nft add chain ip6 filter OUTPUT '{ type filter hook output priority 0; }' && "
	"echo 1 > /proc/sys/net/ipv4/conf/all/forwarding && "
	"echo 1 > /proc/sys/net/ipv4/conf/lo/accept_local && "
	"echo 77 > /proc/sys/net/unix/max_dgram_qlen && "
	"echo '100 200' > /proc/sys/net/ipv4/ping_group_range";

static const char DEVICES[] =
	"ip link add br0 index 7 type bridge && ip link add p0 type veth peer name p1 && "
	"ip link set p0 master br0 && ip addr add 10.79.0.1/24 dev br0 && "
	"ip link set br0 up && ip link set p0 up && ip link set p1 up";

static const char SHOW_DEVICES[] =
	"ip -d -o link show | sed -E 's/qlen [0-9]*//; s/_timer +[0-9.]+//g'; "
	"ip -o addr show | sed 's/valid_lft.*//' | sort; ip route show table all | sort; ip rule; "
	"nft list ruleset";

static const char *shown = NULL;

/* Waits (5 s at most) for what settles by itself after devices come up, at setup as after a
 * restore: the bridge's carrier once its port forwards, link-local addresses done with DAD. */
static void settle(void)
{
	for (int i = 0; i < 100; i++) {
		if (system("ip -o link | grep -q NO-CARRIER || ip -o addr | grep -q tentative"))
			return;
		usleep(50000);
	}
}

/* What the namespace looks like: devices, addresses, routes, rules, firewall, sysctls. */
static const char SHOW[] =
	"ip -o link show | sed 's/qlen [0-9]*//'; ip -o addr show | sed 's/valid_lft.*//'; "
	"ip route show table all; ip rule; nft list ruleset; "
	"cat /proc/sys/net/ipv4/conf/all/forwarding /proc/sys/net/ipv4/conf/lo/accept_local "
	"/proc/sys/net/unix/max_dgram_qlen /proc/sys/net/ipv4/ping_group_range";

static char *show(void)
{
	static char buf[2][16384];
	static int which;
	char *b = buf[which++ % 2];
	FILE *f = popen(shown ? shown : SHOW, "r");
	size_t n = fread(b, 1, sizeof(buf[0]) - 1, f);
	b[n] = 0;
	pclose(f);
	return b;
}

/* Whether socket `fd` belongs to this task's network namespace. */
static int ours(int fd)
{
	int ns = ioctl(fd, SIOCGSKNS);
	struct stat a, b;
	int ok = ns >= 0 && !fstat(ns, &a) && !stat("/proc/self/ns/net", &b) && a.st_ino == b.st_ino;
	if (ns >= 0)
		close(ns);
	return ok;
}

static int readn(int fd, char *b, int n)
{
	int got = 0;
	while (got < n) {
		int r = read(fd, b + got, n - got);
		if (r <= 0)
			return -1;
		got += r;
	}
	return got;
}

static const char *check_sockets(int srv, int cli, int udp, int dg)
{
	char b[64];
	static struct sockaddr_un name = {.sun_family = AF_UNIX, .sun_path = "\0netns-victim"};
	if (!ours(srv) || !ours(cli) || !ours(udp) || !ours(dg))
		return "a socket's namespace";
	if (readn(srv, b, 7) != 7 || memcmp(b, "to-srv!", 7) || readn(cli, b, 7) != 7 ||
	    memcmp(b, "to-cli!", 7))
		return "the bytes in flight";
	if (write(cli, "again", 5) != 5 || readn(srv, b, 5) != 5 || memcmp(b, "again", 5))
		return "the connection";
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (sendto(s, "hi", 2, 0, (struct sockaddr *)&name, sizeof(sa_family_t) + 14) != 2 ||
	    recv(dg, b, sizeof(b), MSG_DONTWAIT) != 2)
		return "the abstract name";
	close(s);
	return NULL;
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct stat host;
	stat("/proc/1/ns/net", &host);
	if (unshare(CLONE_NEWNET))
		return 2;
	if (system(SETUP) != 0)
		return 3;
	if (argc > 2 && !strcmp(argv[2], "devices")) {
		if (system(DEVICES) != 0)
			return 3;
		shown = SHOW_DEVICES;
		settle();
	}
	int srv = -1, cli = -1, udp = -1, dg = -1;
	if (argc > 2 && !strcmp(argv[2], "sockets")) {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(4242)};
		inet_pton(AF_INET, "10.77.0.1", &a.sin_addr);
		int l = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1))
			return 4;
		cli = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(cli, (struct sockaddr *)&a, sizeof(a)))
			return 5;
		srv = accept(l, NULL, NULL);
		close(l);
		write(cli, "to-srv!", 7);
		write(srv, "to-cli!", 7);
		udp = socket(AF_INET, SOCK_DGRAM, 0);
		a.sin_port = htons(4243);
		if (bind(udp, (struct sockaddr *)&a, sizeof(a)))
			return 6;
		struct sockaddr_un name = {.sun_family = AF_UNIX, .sun_path = "\0netns-victim"};
		dg = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (bind(dg, (struct sockaddr *)&name, sizeof(sa_family_t) + 14))
			return 7;
	}
	char *before = strdup(show());
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d\n", getpid());
	while (!term)
		pause();
	const char *why = NULL;
	struct stat now;
	stat("/proc/self/ns/net", &now);
	if (shown)
		settle();
	char *after = show();
	if (now.st_ino == host.st_ino)
		why = "back in PID 1's network namespace";
	else if (strcmp(before, after)) {
		dprintf(out, "before:\n%s\nafter:\n%s\n", before, after);
		why = "the namespace's state";
	} else if (srv >= 0)
		why = check_sockets(srv, cli, udp, dg);
	dprintf(out, why ? "FAIL netns: %s\n" : "PASS netns\n", why);
	return 0;
}
