/*
 * A network namespace nested in the tree's, as a service gets one (systemd's PrivateNetwork).
 * argv: OUT [MODES], MODES a list of own, veth and conn ("own,conn"). The root R (with "own": in
 * a network namespace of its own first) binds an abstract datagram name and listens at a path
 * (OUT's directory/netsub.sock). Its child A unshares a network namespace and sets it up with a
 * shell: the loopback up, a second address (10.79.0.1/32), net.unix.max_dgram_qlen 66. There A
 * binds an abstract datagram name of its own, listens on TCP 10.79.0.1:7979, binds UDP
 * 10.79.0.1:7980, and connects a stream socket to R's path (across the two namespaces, as a
 * service logs to journald), writing "pre" into it. A's child A1 goes back to R's namespace
 * (setns) holding A's listener.
 *
 * R also keeps a descriptor of A's namespace in flight in a datagram socket pair of its own, as
 * systemd keeps a service's (PrivateNetwork).
 *
 * On SIGTERM R checks itself, then has A and A1 check themselves (they report on OUT too):
 * - R: the abstract name of A's namespace does not reach here, its own does; its end of the
 *   connection from A reads "pre", then what A writes after; the descriptor in flight is of
 *   A's namespace.
 * - A: its namespace is not R's; its own name reaches its socket and R's does not; the address,
 *   the sysctl, the listener (a connection accepted) and the UDP socket (a datagram through)
 *   are there; it writes "post" to R.
 * - A1: in R's namespace; the listener it holds is of A's (SIOCGSKNS); R's name reaches here,
 *   A's does not.
 * A and A1 print what they found; R's last line is its verdict on all three, PASS or FAIL.
 *
 * "veth" (in a namespace of R's own) adds a veth pair between R's namespace and A's: nsv0 (index
 * 20, 10.81.0.1/24) in R's, nsv1 (index 21, 10.81.0.2/24) in A's, both up, and R listens on
 * TCP 10.81.0.1:7981: A checks that nsv1 has its index there and connects through the pair; R
 * that nsv0 has its index and accepts that connection.
 *
 * "conn" adds an established TCP connection inside A's namespace (to its own listener), bytes
 * unread in both directions ("c2s" and "s2c"): A checks that each end reads them, the ends keep
 * their addresses, and more goes through both ways.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int out;
static pid_t root_pid, a_pid;

static socklen_t abstract(struct sockaddr_un *a, const char *who)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "netsub-%s-%d", who, root_pid);
	return offsetof(struct sockaddr_un, sun_path) + 1 + n;
}

static int bind_abstract(const char *who)
{
	struct sockaddr_un a;
	socklen_t len = abstract(&a, who);
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (s < 0 || bind(s, (struct sockaddr *)&a, len))
		return -1;
	return s;
}

/* Whether abstract name `who` reaches a socket from here. */
static int reaches(const char *who)
{
	struct sockaddr_un a;
	socklen_t len = abstract(&a, who);
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	int ok = connect(s, (struct sockaddr *)&a, len) == 0;
	close(s);
	return ok;
}

static ino_t ns_of(const char *path)
{
	struct stat st;
	return stat(path, &st) ? 0 : st.st_ino;
}

static ino_t ns_of_pid(pid_t pid)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/ns/net", pid);
	return ns_of(p);
}

static struct sockaddr_in in4(const char *addr, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, addr, &a.sin_addr);
	return a;
}

static int read_exact(int fd, char *buf, int n)
{
	int got = 0;
	while (got < n) {
		int r = read(fd, buf + got, n - got);
		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

static int send_fd(int via, int fd)
{
	char c = 0, cbuf[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {.iov_base = &c, .iov_len = 1};
	struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			   .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *ch = CMSG_FIRSTHDR(&h);
	ch->cmsg_level = SOL_SOCKET;
	ch->cmsg_type = SCM_RIGHTS;
	ch->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(ch), &fd, sizeof(int));
	return sendmsg(via, &h, 0) == 1 ? 0 : -1;
}

static int recv_fd(int via)
{
	char c, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = &c, .iov_len = 1};
	struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			   .msg_controllen = sizeof(cbuf)};
	if (recvmsg(via, &h, MSG_DONTWAIT) != 1)
		return -1;
	struct cmsghdr *ch = CMSG_FIRSTHDR(&h);
	int fd;
	if (!ch || ch->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(ch), sizeof(int));
	return fd;
}

/* A child's finding, on a line of its own; the root's verdict comes last, as PASS or FAIL. */
static int report(const char *who, const char *why)
{
	dprintf(out, "netsub %s: %s\n", who, why ? why : "whole");
	return why ? 1 : 0;
}

