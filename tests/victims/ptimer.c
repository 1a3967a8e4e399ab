/*
 * Victim: POSIX timers. Timer A (CLOCK_MONOTONIC) sends SIGUSR1 with value 0xa every 20 ms;
 * timer B (CLOCK_REALTIME) is armed for 1000 s; a third id is made and deleted so that the
 * ids have a gap. On SIGTERM it checks that A still fires (with its value), that B still has
 * its remaining time, and that the ids are the same, and prints PASS or FAIL.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t term, fired, badval;
static void on_term(int sig) { (void)sig; term = 1; }
static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (si->si_value.sival_int != 0xa)
		badval = 1;
	fired++;
}

int main(int argc, char **argv)
{
	char buf[128];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct sigaction sa = {.sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO | SA_RESTART};
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGTERM, on_term);
	timer_t a, gap, b;
	struct sigevent se = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1};
	se.sigev_value.sival_int = 0xa;
	timer_create(CLOCK_MONOTONIC, &se, &a);
	timer_create(CLOCK_MONOTONIC, &se, &gap);
	se.sigev_value.sival_int = 0xb;
	timer_create(CLOCK_REALTIME, &se, &b);
	timer_delete(gap);
	struct itimerspec ia = {{0, 20000000}, {0, 20000000}}, ib = {{0, 0}, {1000, 0}};
	timer_settime(a, 0, &ia, NULL);
	timer_settime(b, 0, &ib, NULL);
	snprintf(buf, sizeof(buf), "ready pid=%d a=%ld b=%ld\n", getpid(), (long)a, (long)b);
	write(out, buf, strlen(buf));
	while (!term)
		pause();
	int before = fired;
	struct timespec nap = {0, 200000000};
	while (nanosleep(&nap, &nap))
		;
	struct itimerspec cur;
	int okb = timer_gettime(b, &cur) == 0 && cur.it_value.tv_sec > 900;
	int oka = fired > before + 3 && !badval;
	snprintf(buf, sizeof(buf), "%s ptimer (fired %d, b %ld s)\n", oka && okb ? "PASS" : "FAIL", fired - before,
		 (long)cur.it_value.tv_sec);
	write(out, buf, strlen(buf));
	return 0;
}
