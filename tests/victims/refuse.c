/*
 * Victim holding one piece of state criu refuses to dump, as CRIU does, chosen by argv[2]:
 *
 *   sigtrap    a SIGTRAP pending (blocked)
 *   udpcork    a UDP socket corked (UDP_CORK) with a datagram held back
 *   timens     its future children get another time namespace (unshare(CLONE_NEWTIME))
 *
 * Prints "ready pid=P" to argv[1]; on SIGTERM checks that the state is still there (the
 * refused dump changed nothing) and writes PASS or FAIL.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/udp.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static int out, sk;
static const char *mode;
static char ns0[64];

static void say(const char *s) { write(out, s, strlen(s)); }

static void check(int sig)
{
	(void)sig;
	int ok = 1;
	if (!strcmp(mode, "sigtrap")) {
		sigset_t set;
		sigpending(&set);
		ok = sigismember(&set, SIGTRAP);
	} else if (!strcmp(mode, "udpcork")) {
		int on = 0;
		socklen_t len = sizeof(on);
		int queued = 0;
		ok = !getsockopt(sk, IPPROTO_UDP, UDP_CORK, &on, &len) && on;
		ioctl(sk, TIOCOUTQ, &queued);
		ok = ok && queued > 0;
	} else {
		char ns[64] = {0};
		readlink("/proc/self/ns/time_for_children", ns, sizeof(ns) - 1);
		ok = strcmp(ns, ns0) == 0;
	}
	say(ok ? "PASS\n" : "FAIL state changed\n");
	_exit(!ok);
}

int main(int argc, char **argv)
{
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	mode = argv[2];
	if (!strcmp(mode, "sigtrap")) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGTRAP);
		sigprocmask(SIG_BLOCK, &set, NULL);
		raise(SIGTRAP);
	} else if (!strcmp(mode, "udpcork")) {
		sk = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		connect(sk, (struct sockaddr *)&a, sizeof(a));
		int on = 1;
		setsockopt(sk, IPPROTO_UDP, UDP_CORK, &on, sizeof(on));
		send(sk, "held", 4, 0);
	} else if (unshare(CLONE_NEWTIME)) {
		say("FAIL unshare\n");
		return 1;
	}
	readlink("/proc/self/ns/time_for_children", ns0, sizeof(ns0) - 1);
	signal(SIGTERM, check);
	char buf[64];
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	say(buf);
	for (;;)
		pause();
}
