/*
 * A vast reservation, as mariadb keeps: 8 TiB of PROT_NONE anonymous memory, with 16 pages in
 * its middle written once (made writable for it, then PROT_NONE again). argv: OUT.
 * On SIGTERM it makes them readable and checks them. Prints PASS reserve or FAIL.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	FILE *out = fopen(argv[1], "a");
	setvbuf(out, NULL, _IONBF, 0);
	signal(SIGTERM, on_term);
	size_t size = (size_t)8 << 40, mid = (size_t)4 << 40, len = 16 * 4096;
	char *r = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED || mprotect(r + mid, len, PROT_READ | PROT_WRITE)) {
		fprintf(out, "FAIL setup\n");
		return 1;
	}
	for (size_t i = 0; i < len; i += 4096)
		memset(r + mid + i, 'a' + (int)(i / 4096), 4096);
	if (mprotect(r + mid, len, PROT_NONE)) {
		fprintf(out, "FAIL setup\n");
		return 1;
	}
	fprintf(out, "ready\n");
	while (!term)
		pause();
	const char *why = NULL;
	if (mprotect(r + mid, len, PROT_READ))
		why = "mprotect";
	for (size_t i = 0; !why && i < len; i += 4096)
		for (size_t j = 0; j < 4096; j++)
			if (r[mid + i + j] != 'a' + (int)(i / 4096)) {
				why = "its pages";
				break;
			}
	fprintf(out, why ? "FAIL %s\n" : "PASS reserve\n", why);
	return 0;
}
