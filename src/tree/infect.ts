/**
 * System calls executed inside a seized task, without writing a byte of its memory.
 *
 * Call sequence (who owns what):
 * ```
 * using rs = RemoteSyscalls.open(task, maps)   find a `syscall` instruction (0f 05) in one of the
 *                                              task's executable mappings; block every signal
 * rs.call(NR.x, ...)                           regs := {ip: that instruction, ax: nr, args,
 *                                              orig_ax: -1}; PTRACE_SYSCALL to the entry stop,
 *                                              PTRACE_SYSCALL to the exit stop; read ax
 * rs.scratch(size)                             an anonymous mapping made with an injected mmap;
 *                                              unmapped on dispose
 * dispose                                      munmap scratch; the task's own registers and mask
 *                                              back; PTRACE_INTERRUPT + PTRACE_CONT so that it
 *                                              returns to the interrupt stop it was seized in
 * ```
 * Returning through the interrupt stop matters for a task frozen inside a syscall: the kernel
 * restarts that syscall (or hands a pending signal to its handler) on the way out of that stop,
 * exactly as if we had never been there. The task's memory is never written, so no page of its
 * code is copied on write and a failed dump leaves nothing behind.
 *
 * Precondition: the task is seized and sits in its interrupt stop; calls come from the tracer
 * thread.
 *
 * @module
 */
import {
  NR,
  PTRACE_EVENT_STOP,
  ptraceCont,
  ptraceGetEventMsg,
  ptraceGetRegs,
  ptraceInterrupt,
  ptraceSetRegs,
  ptraceSetSigmask,
  ptraceSyscall,
  readRemote,
  REG,
  type RemotePtr,
  remotePtr,
  waitPid,
  WALL,
  WNOHANG,
} from "../syscalls/mod.ts";
import type { ProcMap } from "./proc.ts";
import { NoSuchTaskError } from "./proc.ts";
import type { SeizedTask } from "./seize.ts";
import { waitForInterruptStop } from "./seize.ts";

const SIGTRAP = 5;
/** PTRACE_EVENT_FORK, _VFORK, _CLONE. */
const FORK_EVENTS = new Set([1, 2, 3]);
/** Every signal but SIGKILL (9) and SIGSTOP (19), which cannot be blocked anyway. */
const BLOCK_ALL = ~((1n << 8n) | (1n << 18n)) & 0xffffffffffffffffn;
const PROT = { READ: 1, WRITE: 2, EXEC: 4 } as const;
const MAP = { PRIVATE: 2, ANONYMOUS: 0x20, FIXED_NOREPLACE: 0x100000 } as const;

/** An injected syscall could not be run. */
export class InfectError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InfectError";
  }
}

/** Finds the address of a `syscall` instruction (0f 05) in the task's executable mappings. */
export function findSyscallInsn(pid: number, maps: ProcMap[]): RemotePtr {
  // The vdso is small and always there; then libc and the rest of the code.
  const exec = maps.filter((m) => m.perms[2] === "x" && m.path !== "[vsyscall]");
  exec.sort((a, b) => Number(b.path === "[vdso]") - Number(a.path === "[vdso]"));
  const buf = new Uint8Array(64 << 10);
  for (const m of exec) {
    for (let addr = m.start; addr < m.end; addr += BigInt(buf.length)) {
      const len = Number(m.end - addr < BigInt(buf.length) ? m.end - addr : BigInt(buf.length));
      let n: number;
      try {
        n = readRemote(pid, remotePtr(addr), buf, 0, len);
      } catch {
        break; // unreadable mapping: try the next one
      }
      for (let i = 0; i + 1 < n; i++) {
        if (buf[i] === 0x0f && buf[i + 1] === 0x05) return remotePtr(addr + BigInt(i));
      }
    }
  }
  throw new InfectError(`Cannot find a syscall instruction in task ${pid}`);
}

/** Runs syscalls inside a seized task; see the module comment for the sequence. */
export class RemoteSyscalls implements Disposable {
  readonly task: SeizedTask;
  #insn: RemotePtr;
  #scratch: { addr: RemotePtr; size: number }[] = [];
  #open = true;

  private constructor(task: SeizedTask, insn: RemotePtr) {
    this.task = task;
    this.#insn = insn;
  }

