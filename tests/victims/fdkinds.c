/*
 * Victim: descriptors whose state lives in the kernel.
 *
 *   - an eventfd in semaphore mode holding 5, non-blocking
 *   - a signalfd for SIGUSR1, with one SIGUSR1 pending (blocked)
 *   - a timerfd firing every 50 ms
 *   - an epoll set watching the eventfd (data 0x1234) and the timerfd (data 0x5678)
 *
 * On SIGTERM it checks each from the inside and prints PASS or FAIL with the reason.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char buf[160];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	/*
	 * "plain": what CRIU 4.2 restores too (tests/interop_test.ts): no semaphore mode, which its
	 * images do not carry, and no check that the timerfd goes on after its unread expiry.
	 */
	int sem = !(argc > 2 && !strcmp(argv[2], "plain"));
	int efd = eventfd(5, (sem ? EFD_SEMAPHORE : 0) | EFD_NONBLOCK);
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigprocmask(SIG_BLOCK, &m, NULL);
	int sfd = signalfd(-1, &m, SFD_NONBLOCK);
	kill(getpid(), SIGUSR1);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec it = {{0, 50000000}, {0, 50000000}};
	timerfd_settime(tfd, 0, &it, NULL);
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1234};
	epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
	ev.data.u64 = 0x5678;
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d efd=%d sfd=%d tfd=%d ep=%d\n", getpid(), efd, sfd, tfd, ep);
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	struct timespec nap = {0, 120000000};
	nanosleep(&nap, NULL);
	struct epoll_event evs[4];
	int n = epoll_wait(ep, evs, 4, 1000), seen = 0;
	for (int i = 0; i < n; i++)
		seen |= evs[i].data.u64 == 0x1234 ? 1 : evs[i].data.u64 == 0x5678 ? 2 : 4;
	if (seen != 3) {
		snprintf(buf, sizeof(buf), "FAIL epoll (%d events, seen %d)\n", n, seen);
		write(out, buf, strlen(buf));
		return 1;
	}
	uint64_t v;
	int reads = 0;
	while (read(efd, &v, 8) == 8 && v == (sem ? 1 : 5))
		reads++;
	if (reads != (sem ? 5 : 1)) {
		snprintf(buf, sizeof(buf), "FAIL eventfd (%d reads)\n", reads);
		write(out, buf, strlen(buf));
		return 1;
	}
	struct signalfd_siginfo si;
	if (read(sfd, &si, sizeof(si)) != sizeof(si) || si.ssi_signo != SIGUSR1) {
		write(out, "FAIL signalfd\n", 14);
		return 1;
	}
	if (read(tfd, &v, 8) != 8 || v < 1) {
		write(out, "FAIL timerfd\n", 13);
		return 1;
	}
	nanosleep(&nap, NULL);
	/* CRIU disarms a periodic timerfd whose expiry was not read yet ("plain": not checked). */
	if (sem && (read(tfd, &v, 8) != 8 || v < 1)) {
		write(out, "FAIL timerfd stopped\n", 21);
		return 1;
	}
	write(out, "PASS fds\n", 9);
	return 0;
}
