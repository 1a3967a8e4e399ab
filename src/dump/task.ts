/**
 * `collectTask`: everything about one frozen task (its leader thread) that its core, mm and fs
 * images need, read from /proc, from ptrace, and by syscalls run inside the task.
 *
 * @module
 */
import type { ThreadSeccomp } from "./seccomp.ts";
import {
  getRobustList,
  ITIMERVAL_SIZE,
  KSIGACTION_SIZE,
  NR,
  ptraceGetRseq,
  ptraceGetXstate,
  ptracePeekSiginfo,
  readRemote,
  remoteAdd,
  type RseqConfig,
  STACK_T,
  syscall,
} from "../syscalls/mod.ts";
import type { RemoteCall, RemoteSyscalls } from "../tree/infect.ts";
import {
  parseAuxv,
  parseLimits,
  parseStat,
  parseStatus,
  parseTimers,
  type ProcStat,
  type ProcStatus,
  type ProcTimer,
  readProcText,
} from "../tree/proc.ts";
import type { SeizedTask } from "../tree/seize.ts";
import { UnsupportedError } from "./file_types.ts";

const PR = {
  GET_PDEATHSIG: 2,
  GET_DUMPABLE: 3,
  GET_SECUREBITS: 27,
  GET_CHILD_SUBREAPER: 37,
  GET_TID_ADDRESS: 40,
  GET_THP_DISABLE: 42,
} as const;

/** Highest signal number. */
export const SIGMAX = 64;

/** One signal's disposition, as the kernel's `struct sigaction` holds it. */
export interface SigAction {
  handler: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
}

/** Everything collected about one task. */
export interface TaskState {
  pid: number;
  stat: ProcStat;
  /** sched_getscheduler(): the policy with SCHED_RESET_ON_FORK, which /proc does not show. */
  schedPolicy: number;
  status: ProcStatus;
  /** Registers at the freeze, before syscall-restart adjustment. */
  regs: BigUint64Array;
  xsave: Uint8Array;
  sigmask: bigint;
  /** Signal number → disposition, for every signal but SIGKILL and SIGSTOP. */
  sigactions: Map<number, SigAction>;
  altstack: { sp: bigint; flags: number; size: bigint };
  /** ITIMER_REAL, VIRTUAL, PROF as [interval sec, usec, value sec, usec]. */
  itimers: [bigint, bigint, bigint, bigint][];
  rlimits: [bigint, bigint][];
  personality: number;
  pendingShared: Uint8Array[];
  pendingThread: Uint8Array[];
  rseq: RseqConfig;
  robustList: { head: bigint; len: number };
  clearTidAddr: bigint;
  pdeathSig: number;
  childSubreaper: boolean;
  secureBits: number;
  dumpable: number;
  thpDisabled: boolean;
  brk: bigint;
  /** membarrier(2) registrations (MEMBARRIER_CMD_GET_REGISTRATIONS), 0 when none or unknown. */
  membarrier: number;
  auxv: bigint[];
  loginuid: number;
  oomScoreAdj: number;
  exe: string;
  cwd: string;
  root: string;
  wasStopped: boolean;
  /** The signal that had stopped it (group stop), or 0. */
  stopSigno: number;
  /** POSIX timers with their remaining time and interval (timer_gettime) and overruns. */
  posixTimers:
    (ProcTimer & { value: [bigint, bigint]; interval: [bigint, bigint]; overrun: number })[];
  /** Its seccomp mode and newest filter, as the images carry them (set by the dump). */
  seccomp?: ThreadSeccomp;
  /** Its cgroup set in cgroup.img, when it is not criu's (set by the dump). */
  cgSet?: number;
}

const SCHED_DEADLINE = 6;

/** The scheduling policy of thread `tid`, SCHED_RESET_ON_FORK included; SCHED_DEADLINE refused. */
function schedPolicy(tid: number): number {
  const policy = Number(syscall(NR.sched_getscheduler, "sched_getscheduler", `task ${tid}`, tid));
  if ((policy & 0xff) === SCHED_DEADLINE) {
    throw new UnsupportedError(
      `Cannot dump task ${tid}: it runs under SCHED_DEADLINE, whose runtime, deadline and ` +
        `period are not carried`,
    );
  }
  return policy;
}

