/**
 * ptrace and waitpid.
 *
 * Precondition: every call comes from the tracer thread (the Deno main thread); the symbols are
 * synchronous FFI calls for that reason.
 *
 * @module
 */
import { ENOENT, Errno, orErrno, unwrap } from "./errno.ts";
import { addressOf, lastErrno, libc } from "./ffi.ts";
import {
  PEEKSIGINFO_ARGS_SIZE,
  RSEQ_CONFIG_SIZE,
  SIGINFO_SIZE,
  USER_REGS_WORDS,
  XSAVE,
} from "./layout.ts";

/** ptrace requests used by deno-criu. */
export const PTRACE = {
  CONT: 7,
  KILL: 8,
  GETREGS: 12,
  SETREGS: 13,
  DETACH: 17,
  SYSCALL: 24,
  SETOPTIONS: 0x4200,
  GETEVENTMSG: 0x4201,
  GETSIGINFO: 0x4202,
  GETREGSET: 0x4204,
  SETREGSET: 0x4205,
  SEIZE: 0x4206,
  INTERRUPT: 0x4207,
  PEEKSIGINFO: 0x4209,
  GETSIGMASK: 0x420a,
  SETSIGMASK: 0x420b,
  SECCOMP_GET_FILTER: 0x420c,
  SECCOMP_GET_METADATA: 0x420d,
  GET_RSEQ_CONFIGURATION: 0x420f,
} as const;

const REQUEST_NAMES = new Map<number, string>(
  Object.entries(PTRACE).map(([k, v]) => [v, `PTRACE_${k}`]),
);

/** ptrace options (PTRACE_O_*). */
export const PTRACE_O = {
  TRACESYSGOOD: 0x1,
  TRACEFORK: 0x2,
  TRACEVFORK: 0x4,
  TRACECLONE: 0x8,
  TRACEEXEC: 0x10,
  TRACEEXIT: 0x40,
  EXITKILL: 0x100000,
  /** The tracee's seccomp filters (or strict mode) do not apply while it is traced so. */
  SUSPEND_SECCOMP: 0x200000,
} as const;

/** `PTRACE_EVENT_STOP`: the stop PTRACE_INTERRUPT and group-stops report under SEIZE. */
export const PTRACE_EVENT_STOP = 128;
/** `PTRACE_PEEKSIGINFO_SHARED`: read the process-wide queue instead of the thread's. */
export const PTRACE_PEEKSIGINFO_SHARED = 1;
/** ELF note types for PTRACE_GETREGSET. */
export const NT = { PRSTATUS: 1, PRFPREG: 2, X86_XSTATE: 0x202 } as const;
/** waitpid option: wait for all children, clones included. */
export const WALL = 0x40000000;
/** waitpid option: return at once when nothing changed. */
export const WNOHANG = 1;

function request(req: number, pid: number, addr: bigint | number, data: bigint | number): bigint {
  const ret = libc.ptrace(req, pid, BigInt(addr), BigInt(data));
  const n = typeof ret === "bigint" ? ret : BigInt(ret);
  if (n < 0n) throw new Errno(`ptrace(${REQUEST_NAMES.get(req)})`, lastErrno(), `task ${pid}`);
  return n;
}

/** Like {@link request} but returns `-errno` on failure instead of throwing. */
function tryRequest(
  req: number,
  pid: number,
  addr: bigint | number,
  data: bigint | number,
): number {
  return orErrno(libc.ptrace(req, pid, BigInt(addr), BigInt(data)));
}

/** PTRACE_SEIZE: become the tracer without stopping the task. */
export function ptraceSeize(pid: number, options: number): void {
  request(PTRACE.SEIZE, pid, 0, options);
}

/** PTRACE_SETOPTIONS: replaces the tracing options of a task (the `PTRACE_O` bits). */
export function ptraceSetOptions(pid: number, options: number): void {
  request(PTRACE.SETOPTIONS, pid, 0, options);
}

/** PTRACE_INTERRUPT: ask a seized task to stop (reported as PTRACE_EVENT_STOP). */
export function ptraceInterrupt(pid: number): void {
  request(PTRACE.INTERRUPT, pid, 0, 0);
}

/** PTRACE_DETACH, delivering `sig` (0 for none). Returns `-errno` on failure. */
export function tryPtraceDetach(pid: number, sig = 0): number {
  return tryRequest(PTRACE.DETACH, pid, 0, sig);
}

