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
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static const char SETUP[] =
	"ip link set lo mtu 16000 && ip link set lo up && ip addr add 10.77.0.1/24 dev lo && "
	"ip route add 10.78.0.0/16 dev lo && ip rule add from 10.77.0.0/24 lookup 100 && "
	"nft add table inet victim && nft add chain inet victim input '{ type filter hook input "
	"priority 0; }' && nft add rule inet victim input tcp dport 4242 counter && "
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
	FILE *f = popen(SHOW, "r");
	size_t n = fread(b, 1, sizeof(buf[0]) - 1, f);
	b[n] = 0;
	pclose(f);
	return b;
}

int main(int argc, char **argv)
{
	(void)argc;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct stat host;
	stat("/proc/1/ns/net", &host);
	if (unshare(CLONE_NEWNET))
		return 2;
	if (system(SETUP) != 0)
		return 3;
	char *before = strdup(show());
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d\n", getpid());
	while (!term)
		pause();
	const char *why = NULL;
	struct stat now;
	stat("/proc/self/ns/net", &now);
	char *after = show();
	if (now.st_ino == host.st_ino)
		why = "back in PID 1's network namespace";
	else if (strcmp(before, after)) {
		dprintf(out, "before:\n%s\nafter:\n%s\n", before, after);
		why = "the namespace's state";
	}
	dprintf(out, why ? "FAIL netns: %s\n" : "PASS netns\n", why);
	return 0;
}
