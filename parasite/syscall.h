/*
 * Raw x86-64 system calls for the freestanding blobs (no libc): the number in rax, arguments in
 * rdi, rsi, rdx, r10, r8, r9; rcx and r11 are clobbered by the instruction.
 */
#ifndef DENO_CRIU_SYSCALL_H
#define DENO_CRIU_SYSCALL_H

typedef unsigned long u64;
typedef long s64;

static inline s64 sys3(s64 nr, s64 a, s64 b, s64 c)
{
	s64 ret;
	asm volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}

static inline s64 sys6(s64 nr, s64 a, s64 b, s64 c, s64 d, s64 e, s64 f)
{
	s64 ret;
	register s64 r10 asm("r10") = d;
	register s64 r8 asm("r8") = e;
	register s64 r9 asm("r9") = f;
	asm volatile("syscall"
		     : "=a"(ret)
		     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
		     : "rcx", "r11", "memory");
	return ret;
}

#define NR_read 0
#define NR_open 2
#define NR_rt_sigaction 13
#define NR_pipe 22
#define NR_dup2 33
#define NR_nanosleep 35
#define NR_setsockopt 54
#define NR_clone 56
#define NR_execve 59
#define NR_pipe2 293
#define NR_pidfd_send_signal 424
#define NR_pidfd_open 434
#define NR_pidfd_getfd 438
#define NR_write 1
#define NR_close 3
#define NR_mmap 9
#define NR_mprotect 10
#define NR_munmap 11
#define NR_pread64 17
#define NR_mremap 25
#define NR_madvise 28
#define NR_shmat 30
#define NR_pause 34
#define NR_rt_sigtimedwait 128
#define NR_getpid 39
#define NR_exit 60
#define NR_wait4 61
#define NR_kill 62
#define NR_getppid 110
#define NR_prctl 157
#define NR_vmsplice 278
#define NR_exit_group 231
#define NR_clone3 435
#define NR_unshare 272
#define NR_clock_gettime 228
#define EINTR 4
#define EAGAIN 11
#define ECHILD 10

#endif