/** PTRACE_CONT, delivering `sig` (0 for none). */
export function ptraceCont(pid: number, sig = 0): void {
  request(PTRACE.CONT, pid, 0, sig);
}

/** PTRACE_SYSCALL: resume until the next syscall entry or exit. */
export function ptraceSyscall(pid: number, sig = 0): void {
  request(PTRACE.SYSCALL, pid, 0, sig);
}

/** PTRACE_GETREGS into a fresh array of 27 words (`struct user_regs_struct`). */
export function ptraceGetRegs(pid: number): BigUint64Array {
  const regs = new BigUint64Array(USER_REGS_WORDS);
  request(PTRACE.GETREGS, pid, 0, addressOf(regs));
  return regs;
}

/** PTRACE_SETREGS from 27 words. */
export function ptraceSetRegs(pid: number, regs: BigUint64Array): void {
  request(PTRACE.SETREGS, pid, 0, addressOf(regs));
}

/** PTRACE_GETREGSET(NT_X86_XSTATE): the task's XSAVE area, trimmed to what the kernel wrote. */
export function ptraceGetXstate(pid: number): Uint8Array {
  const buf = new Uint8Array(XSAVE.maxSize);
  const iov = new BigUint64Array([addressOf(buf), BigInt(buf.length)]);
  request(PTRACE.GETREGSET, pid, NT.X86_XSTATE, addressOf(iov));
  return buf.slice(0, Number(iov[1]));
}

/** PTRACE_SETREGSET(NT_X86_XSTATE). */
export function ptraceSetXstate(pid: number, xsave: Uint8Array): void {
  const buf = new Uint8Array(xsave);
  const iov = new BigUint64Array([addressOf(buf), BigInt(buf.length)]);
  request(PTRACE.SETREGSET, pid, NT.X86_XSTATE, addressOf(iov));
}

/** PTRACE_GETSIGMASK: the blocked-signal mask (bit N-1 for signal N). */
export function ptraceGetSigmask(pid: number): bigint {
  const mask = new BigUint64Array(1);
  request(PTRACE.GETSIGMASK, pid, 8, addressOf(mask));
  return mask[0];
}

/** PTRACE_SETSIGMASK. */
export function ptraceSetSigmask(pid: number, mask: bigint): void {
  const buf = new BigUint64Array([mask]);
  request(PTRACE.SETSIGMASK, pid, 8, addressOf(buf));
}

/** PTRACE_GETSIGINFO: the signal number of the stop the task is in (si_signo). */
export function ptraceGetSigno(pid: number): number {
  const info = new Uint8Array(SIGINFO_SIZE);
  request(PTRACE.GETSIGINFO, pid, 0, addressOf(info));
  return new DataView(info.buffer).getInt32(0, true);
}

/** PTRACE_GETEVENTMSG. */
export function ptraceGetEventMsg(pid: number): bigint {
  const msg = new BigUint64Array(1);
  request(PTRACE.GETEVENTMSG, pid, 0, addressOf(msg));
  return msg[0];
}

/**
 * PTRACE_PEEKSIGINFO: every queued signal of the thread (or of the process with `shared`),
 * without dequeuing them, as raw 128-byte `siginfo_t` records.
 */
export function ptracePeekSiginfo(pid: number, shared: boolean): Uint8Array[] {
  const out: Uint8Array[] = [];
  const batch = 32;
  const buf = new Uint8Array(SIGINFO_SIZE * batch);
  const args = new Uint8Array(PEEKSIGINFO_ARGS_SIZE);
  const view = new DataView(args.buffer);
  for (let off = 0;; off += batch) {
    view.setBigUint64(0, BigInt(off), true);
    view.setUint32(8, shared ? PTRACE_PEEKSIGINFO_SHARED : 0, true);
    view.setInt32(12, batch, true);
    const n = Number(request(PTRACE.PEEKSIGINFO, pid, addressOf(args), addressOf(buf)));
    for (let i = 0; i < n; i++) out.push(buf.slice(i * SIGINFO_SIZE, (i + 1) * SIGINFO_SIZE));
    if (n < batch) return out;
  }
}

