/**
 * Signal frames that take a task home: an x86-64 rt_sigframe holding a thread's own registers,
 * signal mask and FPU state, built here and written into the task, so that an rt_sigreturn the
 * task executes by itself (parasite/heal.c) puts it back exactly where it was frozen. This is
 * how an infected task survives the death of criu.
 *
 * ```
 * at + 0            pretcode   (a `mov $15, %rax; syscall` of the task's code, or 0)
 * at + 8            ucontext   flags, link, stack (ignored), sigcontext, mask     (304 bytes)
 * at + 312 ..       padding to 64
 * at + fpOffset     fpstate    the thread's XSAVE area (its fx_sw_bytes say "xstate"),
 *                              then FP_XSTATE_MAGIC2
 * ```
 *
 * @module
 */
import { REG, type RegName, SIGFRAME, XSAVE, xstateLayout } from "../syscalls/mod.ts";
import type { RemotePtr } from "../syscalls/mod.ts";

const ERESTARTSYS = -512n;
const ERESTARTNOINTR = -513n;
const ERESTARTNOHAND = -514n;
const ERESTART_RESTARTBLOCK = -516n;
const EINTR = -4n;

/**
 * The registers a frozen thread resumes with when it goes home by rt_sigreturn instead of
 * through the kernel's own syscall restart (which sigreturn turns off): an interrupted syscall
 * is made to run again (ip back over the `syscall` instruction, rax = its number), as the
 * kernel does when no handler runs. A syscall restarted through restart_syscall() cannot be
 * (rt_sigreturn forgets the restart block), so it returns EINTR, as criu does.
 */
export function restartedRegs(regs: BigUint64Array): BigUint64Array {
  const r = new BigUint64Array(regs);
  if (BigInt.asIntN(64, r[REG.orig_ax]) >= 0n) {
    const ax = BigInt.asIntN(64, r[REG.ax]);
    if (ax === ERESTARTSYS || ax === ERESTARTNOINTR || ax === ERESTARTNOHAND) {
      r[REG.ax] = r[REG.orig_ax];
      r[REG.ip] -= 2n;
    } else if (ax === ERESTART_RESTARTBLOCK) {
      r[REG.ax] = BigInt.asUintN(64, EINTR);
    }
  }
  r[REG.orig_ax] = 0xffffffffffffffffn;
  return r;
}

/** Offset of the fpstate from the frame's start. */
const FP_OFFSET = Math.ceil(SIGFRAME.size / 64) * 64;

/** Bytes a frame for this XSAVE area takes (without one: a frame without fpstate). */
export function sigframeSize(xsave?: Uint8Array): number {
  return xsave ? FP_OFFSET + xstateSize(xsave) + 4 : FP_OFFSET;
}

/**
 * Bytes of `xsave` a frame carries: what its fx_sw_bytes say when it has them (a signal frame's
 * area), else (ptrace's) up to the end of the last state component its xstate_bv holds. ptrace
 * hands out the largest area the CPU has, dynamically enabled components included (AMX's tiles,
 * 8 KiB), but rt_sigreturn takes no area larger than the task's own and restores only the
 * legacy SSE state from one that is, the rest (the upper halves of the AVX registers, AVX-512)
 * set to zero. Components not in xstate_bv are in their initial state and need no room.
 */
function xstateSize(xsave: Uint8Array): number {
  const v = new DataView(xsave.buffer, xsave.byteOffset, xsave.byteLength);
  if (v.getUint32(SIGFRAME.swBytes, true) === SIGFRAME.magic1) {
    return Math.min(v.getUint32(SIGFRAME.swBytes + 16, true), xsave.length);
  }
  const held = v.getBigUint64(XSAVE.xstateBv, true);
  let end: number = XSAVE.ymmh; // the legacy area and the header
  for (const [bit, c] of xstateLayout()) {
    if (held & (1n << BigInt(bit))) end = Math.max(end, c.offset + c.size);
  }
  return Math.min(end, xsave.length);
}

/** What a home frame holds. */
export interface SigframeSpec {
  /** Where the frame will be in the task (64-byte aligned): the fpstate pointer depends on it. */
  at: RemotePtr;
  /** Registers to return to (see {@link restartedRegs}). */
  regs: BigUint64Array;
  /** Signal mask after the return. */
  sigmask: bigint;
  /**
   * The thread's XSAVE area as PTRACE_GETREGSET(NT_X86_XSTATE) gave it; without it the frame
   * has no fpstate and rt_sigreturn resets the FPU (for a frame whose code does not use it).
   */
  xsave?: Uint8Array;
  /** The frame's pretcode word. */
  pretcode?: bigint;
}

/** Builds the frame bytes for {@link SigframeSpec}. */
export function buildSigframe(spec: SigframeSpec): Uint8Array {
  if (spec.at % 64n !== 0n) throw new Error("A signal frame must be 64-byte aligned");
  const size = spec.xsave ? xstateSize(spec.xsave) : 0;
  const out = new Uint8Array(spec.xsave ? FP_OFFSET + size + 4 : FP_OFFSET);
  const v = new DataView(out.buffer);
  v.setBigUint64(SIGFRAME.pretcode, spec.pretcode ?? 0n, true);
  const uc = SIGFRAME.ucontext;
  v.setBigUint64(uc + SIGFRAME.ucFlags, BigInt(SIGFRAME.ucFlagsValue), true);
  // An impossible ss_flags: sigaltstack() rejects it and rt_sigreturn ignores the error, so
  // the thread's alternate stack stays what it is.
  v.setInt32(uc + SIGFRAME.ucStack + 8, 3, true);
  const sc = uc + SIGFRAME.ucMcontext;
  for (const [name, off] of Object.entries(SIGFRAME.sc)) {
    if (name in REG) {
      const value = spec.regs[REG[name as RegName]];
      if (name === "cs" || name === "gs" || name === "fs" || name === "ss") {
        v.setUint16(sc + off, Number(value & 0xffffn), true);
      } else {
        v.setBigUint64(sc + off, value, true);
      }
    }
  }
  v.setBigUint64(uc + SIGFRAME.ucSigmask, spec.sigmask, true);
  if (!spec.xsave) return out;
  v.setBigUint64(sc + SIGFRAME.sc.fpstate, spec.at + BigInt(FP_OFFSET), true);

  out.set(spec.xsave.subarray(0, size), FP_OFFSET);
  // fx_sw_bytes: magic1, extended size (with magic2), xfeatures, xstate size.
  const fp = FP_OFFSET;
  const hadMagic = v.getUint32(fp + SIGFRAME.swBytes, true) === SIGFRAME.magic1;
  const xfeatures = hadMagic
    ? v.getBigUint64(fp + SIGFRAME.swBytes + 8, true)
    : v.getBigUint64(fp + XSAVE.xstateBv, true);
  v.setUint32(fp + SIGFRAME.swBytes, SIGFRAME.magic1, true);
  v.setUint32(fp + SIGFRAME.swBytes + 4, size + 4, true);
  v.setBigUint64(fp + SIGFRAME.swBytes + 8, xfeatures, true);
  v.setUint32(fp + SIGFRAME.swBytes + 16, size, true);
  v.setUint32(fp + size, SIGFRAME.magic2, true);
  return out;
}
