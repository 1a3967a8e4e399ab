/*
 * Victim: holds known values in r12-r15, xmm5-xmm6 and the upper half of ymm7 while spinning in a loop that checks
 * them on every iteration. If a dump (or a failed dump) changes any of them, the loop exits
 * and the victim writes FAIL; otherwise it spins until killed.
 *
 * Prints to argv[1]: "ready PID" once the values are loaded.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define R12 0x1212121212121212UL
#define R13 0x1313131313131313UL
#define R14 0xdeadbeefcafef00dUL
#define R15 0x0123456789abcdefUL

static int out;

static void say(const char *s) { write(out, s, strlen(s)); }

int main(int argc, char **argv)
{
	char buf[64];
	out = open(argc > 1 ? argv[1] : "/dev/stdout", O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(buf, sizeof(buf), "ready %d\n", getpid());
	say(buf);
	unsigned long bad;
	asm volatile(
		"movabs %1, %%r12\n"
		"movabs %2, %%r13\n"
		"movabs %3, %%r14\n"
		"movabs %4, %%r15\n"
		"movq %%r14, %%xmm5\n"
		"movq %%r15, %%xmm6\n"
		"vmovq %%r13, %%xmm8\n"
		"vinserti128 $1, %%xmm8, %%ymm7, %%ymm7\n"
		"vpxor %%xmm8, %%xmm8, %%xmm8\n"
		"1:\n"
		"movabs %1, %%rax\n cmp %%rax, %%r12\n jne 2f\n"
		"movabs %2, %%rax\n cmp %%rax, %%r13\n jne 2f\n"
		"movabs %3, %%rax\n cmp %%rax, %%r14\n jne 2f\n"
		"movabs %4, %%rax\n cmp %%rax, %%r15\n jne 2f\n"
		"movq %%xmm5, %%rax\n cmp %%rax, %%r14\n jne 2f\n"
		"movq %%xmm6, %%rax\n cmp %%rax, %%r15\n jne 2f\n"
		"vextracti128 $1, %%ymm7, %%xmm8\n vmovq %%xmm8, %%rax\n cmp %%rax, %%r13\n jne 2f\n"
		"pause\n"
		"jmp 1b\n"
		"2: mov %%rax, %0\n"
		: "=r"(bad)
		: "i"(R12), "i"(R13), "i"(R14), "i"(R15)
		: "rax", "r12", "r13", "r14", "r15", "xmm5", "xmm6", "xmm7", "xmm8", "cc");
	snprintf(buf, sizeof(buf), "FAIL register changed (saw %lx)\n", bad);
	say(buf);
	return 1;
}