static const char *check_a1(int listener)
{
	if (ns_of("/proc/self/ns/net") != ns_of_pid(root_pid))
		return "not in the root's network namespace";
	int ns = ioctl(listener, SIOCGSKNS);
	struct stat st;
	if (ns < 0 || fstat(ns, &st))
		return "SIOCGSKNS on the listener failed";
	if (st.st_ino != ns_of_pid(a_pid))
		return "the listener it holds is not of A's namespace";
	if (!reaches("R"))
		return "the root's abstract name does not reach it";
	if (reaches("A"))
		return "A's abstract name reaches it";
	return NULL;
}

static int veth;

/* The connection c -> s of "conn": its bytes in flight, its addresses, more bytes through. */
static const char *check_conn(int c, int s)
{
	char buf[8] = "";
	if (read_exact(s, buf, 3) || memcmp(buf, "c2s", 3))
		return "the accepted end did not read \"c2s\"";
	if (read_exact(c, buf, 3) || memcmp(buf, "s2c", 3))
		return "the connecting end did not read \"s2c\"";
	struct sockaddr_in local, peer;
	socklen_t ll = sizeof(local), pl = sizeof(peer);
	if (getsockname(c, (struct sockaddr *)&local, &ll) ||
	    getpeername(s, (struct sockaddr *)&peer, &pl) || local.sin_port != peer.sin_port ||
	    local.sin_addr.s_addr != peer.sin_addr.s_addr)
		return "the connection's ends do not name each other";
	if (getpeername(c, (struct sockaddr *)&peer, &pl) || ntohs(peer.sin_port) != 7979)
		return "the connecting end is not connected to port 7979";
	if (write(c, "more", 4) != 4 || write(s, "back", 4) != 4)
		return "cannot write on the connection";
	if (read_exact(s, buf, 4) || memcmp(buf, "more", 4) || read_exact(c, buf, 4) ||
	    memcmp(buf, "back", 4))
		return "the connection does not carry new bytes";
	return NULL;
}

static const char *check_a(int listener, int udp, int to_root)
{
	if (veth) {
		if (if_nametoindex("nsv1") != 21)
			return "veth nsv1 is not at index 21 in its namespace";
		struct sockaddr_in v = in4("10.81.0.1", 7981);
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&v, sizeof(v)))
			return "cannot connect to the root through the veth pair";
		close(c);
	}
	if (ns_of("/proc/self/ns/net") == ns_of_pid(root_pid))
		return "in the root's network namespace";
	if (!reaches("A"))
		return "its abstract name does not reach it";
	if (reaches("R"))
		return "the root's abstract name reaches it";
	char buf[64] = "";
	int fd = open("/proc/sys/net/unix/max_dgram_qlen", O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0 || atoi(buf) != 66)
		return "net.unix.max_dgram_qlen is not 66";
	close(fd);
	struct sockaddr_in a = in4("10.79.0.1", 0);
	int probe = socket(AF_INET, SOCK_DGRAM, 0);
	if (bind(probe, (struct sockaddr *)&a, sizeof(a)))
		return "address 10.79.0.1 is gone";
	a = in4("10.79.0.1", 7980);
	if (sendto(probe, "udp!", 4, 0, (struct sockaddr *)&a, sizeof(a)) != 4)
		return "sendto the UDP socket failed";
	memset(buf, 0, sizeof(buf));
	if (recv(udp, buf, sizeof(buf), 0) != 4 || memcmp(buf, "udp!", 4))
		return "the UDP socket did not get its datagram";
	close(probe);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	a = in4("10.79.0.1", 7979);
	if (connect(c, (struct sockaddr *)&a, sizeof(a)))
		return "cannot connect to the listener";
	int s = accept(listener, NULL, NULL);
	if (s < 0)
		return "the listener accepts nothing";
	close(s);
	close(c);
	if (write(to_root, "post", 4) != 4)
		return "cannot write to the root";
	return NULL;
}