  /** Prepares remote syscalls in `task`, whose mappings are `maps`. */
  static open(task: SeizedTask, maps: ProcMap[]): RemoteSyscalls {
    const insn = findSyscallInsn(task.pid, maps);
    ptraceSetSigmask(task.pid, BLOCK_ALL);
    return new RemoteSyscalls(task, insn);
  }

  /** Runs syscall `nr` with up to six arguments; returns the raw result (`-errno` on failure). */
  call(nr: number, ...args: (bigint | number)[]): bigint {
    if (!this.#open) throw new InfectError("Remote syscalls are closed");
    const pid = this.task.pid;
    const regs = new BigUint64Array(this.task.regs);
    const argRegs = [REG.di, REG.si, REG.dx, REG.r10, REG.r8, REG.r9];
    argRegs.forEach((r, i) => (regs[r] = BigInt.asUintN(64, BigInt(args[i] ?? 0))));
    regs[REG.ax] = BigInt(nr);
    regs[REG.orig_ax] = 0xffffffffffffffffn;
    regs[REG.ip] = this.#insn;
    ptraceSetRegs(pid, regs);
    this.#step(nr); // to the syscall-entry stop
    this.#step(nr); // to the syscall-exit stop
    return BigInt.asIntN(64, ptraceGetRegs(pid)[REG.ax]);
  }

  /** Like {@link call}, throwing when the result is an error. */
  check(nr: number, name: string, ...args: (bigint | number)[]): bigint {
    const ret = this.call(nr, ...args);
    if (ret < 0n && ret > -4096n) {
      throw new InfectError(`Remote ${name} in task ${this.task.pid} failed with errno ${-ret}`);
    }
    return ret;
  }

  /**
   * Maps `size` bytes of private anonymous memory in the task (read-write, or with `exec` also
   * executable, for a blob), unmapped on dispose.
   */
  scratch(size: number, exec = false, at?: RemotePtr): RemotePtr {
    const addr = this.check(
      NR.mmap,
      "mmap",
      at ?? 0,
      size,
      PROT.READ | PROT.WRITE | (exec ? PROT.EXEC : 0),
      MAP.PRIVATE | MAP.ANONYMOUS | (at === undefined ? 0 : MAP.FIXED_NOREPLACE),
      -1,
      0,
    );
    if (at !== undefined && addr !== at) {
      throw new InfectError(
        `Cannot map scratch memory at 0x${at.toString(16)} in task ${this.task.pid}`,
      );
    }
    const p = remotePtr(addr);
    this.#scratch.push({ addr: p, size });
    return p;
  }

  /**
   * Lets the task run blob code at `entry` with `arg` in rdi and its stack at `stackTop` (16-byte
   * aligned), signals still blocked. The blob must end by sleeping; {@link interrupt} stops it.
   */
  run(entry: RemotePtr, arg: RemotePtr, stackTop: RemotePtr): void {
    const regs = new BigUint64Array(this.task.regs);
    regs[REG.ip] = entry;
    regs[REG.di] = arg;
    regs[REG.sp] = stackTop - 8n; // as if called: (sp + 8) % 16 == 0
    regs[REG.orig_ax] = 0xffffffffffffffffn;
    ptraceSetRegs(this.task.pid, regs);
    ptraceCont(this.task.pid);
  }

  /**
   * Whether the running blob has stopped on its own, which only a fault does (every signal is
   * blocked, so only a synchronous one can stop it). Such a signal is never delivered: the task
   * is brought back to an interrupt stop and an error is thrown.
   */
  checkRunning(): void {
    const st = waitPid(this.task.pid, WALL | WNOHANG);
    if (st.pid === 0) return;
    if (st.exited || st.signaled) throw new NoSuchTaskError(this.task.pid);
    this.#suppressToInterruptStop(st.stopSig);
    throw new InfectError(`Blob code in task ${this.task.pid} stopped with signal ${st.stopSig}`);
  }

  /** Stops the blob started by {@link run} (PTRACE_INTERRUPT) and waits for the stop. */
  interrupt(): void {
    const pid = this.task.pid;
    ptraceInterrupt(pid);
    const st = waitPid(pid);
    if (st.exited || st.signaled) throw new NoSuchTaskError(pid);
    if (st.event === PTRACE_EVENT_STOP) return;
    this.#suppressToInterruptStop(st.stopSig);
    throw new InfectError(`Blob code in task ${pid} stopped with signal ${st.stopSig}`);
  }

  /** From a signal-delivery stop, to the interrupt stop, discarding the signal. */
  #suppressToInterruptStop(sig: number): void {
    const pid = this.task.pid;
    ptraceInterrupt(pid);
    ptraceCont(pid, 0);
    for (let i = 0; i < 8; i++) {
      const st = waitPid(pid);
      if (st.exited || st.signaled) throw new NoSuchTaskError(pid);
      if (st.event === PTRACE_EVENT_STOP) return;
      ptraceCont(pid, 0);
    }
    throw new InfectError(`Cannot stop task ${pid} after signal ${sig}`);
  }

