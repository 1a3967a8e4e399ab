/*
 * An epoll set in flight: it watches S (the unix socket whose queue holds it; data 0x1111), an
 * eventfd E (0x2222) and the same eventfd once more under a number closed since (0x3333), and
 * is sent twice over the socket pair then closed. argv: OUT. On SIGTERM it receives both
 * copies (one set), and checks the three events, that its targets are keyed by the numbers
 * they were added under (fdinfo, and EPOLL_CTL_MOD by number), and prints PASS or FAIL.
 * argv[2] "plain": without the target under a closed number (CRIU 4.2 cannot restore one).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int send_fd(int via, int fd)
{
	char c = 'x', buf[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {&c, 1};
	struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf,
			   .msg_controllen = sizeof(buf)};
	struct cmsghdr *ch = CMSG_FIRSTHDR(&h);
	ch->cmsg_level = SOL_SOCKET;
	ch->cmsg_type = SCM_RIGHTS;
	ch->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(ch), &fd, sizeof(int));
	return sendmsg(via, &h, 0) == 1 ? 0 : -1;
}

static int recv_fd(int via)
{
	char c, buf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&c, 1};
	struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf,
			   .msg_controllen = sizeof(buf)};
	if (recvmsg(via, &h, MSG_DONTWAIT) != 1)
		return -1;
	struct cmsghdr *ch = CMSG_FIRSTHDR(&h);
	if (!ch || ch->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(ch), sizeof(int));
	return fd;
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int sk[2], plain = argc > 2 && !strcmp(argv[2], "plain");
	char msg[512];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sk))
		return 2;
	int e = eventfd(1, 0);
	int d = dup(e);
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1111};
	epoll_ctl(ep, EPOLL_CTL_ADD, sk[1], &ev);
	ev.data.u64 = 0x2222;
	epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev);
	ev.data.u64 = 0x3333;
	if (!plain)
		epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev);
	if (send_fd(sk[0], ep) || send_fd(sk[0], ep))
		return 3;
	close(ep);
	close(d);
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d sk=%d e=%d d=%d\n", getpid(), sk[1], e, d);
	write(out, msg, strlen(msg));
	while (!term)
		pause();

	const char *why = NULL;
	int a = recv_fd(sk[1]), b = recv_fd(sk[1]);
	struct stat sa, sb;
	if (a < 0 || b < 0)
		why = "the epoll set did not come back twice";
	else if (fstat(a, &sa) || fstat(b, &sb) || sa.st_ino != sb.st_ino)
		why = "the two copies are two sets";
	if (!why) {
		/* A third message, so that S is readable again (both copies were read). */
		write(sk[0], "y", 1);
		struct epoll_event evs[8];
		int n = epoll_wait(a, evs, 8, 0), seen = 0;
		for (int i = 0; i < n; i++) {
			if (evs[i].events != EPOLLIN)
				continue;
			seen |= evs[i].data.u64 == 0x1111 ? 1 : evs[i].data.u64 == 0x2222 ? 2 :
				evs[i].data.u64 == 0x3333 ? 4 : 8;
		}
		if (n != (plain ? 2 : 3) || seen != (plain ? 3 : 7)) {
			snprintf(msg, sizeof(msg), "events: %d, seen %#x", n, seen);
			why = msg;
		}
	}
	if (!why) {
		/* Keyed by the numbers they were added under: fdinfo shows them, MOD finds them. */
		char path[64], line[256];
		int tfds = 0;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", a);
		FILE *f = fopen(path, "r");
		while (fgets(line, sizeof(line), f)) {
			int t;
			if (sscanf(line, "tfd: %d", &t) == 1)
				tfds |= t == sk[1] ? 1 : t == e ? 2 : t == d ? 4 : 8;
		}
		fclose(f);
		struct epoll_event mod = {.events = EPOLLIN, .data.u64 = 0x2222};
		if (tfds != (plain ? 3 : 7))
			why = "fdinfo does not show the numbers they were added under";
		else if (epoll_ctl(a, EPOLL_CTL_MOD, e, &mod) ||
			 (mod.data.u64 = 0x1111, epoll_ctl(a, EPOLL_CTL_MOD, sk[1], &mod)))
			why = "EPOLL_CTL_MOD does not find them by number";
	}
	dprintf(out, why ? "FAIL epollflight: %s\n" : "PASS epollflight\n", why);
	return 0;
}