int main(int argc, char **argv)
{
	out = open(argv[1], O_WRONLY | O_APPEND);
	const char *mode = argc > 2 ? argv[2] : "";
	veth = strstr(mode, "veth") != NULL;
	int own = veth || strstr(mode, "own");
	int conn = strstr(mode, "conn") != NULL;
	if (own && unshare(CLONE_NEWNET))
		return 2;
	root_pid = getpid();
	signal(SIGTERM, on_term);
	char dir[4096], path[4200];
	snprintf(dir, sizeof(dir), "%s", argv[1]);
	snprintf(path, sizeof(path), "%s/netsub.sock", dirname(dir));
	unlink(path);
	int r_named = bind_abstract("R");
	struct sockaddr_un p = {.sun_family = AF_UNIX};
	snprintf(p.sun_path, sizeof(p.sun_path), "%s", path);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (r_named < 0 || bind(l, (struct sockaddr *)&p, sizeof(p)) || listen(l, 4))
		return 3;
	int ready[2];
	pipe(ready);
	a_pid = fork();
	if (a_pid == 0) {
		a_pid = getpid();
		close(ready[0]);
		if (unshare(CLONE_NEWNET) ||
		    system("ip link set lo up && ip addr add 10.79.0.1/32 dev lo && "
			   "echo 66 > /proc/sys/net/unix/max_dgram_qlen"))
			_exit(4);
		int named = bind_abstract("A");
		struct sockaddr_in a = in4("10.79.0.1", 7979);
		int listener = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (named < 0 || bind(listener, (struct sockaddr *)&a, sizeof(a)) || listen(listener, 4))
			_exit(5);
		int udp = socket(AF_INET, SOCK_DGRAM, 0);
		a = in4("10.79.0.1", 7980);
		if (bind(udp, (struct sockaddr *)&a, sizeof(a)))
			_exit(6);
		int to_root = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(to_root, (struct sockaddr *)&p, sizeof(p)) || write(to_root, "pre", 3) != 3)
			_exit(7);
		int c = -1, s = -1;
		if (conn) {
			c = socket(AF_INET, SOCK_STREAM, 0);
			a = in4("10.79.0.1", 7979);
			if (connect(c, (struct sockaddr *)&a, sizeof(a)))
				_exit(8);
			s = accept(listener, NULL, NULL);
			if (s < 0 || write(c, "c2s", 3) != 3 || write(s, "s2c", 3) != 3)
				_exit(8);
		}
		pid_t a1 = fork();
		if (a1 == 0) {
			char rp[64];
			snprintf(rp, sizeof(rp), "/proc/%d/ns/net", root_pid);
			int fd = open(rp, O_RDONLY);
			if (fd < 0 || setns(fd, CLONE_NEWNET))
				_exit(9);
			close(fd);
			close(named);
			close(udp);
			close(to_root);
			write(ready[1], "1", 1);
			while (!term)
				pause();
			_exit(report("A1", check_a1(listener)));
		}
		write(ready[1], "a", 1);
		while (!term)
			pause();
		kill(a1, SIGTERM);
		int st;
		const char *why = conn ? check_conn(c, s) : NULL;
		if (!why)
			why = check_a(listener, udp, to_root);
		waitpid(a1, &st, 0);
		if (!why && (!WIFEXITED(st) || WEXITSTATUS(st)))
			why = "A1 failed";
		_exit(report("A", why));
	}
	close(ready[1]);
	char got[2];
	if (read_exact(ready[0], got, 2))
		return 10;
	int vl = -1;
	if (veth) {
		char cmd[512];
		snprintf(cmd, sizeof(cmd),
			 "ip link add nsv0 index 20 type veth peer name nsv1 index 21 netns %d && "
			 "ip addr add 10.81.0.1/24 dev nsv0 && ip link set nsv0 up && ip link set lo up && "
			 "nsenter -t %d -n sh -c 'ip addr add 10.81.0.2/24 dev nsv1 && ip link set nsv1 up'",
			 a_pid, a_pid);
		struct sockaddr_in v = in4("10.81.0.1", 7981);
		vl = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		setsockopt(vl, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (system(cmd) || bind(vl, (struct sockaddr *)&v, sizeof(v)) || listen(vl, 4))
			return 13;
	}
	/* A's namespace, in flight in a pair of R's. */
	int sp[2];
	char nsp[64];
	snprintf(nsp, sizeof(nsp), "/proc/%d/ns/net", a_pid);
	int nsfd = open(nsp, O_RDONLY);
	if (nsfd < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, sp) || send_fd(sp[0], nsfd))
		return 12;
	close(nsfd);
	/* "pre" stays queued at this end through the dump. */
	int from_a = accept(l, NULL, NULL);
	if (from_a < 0)
		return 11;
	dprintf(out, "ready pid=%d\n", getpid());
	while (!term)
		pause();
	const char *why = NULL;
	if (reaches("A"))
		why = "A's abstract name reaches the root";
	else if (!reaches("R"))
		why = "the root's abstract name does not reach it";
	if (!why && veth && if_nametoindex("nsv0") != 20)
		why = "veth nsv0 is not at index 20";
	struct stat nst;
	int held = recv_fd(sp[1]);
	if (!why && (held < 0 || fstat(held, &nst) || nst.st_ino != ns_of_pid(a_pid)))
		why = "the descriptor in flight is not of A's network namespace";
	kill(a_pid, SIGTERM);
	int st;
	waitpid(a_pid, &st, 0);
	if (!why && (!WIFEXITED(st) || WEXITSTATUS(st)))
		why = "A failed";
	if (!why && veth) {
		struct pollfd pf = {.fd = vl, .events = POLLIN};
		int c = poll(&pf, 1, 0) == 1 ? accept(vl, NULL, NULL) : -1;
		if (c < 0)
			why = "no connection from A through the veth pair";
		close(c);
	}
	char buf[8] = "";
	if (!why && (read_exact(from_a, buf, 7) || memcmp(buf, "prepost", 7)))
		why = "the connection from A did not bring \"pre\" then \"post\"";

	if (why)
		dprintf(out, "FAIL netsub root: %s\n", why);
	else
		dprintf(out, "PASS netsub root\n");
	return 0;
}
