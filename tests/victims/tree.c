/*
 * Victim: a process tree with threads, sharing memory, a pipe, a socketpair and an epoll set.
 *
 *   tree OUT NCHILD NTHREAD [MIB]
 *
 * The parent makes a pipe, a socketpair, shared anonymous memory (one counter per child) and an
 * epoll set watching its socket, then NCHILD children: child 1 leads its own process group,
 * child 2 its own session, the others stay in the parent's. Each child runs NTHREAD threads
 * that count in memory (the first also in the shared counter) and keep a thread-local id, writes
 * MIB MiB of private memory (for benchmarks), and blocks reading the shared pipe. One more child
 * exits at once with code 42 and stays a zombie. The parent reports "ready", then waits.
 *
 * On SIGTERM the parent reaps the zombie (exit code 42 expected), checks that every child's
 * shared counter still moves, writes one token per child into the pipe and waits for them. A
 * child that gets its token checks that its threads still count, still have their thread-local
 * ids, its memory, and that its session and group are as set up; it then says "child N" on the
 * socketpair and exits 0 (or prints FAIL). The parent must see every child's message through
 * its epoll set, and prints "PASS tree" when every check held.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXT 16
static int out, pipefd[2], sockfd[2], nchild, nthread;
static volatile unsigned long *shared;
static unsigned char *priv;
static size_t priv_size;
static int my_index;
static volatile unsigned long counters[MAXT];
static volatile int tls_ok[MAXT];
static __thread int my_id = -1;
static volatile sig_atomic_t term;

static void say(const char *s) { write(out, s, strlen(s)); }

static void nap(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static void *worker(void *arg)
{
	int id = (int)(long)arg;
	my_id = id;
	for (;;) {
		counters[id]++;
		if (id == 0)
			shared[my_index]++;
		tls_ok[id] = my_id == id;
		nap(20);
	}
	return NULL;
}

static int child_main(int index)
{
	char buf[128];
	my_index = index;
	if (priv_size) {
		priv = mmap(NULL, priv_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		for (size_t i = 0; i < priv_size; i += 4096)
			priv[i] = (unsigned char)(i / 4096 + index);
	}
	if (index == 1)
		setpgid(0, 0);
	if (index == 2)
		setsid();
	pid_t sid = getsid(0), pgid = getpgid(0);
	pthread_t t[MAXT];
	for (int i = 0; i < nthread; i++)
		pthread_create(&t[i], NULL, worker, (void *)(long)i);
	char token;
	while (read(pipefd[0], &token, 1) != 1)
		;
	unsigned long before[MAXT];
	for (int i = 0; i < nthread; i++)
		before[i] = counters[i];
	nap(300);
	for (int i = 0; i < nthread; i++) {
		if (counters[i] <= before[i] || !tls_ok[i]) {
			snprintf(buf, sizeof(buf), "FAIL child %d thread %d (%lu -> %lu, tls %d)\n", index, i,
				 before[i], counters[i], tls_ok[i]);
			say(buf);
			_exit(1);
		}
	}
	if (getsid(0) != sid || getpgid(0) != pgid) {
		snprintf(buf, sizeof(buf), "FAIL child %d session/group\n", index);
		say(buf);
		_exit(1);
	}
	for (size_t i = 0; i < priv_size; i += 4096) {
		if (priv[i] != (unsigned char)(i / 4096 + index)) {
			snprintf(buf, sizeof(buf), "FAIL child %d memory\n", index);
			say(buf);
			_exit(1);
		}
	}
	int n = snprintf(buf, sizeof(buf), "child %d", index);
	send(sockfd[1], buf, n, 0);
	_exit(0);
}

static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char buf[256];
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	nchild = argc > 2 ? atoi(argv[2]) : 3;
	nthread = argc > 3 ? atoi(argv[3]) : 2;
	priv_size = (size_t)(argc > 4 ? atoi(argv[4]) : 0) << 20;
	pipe(pipefd);
	socketpair(AF_UNIX, SOCK_DGRAM, 0, sockfd);
	shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 7};
	epoll_ctl(ep, EPOLL_CTL_ADD, sockfd[0], &ev);
	signal(SIGTERM, on_term);
	pid_t kids[32];
	for (int i = 0; i < nchild; i++) {
		kids[i] = fork();
		if (kids[i] == 0)
			return child_main(i + 1);
	}
	pid_t zombie = fork();
	if (zombie == 0)
		_exit(42);
	nap(200); /* children set up their groups and threads */
	snprintf(buf, sizeof(buf), "ready pid=%d zombie=%d child1=%d child2=%d\n", getpid(), zombie, kids[0],
		 nchild > 1 ? kids[1] : 0);
	say(buf);
	while (!term)
		pause();
	int st, ok = 1;
	if (waitpid(zombie, &st, WNOHANG) != zombie || !WIFEXITED(st) || WEXITSTATUS(st) != 42) {
		say("FAIL zombie\n");
		ok = 0;
	}
	unsigned long seen[32];
	for (int i = 1; i <= nchild; i++)
		seen[i] = shared[i];
	nap(300);
	for (int i = 1; i <= nchild; i++) {
		if (shared[i] <= seen[i]) {
			snprintf(buf, sizeof(buf), "FAIL shared counter of child %d\n", i);
			say(buf);
			ok = 0;
		}
	}
	for (int i = 0; i < nchild; i++)
		write(pipefd[1], "x", 1);
	int msgs = 0;
	while (msgs < nchild) {
		struct epoll_event got;
		if (epoll_wait(ep, &got, 1, 3000) != 1 || got.data.u32 != 7)
			break;
		while (recv(sockfd[0], buf, sizeof(buf), MSG_DONTWAIT) > 0)
			msgs++;
	}
	if (msgs != nchild) {
		snprintf(buf, sizeof(buf), "FAIL %d of %d messages through epoll\n", msgs, nchild);
		say(buf);
		ok = 0;
	}
	for (int i = 0; i < nchild; i++) {
		if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			snprintf(buf, sizeof(buf), "FAIL child %d status %x\n", i + 1, st);
			say(buf);
			ok = 0;
		}
	}
	say(ok ? "PASS tree\n" : "FAIL tree\n");
	return ok ? 0 : 1;
}
