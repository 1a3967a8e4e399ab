/**
 * Freezing and thawing a task with PTRACE_SEIZE + PTRACE_INTERRUPT.
 *
 * A {@link SeizedTask} owns the tracer relationship. Its default end is a thaw: when disposed
 * without {@link SeizedTask.kill}, the task gets back the registers and signal mask it had at
 * seize time and is detached, so that a failed dump leaves it running as before.
 *
 * Precondition: the task is not a child of this process. Deno reaps its own children from a
 * background thread, which would steal the ptrace stops that waitpid must see here.
 *
 * @module
 */
import {
  Errno,
  errno,
  kill,
  nap,
  PTRACE_EVENT_STOP,
  PTRACE_O,
  ptraceCont,
  ptraceGetRegs,
  ptraceGetSigmask,
  ptraceGetSigno,
  ptraceInterrupt,
  ptraceSeize,
  ptraceSetOptions,
  ptraceSetRegs,
  ptraceSetSigmask,
  ptraceSetXstate,
  tryKill,
  tryPtraceDetach,
  tryWaitPid,
  waitPid,
  type WaitStatus,
} from "../syscalls/mod.ts";
import { NoSuchTaskError, parseStatus, readProcText } from "./proc.ts";

const SIGKILL = 9;
const SIGSTOP = 19;

/**
 * Signal-delivery stops we let through before giving up on reaching the interrupt stop.
 * Each one is a signal that was already pending; delivering it (handler frame set up, no user
 * code run) before the stop keeps the dump consistent. A task flooded with signals cannot be
 * frozen, so the number is bounded.
 */
const MAX_SIGNAL_STOPS = 64;

/** How long a task may take to stop, as criu's default `--timeout` (10 s). */
export const DEFAULT_FREEZE_TIMEOUT_MS = 10_000;

/**
 * The next wait status of traced task `pid`, polling until `deadline` (performance.now()
 * time): a task that does not stop by then (an uninterruptible wait: vfork(), a hung file
 * system) fails the freeze by name instead of hanging it.
 */
function waitUntil(pid: number, deadline: number): WaitStatus {
  for (let pause = 0.02;; pause = Math.min(pause * 2, 5)) {
    const st = tryWaitPid(pid);
    if (st) return st;
    if (performance.now() >= deadline) {
      let why = "";
      try {
        const state = parseStatus(readProcText(pid, "status")).state;
        const wchan = readProcText(pid, "wchan").trim();
        why = ` (state ${state}${wchan && wchan !== "0" ? `, waiting in ${wchan}` : ""}${
          wchan === "kernel_clone" ? ": a vfork() waiting for its child to exec or exit" : ""
        })`;
      } catch {
        // gone meanwhile: the next wait tells
        continue;
      }
      throw new SeizeError(`Cannot freeze task ${pid}: it did not stop in time${why}`);
    }
    nap(pause);
  }
}

/** A task cannot be frozen (it is gone, traced by someone else, or refuses to stop). */
export class SeizeError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SeizeError";
  }
}

/** The task state recorded in core images (CRIU's TASK_* values). */
export const TASK_STATE = { ALIVE: 1, DEAD: 2, STOPPED: 3, ZOMBIE: 6 } as const;

/** A task seized and asked to stop, not yet waited for (SeizedTask.begin). */
export interface PendingSeize {
  readonly pid: number;
  /** Waits (`timeoutMs` at most) until it sits in its stop; detaches it on failure. */
  finish(timeoutMs?: number): SeizedTask;
  /** Lets it go without waiting. */
  abandon(): void;
}

/** A frozen task under our ptrace. */
export class SeizedTask implements Disposable {
  /** Thread id. */
  readonly pid: number;
  /** Registers when it stopped (owned: never mutated). */
  readonly regs: BigUint64Array;
  /** Blocked-signal mask when it stopped. */
  readonly sigmask: bigint;
  /** The signal that had stopped the task (group stop) before we seized it, or 0. */
  readonly stopSigno: number;
  /** The PTRACE_O options it was seized with (undefined: inherited from its maker). */
  readonly #options: number | undefined;
  #attached = true;

  private constructor(
    pid: number,
    regs: BigUint64Array,
    sigmask: bigint,
    stopSigno: number,
    options: number | undefined,
  ) {
    this.pid = pid;
    this.regs = regs;
    this.sigmask = sigmask;
    this.stopSigno = stopSigno;
    this.#options = options;
  }

  /** Whether the task was stopped (SIGSTOP, SIGTSTP, ...) before we seized it. */
  get wasStopped(): boolean {
    return this.stopSigno !== 0;
  }

