/*
 * A service to migrate: a TCP echo server with memory it keeps rewriting. argv: OUT PORT MIB [PCT].
 *
 * MIB MiB of anonymous memory, each page holding its number and a version (kept apart too); PCT
 * percent of it (1 unless given) is rewritten every second, page after page, for as long as it
 * runs. It listens on PORT (any address) and echoes back, to one client at a time, every
 * 8-byte word it reads. On SIGTERM it checks every page against its version and prints PASS
 * or FAIL, with how many words it echoed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static char *mem;
static uint64_t *versions;
static size_t pages;

static void fill(size_t i)
{
	uint64_t *p = (uint64_t *)(mem + i * PAGE);
	for (size_t k = 0; k < PAGE / 8; k++)
		p[k] = (i * 0x9e3779b97f4a7c15ULL) ^ (versions[i] * 0xbf58476d1ce4e5b9ULL) ^ k;
}

static int check(size_t i)
{
	uint64_t *p = (uint64_t *)(mem + i * PAGE);
	for (size_t k = 0; k < PAGE / 8; k++)
		if (p[k] != ((i * 0x9e3779b97f4a7c15ULL) ^ (versions[i] * 0xbf58476d1ce4e5b9ULL) ^ k))
			return 0;
	return 1;
}

static uint64_t now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int port = atoi(argv[2]);
	pages = (size_t)atoi(argv[3]) * 256;
	double pct = argc > 4 ? atof(argv[4]) : 1.0;
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	versions = calloc(pages, sizeof(*versions));
	for (size_t i = 0; i < pages; i++)
		fill(i);
	signal(SIGTERM, on_term);
	signal(SIGPIPE, SIG_IGN);

	int ls = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 4)) {
		dprintf(out, "FAIL echoer: cannot listen on %d\n", port);
		return 1;
	}
	dprintf(out, "ready pid=%d pages=%zu\n", getpid(), pages);

	/* Pages per second to rewrite, spread over ticks of 1 ms. */
	double per_ms = pages * pct / 100.0 / 1000.0, owed = 0;
	size_t at = 0;
	uint64_t last = now_us(), echoed = 0, writes = 0;
	int c = -1;
	while (!term) {
		struct pollfd p = {.fd = c >= 0 ? c : ls, .events = POLLIN};
		if (poll(&p, 1, 1) > 0) {
			if (c < 0) {
				c = accept(ls, NULL, NULL);
			} else {
				uint64_t w[64];
				ssize_t n = read(c, w, sizeof(w));
				if (n <= 0) {
					dprintf(out, "client gone (%s)\n", n == 0 ? "closed" : "error");
					close(c);
					c = -1;
				} else {
					/* Echoed back byte for byte; words counted as they complete. */
					ssize_t done = 0;
					static size_t partial;
					while (done < n) {
						ssize_t m = write(c, (char *)w + done, n - done);
						if (m <= 0)
							break;
						done += m;
					}
					partial += n;
					echoed += partial / 8;
					partial %= 8;
				}
			}
		}
		uint64_t t = now_us();
		owed += per_ms * (double)(t - last) / 1000.0;
		last = t;
		for (; owed >= 1; owed--) {
			versions[at]++;
			fill(at);
			writes++;
			at = (at + 1) % pages;
		}
	}
	for (size_t i = 0; i < pages; i++) {
		if (!check(i)) {
			dprintf(out, "FAIL echoer: page %zu is not version %llu (%llu writes)\n", i,
				(unsigned long long)versions[i], (unsigned long long)writes);
			return 1;
		}
	}
	dprintf(out, "PASS echoer: every page right (%llu writes, %llu words echoed)\n",
		(unsigned long long)writes, (unsigned long long)echoed);
	return 0;
}