  #step(nr: number): void {
    const pid = this.task.pid;
    ptraceSyscall(pid);
    for (;;) {
      const st = waitPid(pid);
      if (st.exited || st.signaled) throw new NoSuchTaskError(pid);
      if (st.stopped && st.stopSig === (SIGTRAP | 0x80)) return;
      // An injected clone3 reports the new task (traced with TRACEFORK/TRACECLONE) first.
      if (st.stopped && st.stopSig === SIGTRAP && FORK_EVENTS.has(st.event)) {
        this.#newChild = Number(ptraceGetEventMsg(pid));
        ptraceSyscall(pid);
        continue;
      }
      throw new InfectError(
        `Remote syscall ${nr} in task ${pid} stopped unexpectedly (status 0x${
          st.raw.toString(16)
        })`,
      );
    }
  }

  #newChild = 0;

  /**
   * Runs clone3 in the task (seized with TRACEFORK/TRACECLONE) and returns the new task's id.
   * The new task is traced from birth and waits in its first stop (see SeizedTask.adopt).
   */
  clone(args: RemotePtr, size: number): number {
    this.#newChild = 0;
    const ret = this.call(NR.clone3, args, size);
    if (ret < 0n) {
      throw new InfectError(`clone3 in task ${this.task.pid} failed with errno ${-ret}`);
    }
    if (!this.#newChild || this.#newChild !== Number(ret)) {
      throw new InfectError(`clone3 in task ${this.task.pid} made ${ret} without a fork event`);
    }
    return this.#newChild;
  }

  /** Finds a new `syscall` instruction after the task's mappings changed under us. */
  retarget(maps: ProcMap[]): void {
    this.#insn = findSyscallInsn(this.task.pid, maps);
  }

  /**
   * Waits until the blob started by {@link run} stores a non-zero word at `flag`, watching for
   * a fault; gives up after `timeoutMs`.
   */
  waitFlag(flag: RemotePtr, timeoutMs: number): void {
    const word = new BigInt64Array(1);
    const bytes = new Uint8Array(word.buffer);
    const end = performance.now() + timeoutMs;
    const nap = new Int32Array(new SharedArrayBuffer(4));
    for (let spins = 0;; spins++) {
      readRemote(this.task.pid, flag, bytes);
      if (word[0] !== 0n) return;
      this.checkRunning();
      if (performance.now() > end) {
        throw new InfectError(
          `Blob code in task ${this.task.pid} did not finish in ${timeoutMs} ms`,
        );
      }
      if (spins > 100) Atomics.wait(nap, 0, 0, 1);
    }
  }

  /**
   * Unmaps scratch memory and returns the task to its interrupt stop. By default the task also
   * gets back the registers and signal mask it had when seized; with `restoreState: false` (a
   * task being restored, whose final state the caller sets) they are left as they are.
   */
  close(options: { restoreState?: boolean } = {}): void {
    const restoreState = options.restoreState ?? true;
    if (!this.#open) return;
    const errors: unknown[] = [];
    for (const s of this.#scratch.reverse()) {
      try {
        this.check(NR.munmap, "munmap", s.addr, s.size);
      } catch (e) {
        errors.push(e);
      }
    }
    this.#open = false;
    const pid = this.task.pid;
    if (restoreState) {
      ptraceSetRegs(pid, this.task.regs);
      ptraceSetSigmask(pid, this.task.sigmask);
    }
    ptraceInterrupt(pid);
    ptraceCont(pid);
    waitForInterruptStop(pid);
    if (errors.length) throw new InfectError(`Cannot clean up task ${pid}`, { cause: errors[0] });
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