/** Collects the state of a seized task; `rs` runs the syscalls that must run inside it. */
export function collectTask(task: SeizedTask, rs: RemoteSyscalls): TaskState {
  const pid = task.pid;
  const scratch = rs.scratch(4096);
  const at = (off: number) => remoteAdd(scratch, off);

  // Asked inside the task, all in one batch, answers into the scratch page: each signal's
  // disposition (rt_sigaction(sig, NULL, &old)), the alternate stack, the interval timers,
  // prctl settings, the break, the membarrier registrations (6.3+), each POSIX timer's time.
  const SA_BASE = 0, ALT = 2048, TIMERS = 2080, TID = 2176, PDEATH = 2184, SUBREAPER = 2188;
  const POSIX = 2400;
  const timers = parseTimers(readProcText(pid, "timers"));
  if (POSIX + timers.length * 32 > 4096) throw new Error(`Task ${pid} has too many POSIX timers`);
  const calls: RemoteCall[] = [];
  const ask = (nr: number, name: string | undefined, ...args: (bigint | number)[]) =>
    calls.push({ nr, name, args }) - 1;
  for (let sig = 1; sig <= SIGMAX; sig++) {
    if (sig === 9 || sig === 19) continue;
    ask(NR.rt_sigaction, "rt_sigaction", sig, 0, at(SA_BASE + (sig - 1) * KSIGACTION_SIZE), 8);
  }
  ask(NR.sigaltstack, "sigaltstack", 0, at(ALT));
  for (let which = 0; which < 3; which++) {
    ask(NR.getitimer, "getitimer", which, at(TIMERS + which * ITIMERVAL_SIZE));
  }
  ask(NR.prctl, "prctl(PR_GET_TID_ADDRESS)", PR.GET_TID_ADDRESS, at(TID));
  ask(NR.prctl, "prctl(PR_GET_PDEATHSIG)", PR.GET_PDEATHSIG, at(PDEATH));
  ask(NR.prctl, "prctl(PR_GET_CHILD_SUBREAPER)", PR.GET_CHILD_SUBREAPER, at(SUBREAPER));
  const SECUREBITS = ask(NR.prctl, "prctl(PR_GET_SECUREBITS)", PR.GET_SECUREBITS);
  const DUMPABLE = ask(NR.prctl, "prctl(PR_GET_DUMPABLE)", PR.GET_DUMPABLE);
  const THP = ask(NR.prctl, "prctl(PR_GET_THP_DISABLE)", PR.GET_THP_DISABLE);
  const BRK = ask(NR.brk, "brk", 0);
  const MEMBARRIER = ask(NR.membarrier, undefined, 1 << 9, 0, 0);
  timers.forEach((t, i) => ask(NR.timer_gettime, "timer_gettime", t.id, at(POSIX + i * 32)));
  const OVERRUNS = calls.length;
  for (const t of timers) ask(NR.timer_getoverrun, undefined, t.id);
  const ret = rs.batch(calls);
  const secureBits = Number(ret[SECUREBITS]);
  const dumpable = Number(ret[DUMPABLE]);
  const thp = Number(ret[THP]);
  const brk = ret[BRK];
  const membarrier = Number(ret[MEMBARRIER]);
  const overruns = timers.map((_, i) => Math.max(0, Number(ret[OVERRUNS + i])));

  const page = new Uint8Array(4096);
  readRemote(pid, scratch, page);
  const v = new DataView(page.buffer);
  const posixTimers = timers.map((t, i) => {
    const o = POSIX + i * 32;
    return {
      ...t,
      interval: [v.getBigUint64(o, true), v.getBigUint64(o + 8, true)] as [bigint, bigint],
      value: [v.getBigUint64(o + 16, true), v.getBigUint64(o + 24, true)] as [bigint, bigint],
      overrun: overruns[i],
    };
  });
  const sigactions = new Map<number, SigAction>();
  for (let sig = 1; sig <= SIGMAX; sig++) {
    if (sig === 9 || sig === 19) continue;
    const o = SA_BASE + (sig - 1) * KSIGACTION_SIZE;
    sigactions.set(sig, {
      handler: v.getBigUint64(o, true),
      flags: v.getBigUint64(o + 8, true),
      restorer: v.getBigUint64(o + 16, true),
      mask: v.getBigUint64(o + 24, true),
    });
  }
  const itimers: [bigint, bigint, bigint, bigint][] = [];
  for (let which = 0; which < 3; which++) {
    const o = TIMERS + which * ITIMERVAL_SIZE;
    itimers.push([
      v.getBigUint64(o, true),
      v.getBigUint64(o + 8, true),
      v.getBigUint64(o + 16, true),
      v.getBigUint64(o + 24, true),
    ]);
  }

  const readLink = (name: string) => Deno.readLinkSync(`/proc/${pid}/${name}`);
  return {
    pid,
    stat: parseStat(readProcText(pid, "stat")),
    schedPolicy: schedPolicy(pid),
    status: parseStatus(readProcText(pid, "status")),
    regs: task.regs,
    xsave: ptraceGetXstate(pid),
    sigmask: task.sigmask,
    sigactions,
    altstack: {
      sp: v.getBigUint64(ALT + STACK_T.sp, true),
      flags: v.getInt32(ALT + STACK_T.flags, true),
      size: v.getBigUint64(ALT + STACK_T.ssize, true),
    },
    itimers,
    rlimits: parseLimits(readProcText(pid, "limits")),
    personality: parseInt(readProcText(pid, "personality").trim(), 16),
    pendingShared: ptracePeekSiginfo(pid, true),
    pendingThread: ptracePeekSiginfo(pid, false),
    rseq: ptraceGetRseq(pid),
    robustList: getRobustList(pid),
    clearTidAddr: v.getBigUint64(TID, true),
    pdeathSig: v.getInt32(PDEATH, true),
    childSubreaper: v.getInt32(SUBREAPER, true) !== 0,
    secureBits,
    dumpable,
    thpDisabled: thp !== 0,
    brk,
    membarrier: Math.max(0, membarrier),
    auxv: parseAuxv(Deno.readFileSync(`/proc/${pid}/auxv`)),
    loginuid: Number(readProcText(pid, "loginuid").trim()),
    oomScoreAdj: Number(readProcText(pid, "oom_score_adj").trim()),
    exe: readLink("exe"),
    cwd: readLink("cwd"),
    root: readLink("root"),
    wasStopped: task.wasStopped,
    stopSigno: task.stopSigno,
    posixTimers,
  };
}

