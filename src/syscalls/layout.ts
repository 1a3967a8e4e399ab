/**
 * Kernel struct layouts for x86-64, the only place that knows offsets and sizes.
 * tests/layout_test.ts compiles a C program that prints `offsetof`/`sizeof` and compares.
 *
 * ```
 * struct user_regs_struct (27 x u64, 216 bytes)
 *   r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss
 *   fs_base gs_base ds es fs gs
 *
 * XSAVE area, standard (uncompacted) format as PTRACE_GETREGSET(NT_X86_XSTATE) returns it
 *   0      legacy FXSAVE region (512)
 *            0 cwd u16 | 2 swd u16 | 4 twd u16 | 6 fop u16 | 8 rip u64 | 16 rdp u64
 *           24 mxcsr u32 | 28 mxcsr_mask u32 | 32 st_space[32] u32 | 160 xmm_space[64] u32
 *          416 padding[24] u32 (464.. holds the kernel's fx_sw_bytes: magic, sizes, xfeatures)
 *   512    XSAVE header: xstate_bv u64, xcomp_bv u64, reserved
 *   576    AVX: YMM_Hi128 (256)        960 MPX BNDREGS (64)     1024 MPX BNDCSR (64)
 *   1088   AVX-512 opmask (64)         1152 ZMM_Hi256 (512)     1664 Hi16_ZMM (1024)
 *   2688   PKRU (8)
 * ```
 *
 * @module
 */

/** Index of each register in `struct user_regs_struct`, in kernel order. */
export const REG = {
  r15: 0,
  r14: 1,
  r13: 2,
  r12: 3,
  bp: 4,
  bx: 5,
  r11: 6,
  r10: 7,
  r9: 8,
  r8: 9,
  ax: 10,
  cx: 11,
  dx: 12,
  si: 13,
  di: 14,
  orig_ax: 15,
  ip: 16,
  cs: 17,
  flags: 18,
  sp: 19,
  ss: 20,
  fs_base: 21,
  gs_base: 22,
  ds: 23,
  es: 24,
  fs: 25,
  gs: 26,
} as const;

/** Register names in kernel order. */
export type RegName = keyof typeof REG;

/** Number of u64 words in `struct user_regs_struct`. */
export const USER_REGS_WORDS = 27;
/** `sizeof(struct user_regs_struct)`. */
export const USER_REGS_SIZE = USER_REGS_WORDS * 8;

/** `sizeof(struct iovec)`. */
export const IOVEC_SIZE = 16;
/** `sizeof(siginfo_t)`. */
export const SIGINFO_SIZE = 128;
/** `sizeof(struct ptrace_peeksiginfo_args)`: u64 off, u32 flags, s32 nr. */
export const PEEKSIGINFO_ARGS_SIZE = 16;
/** `sizeof(struct ptrace_rseq_configuration)`: u64 ptr, u32 size, u32 sig, u32 flags, u32 pad. */
export const RSEQ_CONFIG_SIZE = 24;
/** Kernel `struct sigaction` (x86-64): handler, flags, restorer, mask (8 bytes each). */
export const KSIGACTION_SIZE = 32;
/** struct utsname: six fields of 65 bytes; where uname(2) puts the host and domain names. */
export const UTSNAME = { size: 390, nodename: 65, domainname: 325, field: 65 } as const;
/** `stack_t`: ss_sp u64, ss_flags i32 (+pad), ss_size u64. */
export const STACK_T = { size: 24, sp: 0, flags: 8, ssize: 16 } as const;
/** `struct itimerval`: interval {sec, usec}, value {sec, usec}, 8 bytes each. */
export const ITIMERVAL_SIZE = 32;

/** Offsets inside the XSAVE area (standard format). */
export const XSAVE = {
  /** Legacy FXSAVE region size. */
  fxsaveSize: 512,
  cwd: 0,
  swd: 2,
  twd: 4,
  fop: 6,
  rip: 8,
  rdp: 16,
  mxcsr: 24,
  mxcsrMask: 28,
  stSpace: 32,
  xmmSpace: 160,
  padding: 416,
  /** fx_sw_bytes.xfeatures (the kernel's XCR0 view) inside the padding. */
  swXfeatures: 464 + 8,
  xstateBv: 512,
  ymmh: 576,
  bndreg: 960,
  bndcsr: 1024,
  opmask: 1088,
  zmmUpper: 1152,
  hi16Zmm: 1664,
  pkru: 2688,
  /** A buffer large enough for any XSAVE area the kernel hands out via ptrace. */
  maxSize: 16384,
} as const;

/** XSAVE state-component bits of `xstate_bv`. */
export const XFEATURE = {
  fp: 1n << 0n,
  sse: 1n << 1n,
  ymm: 1n << 2n,
  bndregs: 1n << 3n,
  bndcsr: 1n << 4n,
  opmask: 1n << 5n,
  zmmHi256: 1n << 6n,
  hi16Zmm: 1n << 7n,
  pkru: 1n << 9n,
} as const;

/**
 * The frame rt_sigreturn reads (x86-64 `struct rt_sigframe` as the kernel builds it for a
 * handler), at `sp - 8` when the syscall runs:
 *
 * ```
 * 0    pretcode  u64          where the handler's `ret` goes (the sa_restorer)
 * 8    ucontext:
 *        0   uc_flags  u64    UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
 *        8   uc_link   u64
 *       16   uc_stack  stack_t (24)          given to sigaltstack(); errors ignored
 *       40   uc_mcontext = struct sigcontext (256):
 *              r8 r9 r10 r11 r12 r13 r14 r15 di si bp bx dx ax cx sp ip flags (u64 each),
 *              cs gs fs ss (u16 each), err trapno oldmask cr2 (u64), fpstate (u64 pointer),
 *              reserved[8]
 *      296   uc_sigmask u64   the mask after the return
 * 312  (siginfo, unused by rt_sigreturn)
 * fpstate: a standard-format XSAVE area, 64-byte aligned, whose fx_sw_bytes (at 464) carry
 *          FP_XSTATE_MAGIC1 and its size; FP_XSTATE_MAGIC2 follows it at `xstate_size`.
 * ```
 */
export const SIGFRAME = {
  pretcode: 0,
  ucontext: 8,
  ucFlags: 0,
  ucStack: 16,
  ucMcontext: 40,
  ucSigmask: 296,
  /** Bytes of pretcode + ucontext (all that rt_sigreturn reads besides the fpstate). */
  size: 8 + 304,
  /** struct sigcontext field offsets, relative to uc_mcontext. */
  sc: {
    r8: 0,
    r9: 8,
    r10: 16,
    r11: 24,
    r12: 32,
    r13: 40,
    r14: 48,
    r15: 56,
    di: 64,
    si: 72,
    bp: 80,
    bx: 88,
    dx: 96,
    ax: 104,
    cx: 112,
    sp: 120,
    ip: 128,
    flags: 136,
    cs: 144,
    gs: 146,
    fs: 148,
    ss: 150,
    fpstate: 184,
  },
  /** fx_sw_bytes inside the legacy region: magic1 u32, extended_size u32, xfeatures u64, xstate_size u32. */
  swBytes: 464,
  magic1: 0x46505853,
  magic2: 0x46505845,
  /** uc_flags: UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS. */
  ucFlagsValue: 7,
} as const;