/** The task's registered rseq area, from PTRACE_GET_RSEQ_CONFIGURATION. */
export interface RseqConfig {
  /** Address of `struct rseq` in the task, 0 when none is registered. */
  pointer: bigint;
  /** Registered size. */
  size: number;
  /** Abort signature. */
  signature: number;
}

/** PTRACE_GET_RSEQ_CONFIGURATION. */
export function ptraceGetRseq(pid: number): RseqConfig {
  const buf = new Uint8Array(RSEQ_CONFIG_SIZE);
  request(PTRACE.GET_RSEQ_CONFIGURATION, pid, RSEQ_CONFIG_SIZE, addressOf(buf));
  const v = new DataView(buf.buffer);
  return {
    pointer: v.getBigUint64(0, true),
    size: v.getUint32(8, true),
    signature: v.getUint32(12, true),
  };
}

/** A decoded waitpid status. */
export interface WaitStatus {
  /** The pid waitpid returned. */
  pid: number;
  /** The raw status word. */
  raw: number;
  /** Stopped (ptrace stop of any kind). */
  stopped: boolean;
  /** Stop signal when stopped. */
  stopSig: number;
  /** PTRACE_EVENT_* when stopped on an event, else 0. */
  event: number;
  /** Exited normally. */
  exited: boolean;
  /** Exit code when exited. */
  exitCode: number;
  /** Killed by a signal. */
  signaled: boolean;
  /** Terminating signal when signaled. */
  termSig: number;
}

/** Decodes a waitpid status word. */
export function decodeWaitStatus(pid: number, raw: number): WaitStatus {
  const low = raw & 0x7f;
  const stopped = (raw & 0xff) === 0x7f;
  return {
    pid,
    raw,
    stopped,
    stopSig: stopped ? (raw >> 8) & 0xff : 0,
    event: stopped ? (raw >> 16) & 0xff : 0,
    exited: low === 0,
    exitCode: (raw >> 8) & 0xff,
    signaled: low !== 0 && low !== 0x7f,
    termSig: low,
  };
}

/** waitpid(pid, &status, options); throws on failure (EINTR is retried). */
export function waitPid(pid: number, options = WALL): WaitStatus {
  const status = new Int32Array(1);
  for (;;) {
    const ret = libc.waitpid(pid, status, options);
    if (ret >= 0) return decodeWaitStatus(ret, status[0]);
    const errno = lastErrno();
    if (errno !== 4 /* EINTR */) throw new Errno("waitpid", errno, `task ${pid}`);
  }
}

/** waitpid(pid, WNOHANG | `options`): a status, or undefined while nothing changed. */
export function tryWaitPid(pid: number, options = WALL): WaitStatus | undefined {
  const st = waitPid(pid, options | WNOHANG);
  return st.pid === 0 ? undefined : st;
}

/** kill(pid, sig). */
export function kill(pid: number, sig: number): void {
  unwrap(libc.kill(pid, sig), `kill(${sig})`, `task ${pid}`);
}

/** kill(pid, sig), returning `-errno` on failure. */
export function tryKill(pid: number, sig: number): number {
  return orErrno(libc.kill(pid, sig));
}

/**
 * PTRACE_SECCOMP_GET_FILTER: the BPF program (8 bytes an instruction) of seccomp filter `index`
 * of thread `tid` (0 is the one installed first), or undefined past the newest one.
 */
export function ptraceSeccompFilter(tid: number, index: number): Uint8Array | undefined {
  const count = tryRequest(PTRACE.SECCOMP_GET_FILTER, tid, index, 0);
  if (count === -ENOENT) return undefined;
  if (count < 0) {
    throw new Errno("ptrace(PTRACE_SECCOMP_GET_FILTER)", -count, `task ${tid}`);
  }
  const prog = new Uint8Array(count * 8);
  request(PTRACE.SECCOMP_GET_FILTER, tid, index, addressOf(prog));
  return prog;
}

/** PTRACE_SECCOMP_GET_METADATA: the flags seccomp filter `index` of thread `tid` was made with. */
export function ptraceSeccompFlags(tid: number, index: number): number {
  const meta = new BigUint64Array([BigInt(index), 0n]); // filter_off, flags
  request(PTRACE.SECCOMP_GET_METADATA, tid, 16, addressOf(new Uint8Array(meta.buffer)));
  return Number(meta[1]);
}