/** What a thread other than the leader has of its own. */
export interface ThreadState {
  tid: number;
  stat: ProcStat;
  /** sched_getscheduler(): the policy with SCHED_RESET_ON_FORK, which /proc does not show. */
  schedPolicy: number;
  /** Its own /proc status: credentials and capabilities are per thread. */
  status: ProcStatus;
  secureBits: number;
  pdeathSig: number;
  /** Registers at the freeze, before syscall-restart adjustment. */
  regs: BigUint64Array;
  xsave: Uint8Array;
  sigmask: bigint;
  altstack: { sp: bigint; flags: number; size: bigint };
  pendingThread: Uint8Array[];
  rseq: RseqConfig;
  robustList: { head: bigint; len: number };
  clearTidAddr: bigint;
  /** Its seccomp mode and newest filter, as the images carry them (set by the dump). */
  seccomp?: ThreadSeccomp;
  /** Its cgroup set in cgroup.img, when it is not criu's (set by the dump). */
  cgSet?: number;
}

/** Collects the per-thread state of a seized non-leader thread of process `pid`. */
export function collectThread(pid: number, task: SeizedTask, rs: RemoteSyscalls): ThreadState {
  const tid = task.pid;
  // Asked in one batch (the thread's arena holds the answers and the batch blob).
  const scratch = rs.scratch(128);
  const answers = rs.batch([
    { nr: NR.sigaltstack, args: [0, scratch], name: "sigaltstack" },
    {
      nr: NR.prctl,
      args: [PR.GET_TID_ADDRESS, remoteAdd(scratch, 64)],
      name: "prctl(PR_GET_TID_ADDRESS)",
    },
    {
      nr: NR.prctl,
      args: [PR.GET_PDEATHSIG, remoteAdd(scratch, 72)],
      name: "prctl(PR_GET_PDEATHSIG)",
    },
    { nr: NR.prctl, args: [PR.GET_SECUREBITS], name: "prctl(PR_GET_SECUREBITS)" },
  ]);
  const secureBits = Number(answers[3]);
  const page = new Uint8Array(128);
  readRemote(tid, scratch, page);
  const v = new DataView(page.buffer);
  return {
    tid,
    stat: parseStat(readProcText(pid, `task/${tid}/stat`)),
    schedPolicy: schedPolicy(tid),
    status: parseStatus(readProcText(pid, `task/${tid}/status`)),
    secureBits,
    pdeathSig: v.getInt32(72, true),
    regs: task.regs,
    xsave: ptraceGetXstate(tid),
    sigmask: task.sigmask,
    altstack: {
      sp: v.getBigUint64(STACK_T.sp, true),
      flags: v.getInt32(STACK_T.flags, true),
      size: v.getBigUint64(STACK_T.ssize, true),
    },
    pendingThread: ptracePeekSiginfo(tid, false),
    rseq: ptraceGetRseq(tid),
    robustList: getRobustList(tid),
    clearTidAddr: v.getBigUint64(64, true),
  };
}