  /**
   * Seizes and interrupts task `pid`, waiting until it sits in the interrupt stop. `options`
   * are added to PTRACE_O_TRACESYSGOOD (a restorer adds TRACEFORK/TRACECLONE); a task that
   * does not stop within `timeoutMs` fails the seize.
   */
  static seize(pid: number, options = 0, timeoutMs = DEFAULT_FREEZE_TIMEOUT_MS): SeizedTask {
    return SeizedTask.begin(pid, options).finish(timeoutMs);
  }

  /**
   * Seizes task `pid` and asks it to stop, without waiting: {@link PendingSeize.finish} waits.
   * A task in a frozen cgroup reaches its stop only once the cgroup thaws.
   */
  static begin(pid: number, options = 0): PendingSeize {
    const status = parseStatus(readProcText(pid, "status"));
    if (status.tracerPid !== 0) {
      throw new SeizeError(
        `Cannot seize task ${pid}: it is already traced by task ${status.tracerPid}`,
      );
    }
    if (status.state === "Z") throw new SeizeError(`Cannot seize task ${pid}: it is a zombie`);
    // A task under seccomp (strict or filters) would be killed or refused the syscalls we
    // make in it: they go unfiltered while it is traced so.
    const suspend = status.seccomp ? PTRACE_O.SUSPEND_SECCOMP : 0;
    const all = PTRACE_O.TRACESYSGOOD | options | suspend;
    try {
      ptraceSeize(pid, all);
    } catch (e) {
      if (e instanceof Errno && e.errno === errno.ESRCH) {
        throw new NoSuchTaskError(pid, { cause: e });
      }
      throw new SeizeError(`Cannot seize task ${pid}: ${(e as Error).message}`, { cause: e });
    }
    try {
      ptraceInterrupt(pid);
    } catch (e) {
      tryPtraceDetach(pid);
      throw new SeizeError(`Cannot freeze task ${pid}: ${(e as Error).message}`, { cause: e });
    }
    return {
      pid,
      finish: (timeoutMs = DEFAULT_FREEZE_TIMEOUT_MS) => {
        try {
          waitForInterruptStop(pid, timeoutMs);
          const stopSigno = leaveGroupStop(pid, status);
          return new SeizedTask(pid, ptraceGetRegs(pid), ptraceGetSigmask(pid), stopSigno, all);
        } catch (e) {
          tryPtraceDetach(pid);
          if (e instanceof SeizeError) throw e;
          throw new SeizeError(`Cannot freeze task ${pid}: ${(e as Error).message}`, {
            cause: e,
          });
        }
      },
      abandon: () => void tryPtraceDetach(pid),
    };
  }

  /**
   * Takes a task that was traced from birth (made by a traced task with TRACEFORK/TRACECLONE)
   * once it reaches its first stop.
   */
  static adopt(pid: number): SeizedTask {
    waitForInterruptStop(pid);
    return new SeizedTask(pid, ptraceGetRegs(pid), ptraceGetSigmask(pid), 0, undefined);
  }

  /** Whether we are still its tracer. */
  get attached(): boolean {
    return this.#attached;
  }

