/*
 * An epoll set whose targets were added under descriptor numbers that now hold other files or
 * none: pipe A added as fd 700 and fd 700 then made pipe B (added too); pipe C added as fd 701,
 * then fd 701 closed (C lives on at its own fd). argv: OUT. On SIGTERM: the set lists the same
 * (fd, events, data) keys in /proc/self/fdinfo, and reports each pipe that has data.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }

/* The tfd/events/data of each target line of the set's fdinfo, sorted (the kernel lists them
 * in the order of its file addresses). */
static void keys(int ep, char *out, size_t len)
{
	char one[8][64], *sorted[8];
	int k = 0;
	char path[64], buf[2048];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ep);
	int f = open(path, O_RDONLY);
	ssize_t n = read(f, buf, sizeof(buf) - 1);
	close(f);
	buf[n > 0 ? n : 0] = 0;
	out[0] = 0;
	for (char *l = strstr(buf, "tfd:"); l; l = strstr(l + 1, "tfd:")) {
		unsigned tfd, events;
		unsigned long long data;
		if (k < 8 && sscanf(l, "tfd: %u events: %x data: %llx", &tfd, &events, &data) == 3) {
			snprintf(one[k], sizeof(one[k]), "%u/%x/%llx ", tfd, events, data);
			sorted[k] = one[k];
			k++;
		}
	}
	qsort(sorted, k, sizeof(char *), cmp);
	for (int i = 0; i < k; i++)
		strncat(out, sorted[i], len - strlen(out) - 1);
}

int main(int argc, char **argv)
{
	char buf[1024], before[256], after[256];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int a[2], b[2], c[2];
	pipe(a), pipe(b), pipe(c);
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN};
	dup2(a[0], 700);
	ev.data.u64 = 0xa;
	epoll_ctl(ep, EPOLL_CTL_ADD, 700, &ev);
	dup2(b[0], 700);
	ev.data.u64 = 0xb;
	epoll_ctl(ep, EPOLL_CTL_ADD, 700, &ev);
	dup2(c[0], 701);
	ev.data.u64 = 0xc;
	epoll_ctl(ep, EPOLL_CTL_ADD, 701, &ev);
	close(701);
	keys(ep, before, sizeof(before));
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d keys=%s\n", getpid(), before);
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	keys(ep, after, sizeof(after));
	write(a[1], "x", 1);
	write(c[1], "x", 1);
	struct epoll_event got[4];
	int n = epoll_wait(ep, got, 4, 1000), seen = 0;
	for (int i = 0; i < n; i++)
		seen |= got[i].data.u64 == 0xa ? 1 : got[i].data.u64 == 0xc ? 2 : 4;
	const char *why = strcmp(before, after) ? "the set's keys" : seen != 3 ? "events" : NULL;
	if (why)
		snprintf(buf, sizeof(buf), "FAIL epollkeys: %s (%s / %s, seen %d)\n", why, before, after, seen);
	else
		snprintf(buf, sizeof(buf), "PASS epollkeys\n");
	write(out, buf, strlen(buf));
	return why != NULL;
}
