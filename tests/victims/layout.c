#define _GNU_SOURCE
/* Not a victim: prints the kernel struct offsets and sizes that src/syscalls/layout.ts encodes. */
#include <signal.h>
#include <ucontext.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/utsname.h>
#include <linux/ptrace.h>
#include <linux/aio_abi.h>

int main(void)
{
	printf("{\"user_regs_size\":%zu,\"orig_rax\":%zu,\"rip\":%zu,\"fs_base\":%zu,\"gs\":%zu,",
	       sizeof(struct user_regs_struct), offsetof(struct user_regs_struct, orig_rax),
	       offsetof(struct user_regs_struct, rip), offsetof(struct user_regs_struct, fs_base),
	       offsetof(struct user_regs_struct, gs));
	printf("\"iovec\":%zu,\"siginfo\":%zu,\"peeksiginfo_args\":%zu,\"rseq_config\":%zu,",
	       sizeof(struct iovec), sizeof(siginfo_t), sizeof(struct ptrace_peeksiginfo_args),
	       sizeof(struct ptrace_rseq_configuration));
	printf("\"utsname\":%zu,\"nodename\":%zu,\"domainname\":%zu,", sizeof(struct utsname),
	       offsetof(struct utsname, nodename), offsetof(struct utsname, domainname));
	printf("\"stack_t\":%zu,\"ss_flags\":%zu,\"ss_size\":%zu,\"itimerval\":%zu,",
	       sizeof(stack_t), offsetof(stack_t, ss_flags), offsetof(stack_t, ss_size),
	       sizeof(struct itimerval));
	printf("\"fxsave\":%zu,\"mxcsr\":%zu,\"st_space\":%zu,\"xmm_space\":%zu,\"padding\":%zu,",
	       sizeof(struct user_fpregs_struct), offsetof(struct user_fpregs_struct, mxcsr),
	       offsetof(struct user_fpregs_struct, st_space),
	       offsetof(struct user_fpregs_struct, xmm_space),
	       offsetof(struct user_fpregs_struct, padding));
	printf("\"iocb\":%zu,\"aio_lio_opcode\":%zu,\"aio_fildes\":%zu,\"aio_buf\":%zu,"
	       "\"aio_nbytes\":%zu,\"io_event\":%zu,", sizeof(struct iocb),
	       offsetof(struct iocb, aio_lio_opcode), offsetof(struct iocb, aio_fildes),
	       offsetof(struct iocb, aio_buf), offsetof(struct iocb, aio_nbytes),
	       sizeof(struct io_event));
	printf("\"uc_mcontext\":%zu,\"uc_stack\":%zu,\"sc_r12\":%zu,\"sc_rdi\":%zu,\"sc_rsp\":%zu,"
	       "\"sc_rip\":%zu,\"sc_eflags\":%zu,\"sc_cs\":%zu,\"sc_ss\":%zu,\"sc_fpstate\":%zu,"
	       "\"sigcontext\":%zu}\n",
	       offsetof(ucontext_t, uc_mcontext), offsetof(ucontext_t, uc_stack),
	       offsetof(struct sigcontext, r12), offsetof(struct sigcontext, rdi),
	       offsetof(struct sigcontext, rsp), offsetof(struct sigcontext, rip),
	       offsetof(struct sigcontext, eflags), offsetof(struct sigcontext, cs),
	       offsetof(struct sigcontext, __pad0), offsetof(struct sigcontext, fpstate),
	       sizeof(struct sigcontext));
	return 0;
}