  /**
   * From now on the task dies with its tracer (PTRACE_O_EXITKILL): should criu die, the kernel
   * kills it instead of letting it go. For a task whose images are complete.
   */
  dieWithTracer(): void {
    if (!this.#attached) return;
    if (this.#options === undefined) {
      throw new SeizeError(`Task ${this.pid} has inherited tracing options`);
    }
    try {
      ptraceSetOptions(this.pid, this.#options | PTRACE_O.EXITKILL);
    } catch (e) {
      // Killed from outside meanwhile: it dies anyway.
      if (!(e instanceof Errno && e.errno === errno.ESRCH)) throw e;
    }
  }

  /**
   * Puts back the registers and signal mask of seize time and detaches: the task continues as
   * if never stopped. Returns false when the task is gone.
   */
  resume(options: { stopped?: boolean } = {}): boolean {
    if (!this.#attached) return true;
    this.#attached = false;
    try {
      ptraceSetRegs(this.pid, this.regs);
      ptraceSetSigmask(this.pid, this.sigmask);
      // Queued now, delivered once detached: the task ends up in a group stop, by the
      // signal that had stopped it.
      if (options.stopped || this.stopSigno) kill(this.pid, this.stopSigno || SIGSTOP);
    } catch {
      // Gone already: nothing left to put back.
    }
    return tryPtraceDetach(this.pid) === 0;
  }

  /**
   * Gives a restored task its final registers, extended FPU state and signal mask, and lets it
   * go (into a group stop by `stopSigno` when given). The task must sit in its interrupt stop.
   */
  release(regs: BigUint64Array, xsave: Uint8Array, sigmask: bigint, stopSigno = 0): void {
    if (!this.#attached) throw new SeizeError(`Task ${this.pid} is not ours any more`);
    ptraceSetXstate(this.pid, xsave);
    ptraceSetRegs(this.pid, regs);
    ptraceSetSigmask(this.pid, sigmask);
    if (stopSigno) kill(this.pid, stopSigno);
    this.#attached = false;
    if (tryPtraceDetach(this.pid) !== 0) {
      throw new SeizeError(`Cannot detach from restored task ${this.pid}`);
    }
  }

  /**
   * Takes back a SIGSTOP queued for the task's process (tree/stop_hold.ts) without delivering
   * it. Resumed, the task dequeues its signals before any user code runs, each into a
   * signal-delivery stop: the SIGSTOP is discarded there, and a signal someone else sent
   * meanwhile is queued again once the SIGSTOP is gone. The task ends in its interrupt stop.
   * Nothing happens when no SIGSTOP waits.
   */
  discardStop(): void {
    const pid = this.pid;
    const s = parseStatus(readProcText(pid, "status"));
    if (!this.#attached || !pending(s.shdPnd | s.sigPnd, SIGSTOP)) return;
    const others: number[] = [];
    for (let i = 0; i < MAX_SIGNAL_STOPS; i++) {
      ptraceCont(pid, 0);
      const st = waitPid(pid);
      if (st.exited || st.signaled) throw new NoSuchTaskError(pid);
      // Discarded: back to the interrupt stop, still before any user code.
      ptraceInterrupt(pid);
      ptraceCont(pid, 0);
      waitForInterruptStop(pid);
      if (st.event !== 0) continue;
      if (st.stopSig === SIGSTOP) {
        for (const sig of others) kill(pid, sig);
        return;
      }
      others.push(st.stopSig);
    }
    throw new SeizeError(`Cannot take back the SIGSTOP of task ${pid}`);
  }

  /** Kills the task (after a complete dump) and reaps the ptrace side of it. */
  kill(): void {
    this.sendKill();
    this.reap();
  }

  /** Forgets a task that has exited under us (its exit was already collected). */
  forget(): void {
    this.#attached = false;
  }

  /** Sends SIGKILL; {@link reap} collects the exit. */
  sendKill(): void {
    if (this.#attached) tryKill(this.pid, SIGKILL);
  }

  /**
   * Waits for the killed task's exit notification (we are its tracer). For a thread group,
   * reap the other threads before the leader: the kernel reports the leader last.
   */
  reap(): void {
    if (!this.#attached) return;
    this.#attached = false;
    for (;;) {
      let st: WaitStatus;
      try {
        st = waitPid(this.pid);
      } catch {
        return; // ECHILD: not ours to reap any more.
      }
      if (st.exited || st.signaled) return;
      // A stop reported before the kill took effect: let it go on to die.
      tryPtraceDetach(this.pid);
    }
  }

  [Symbol.dispose](): void {
    this.resume();
  }
}

const STOP_SIGNALS = new Set([19, 20, 21, 22]); // SIGSTOP SIGTSTP SIGTTIN SIGTTOU

/** Whether signal `sig` is in signal set `set` (a /proc/PID/status mask). */
function pending(set: bigint, sig: number): boolean {
  return (set & (1n << BigInt(sig - 1))) !== 0n;
}

/**
 * A task seized in a group stop (SIGSTOP, SIGTSTP, ...) reports that stop instead of the
 * interrupt, and would stop again on its way to any syscall we inject. As criu does: let it
 * run once through every stop it has (the one it is in, and each stop signal still pending),
 * each time re-trapping on the pending interrupt. Returns the signal that had stopped it, or 0.
 */
function leaveGroupStop(pid: number, status: ReturnType<typeof parseStatus>): number {
  const signo = ptraceGetSigno(pid);
  if (!STOP_SIGNALS.has(signo)) return 0;
  let stops = 1;
  for (const set of [status.sigPnd, status.shdPnd]) {
    if (pending(set, 19)) stops++;
    if (pending(set, 20) && !pending(status.sigBlk, 20)) stops++;
  }
  for (let i = 0; i < stops; i++) {
    ptraceCont(pid);
    waitForInterruptStop(pid);
  }
  return signo;
}

/** Waits for PTRACE_EVENT_STOP, letting already-pending signals be delivered on the way. */
export function waitForInterruptStop(pid: number, timeoutMs = DEFAULT_FREEZE_TIMEOUT_MS): void {
  const deadline = performance.now() + timeoutMs;
  for (let i = 0; i < MAX_SIGNAL_STOPS; i++) {
    const st = waitUntil(pid, deadline);
    if (st.exited || st.signaled) throw new NoSuchTaskError(pid);
    if (!st.stopped) continue;
    if (st.event === PTRACE_EVENT_STOP) return;
    // A signal-delivery stop: deliver the signal; the pending interrupt stops the task again
    // before it runs any user code.
    ptraceCont(pid, st.stopSig);
  }
  throw new SeizeError(`Cannot freeze task ${pid}: it keeps receiving signals`);
}
