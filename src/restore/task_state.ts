/**
 * Kernel state of a restored process, set by syscalls run inside it once its memory is back.
 *
 * - `restoreTaskState`, once per process (in its leader): mm fields and exe link, signal
 *   dispositions, interval timers, resource limits, personality, umask, cwd and root,
 *   parent-death signal, child-subreaper flag, process-wide pending signals.
 * - `restoreThreadState`, in every thread: alternate stack, robust futex list,
 *   clear_child_tid, rseq, the thread's pending signals, its name.
 * - `restoreCreds`, in every thread, last of all: raw setresuid() changes only the calling
 *   thread, and everything before it (clone3 with set_tid above all) needs root. The leader's
 *   comes last, with the dumpable flag a change of credentials resets.
 *
 * Sessions and process groups are set by the orchestrator (restore.ts): they depend on the
 * order in which tasks are made.
 *
 * @module
 */
import { selfId } from "./nested_pidns.ts";
import type { Logger } from "../log.ts";
import { errnoName, NR, remoteAdd, type RemotePtr, SIGINFO_SIZE } from "../syscalls/mod.ts";
import type { RemoteCall, RemoteSyscalls } from "../tree/infect.ts";
import type { RemoteArena } from "./arena.ts";
import { isFieldSet } from "../images/protobuf.ts";
import {
  type core_entry,
  seccomp_mode,
  task_core_entrySchema,
  thread_core_entrySchema,
} from "../../proto/gen/core_pb.ts";
import { type seccomp_filter, seccomp_filterSchema } from "../../proto/gen/misc_pb.ts";
import { mm_entrySchema } from "../../proto/gen/mm_pb.ts";
import type { DumpImages, TaskImages } from "./images.ts";
import type { ServiceFds } from "./install.ts";
import { RestoreError } from "./files.ts";
import { parseStatus, readProcText } from "../tree/proc.ts";

const PR = {
  SET_PDEATHSIG: 1,
  SET_DUMPABLE: 4,
  SET_NAME: 15,
  CAPBSET_DROP: 24,
  SET_SECUREBITS: 28,
  SET_MM: 35,
  SET_MM_MAP: 14,
  SET_CHILD_SUBREAPER: 36,
  SET_NO_NEW_PRIVS: 38,
  SET_THP_DISABLE: 41,
  CAP_AMBIENT: 47,
} as const;
const SS_DISABLE = 2;

type Sys = (nr: number, what: string, ...args: (bigint | number | RemotePtr)[]) => bigint;

function sysIn(rs: RemoteSyscalls): Sys {
  const check = checkIn(rs);
  return (nr, what, ...args) => check(rs.call(nr, ...args), what);
}

/**
 * Calls restoring state in the task of `rs`, gathered (`sys` returns 0) and run in one batch
 * by `run`, which throws the first failure of a `sys` call as {@link sysIn} would, once all
 * have run; a `soft` call's result goes to its `judge` instead. Their arguments must stay in
 * the arena until then.
 */
function batchIn(rs: RemoteSyscalls): {
  sys: Sys;
  soft: (nr: number, judge: (ret: bigint) => void, ...args: (bigint | number)[]) => void;
  run: () => void;
} {
  const check = checkIn(rs);
  const calls: RemoteCall[] = [], judges: ((ret: bigint) => void)[] = [];
  return {
    sys: (nr, what, ...args) => {
      calls.push({ nr, args });
      judges.push((ret) => check(ret, what));
      return 0n;
    },
    soft: (nr, judge, ...args) => {
      calls.push({ nr, args });
      judges.push(judge);
    },
    run: () => {
      const results = rs.batch(calls.splice(0));
      const judging = judges.splice(0);
      results.forEach((ret, i) => judging[i](ret));
    },
  };
}

/** `ret`, the result of a call restoring `what` in the task of `rs`; thrown when an error. */
function checkIn(rs: RemoteSyscalls): (ret: bigint, what: string) => bigint {
  return (ret, what) => {
    if (ret < 0n) {
      throw new RestoreError(
        `Cannot restore ${what} of task ${rs.task.pid}: ${errnoName(Number(-ret))}`,
      );
    }
    return ret;
  };
}

/** Queues dumped siginfos again, sent by the task to itself (allowed for any si_code). */
function queueSignals(
  sys: Sys,
  arena: RemoteArena,
  tgid: number,
  tid: number,
  infos: { siginfo: Uint8Array }[] | undefined,
  shared: boolean,
): void {
  for (const { siginfo } of infos ?? []) {
    if (siginfo.length !== SIGINFO_SIZE) {
      throw new RestoreError(`A pending signal of task ${tid} is malformed`);
    }
    const sig = new DataView(siginfo.buffer, siginfo.byteOffset).getInt32(0, true);
    // Each siginfo is copied by its syscall: its room serves the next (a task may have
    // hundreds pending).
    const mark = arena.mark();
    const info = arena.put(siginfo);
    if (shared) sys(NR.rt_sigqueueinfo, `pending signal ${sig}`, tgid, sig, info);
    else sys(NR.rt_tgsigqueueinfo, `pending signal ${sig}`, tgid, tid, sig, info);
    arena.release(mark);
  }
}

/** Writes `value` into /proc/PID/NAME, unless it holds that already. */
function writeProcValue(pid: number, name: string, value: number): void {
  const path = `/proc/${pid}/${name}`;
  if (Number(Deno.readTextFileSync(path).trim()) === value) return;
  try {
    Deno.writeTextFileSync(path, `${value}`);
  } catch (e) {
    throw new RestoreError(
      `Cannot restore ${name} ${value} of task ${pid}: ${(e as Error).message}` +
        (name === "oom_score_adj" ? " (a lower value needs CAP_SYS_RESOURCE)" : ""),
      { cause: e },
    );
  }
}

/** Makes the task of `rs` a child subreaper (PR_SET_CHILD_SUBREAPER). */
export function makeSubreaper(rs: RemoteSyscalls): void {
  subreaper(sysIn(rs));
}

/** The call making a task a child subreaper, through `sys`. */
function subreaper(sys: Sys): void {
  sys(NR.prctl, "the child-subreaper flag", PR.SET_CHILD_SUBREAPER, 1);
}

/** The process-wide state, in the leader. */
export function restoreTaskState(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  dump: DumpImages,
  task: TaskImages,
  fds: ServiceFds,
  log: Logger,
  subreaperLater = false,
): void {
  const pid = rs.task.pid;
  // One batch, but for the login uid (below); each call's arguments stay in the arena.
  const { sys, soft, run } = batchIn(rs);
  const tc = task.core.tc!;
  const mm = task.mm;
  arena.reset();

  // mm fields and the exe link, in one PR_SET_MM_MAP (needs no CAP_SYS_RESOURCE).
  const auxv = arena.words(mm.mmSavedAuxv);
  const map = new BigUint64Array(13);
  [
    mm.mmStartCode,
    mm.mmEndCode,
    mm.mmStartData,
    mm.mmEndData,
    mm.mmStartBrk,
    mm.mmBrk,
    mm.mmStartStack,
    mm.mmArgStart,
    mm.mmArgEnd,
    mm.mmEnvStart,
    mm.mmEnvEnd,
    auxv,
  ].forEach((v, i) => (map[i] = BigInt(v)));
  map[12] = BigInt(mm.mmSavedAuxv.length * 8) | (BigInt(fds.exe) << 32n);
  const mapAt = arena.put(new Uint8Array(map.buffer));
  sys(NR.prctl, "mm fields (PR_SET_MM_MAP)", PR.SET_MM, PR.SET_MM_MAP, mapAt, 104, 0);
  // A working directory criu opened (see ServiceFds.cwd), entered now; its descriptor, and the
  // root's, go once the root is entered (below).
  const cwd = dump.files.get(task.fs.cwdId)?.reg?.name;
  if (fds.cwd !== undefined) sys(NR.fchdir, `the working directory ${cwd}`, fds.cwd);
  const kept = new Set([fds.cwd, fds.root]);
  for (const fd of fds.all) if (!kept.has(fd)) sys(NR.close, "restorer descriptors", fd);

  // Signal dispositions: entries for signals 1..64 without SIGKILL and SIGSTOP. Defaults are
  // set too: the helper's own dispositions (ignored signals survive exec) must not leak in.
  const sigs = Array.from({ length: 64 }, (_, i) => i + 1).filter((s) => s !== 9 && s !== 19);
  const list = tc.sigactions.slice(0, sigs.length);
  const acts = arena.words(list.flatMap((sa) => [sa.sigaction, sa.flags, sa.restorer, sa.mask]));
  list.forEach((_, i) => {
    const act = remoteAdd(acts, i * 32);
    sys(NR.rt_sigaction, `the action of signal ${sigs[i]}`, sigs[i], act, 0, 8);
  });

  const timers = tc.timers;
  if (timers) {
    [timers.real, timers.virt, timers.prof].forEach((t, which) => {
      if (!t) return;
      let [vsec, vusec] = [t.vsec, t.vusec];
      if (!vsec && !vusec) {
        // Disarmed, or a periodic timer that expired while the task was frozen: its signal is
        // pending and the kernel re-arms it only when the signal is taken. Fire it again at
        // once: the signal merges with the pending one, and the timer re-arms as it would.
        if (!t.isec && !t.iusec) return;
        vusec = 1n;
      }
      const val = arena.words([t.isec, t.iusec, vsec, vusec]);
      sys(NR.setitimer, "an interval timer", which, val, 0);
    });
  }

  const rlimits = tc.rlimits?.rlimits ?? [];
  const limits = arena.words(rlimits.flatMap((r) => [r.cur, r.max]));
  rlimits.forEach((_, res) =>
    soft(
      NR.prlimit64,
      (ret) => {
        if (ret < 0n) {
          log.warn(
            `Cannot restore resource limit ${res} of task ${pid}: ${errnoName(Number(-ret))}`,
          );
        }
      },
      0,
      res,
      remoteAdd(limits, res * 16),
      0,
    )
  );

  if (tc.personality) sys(NR.personality, "the personality", tc.personality);
  sys(NR.umask, "the umask", task.fs.umask ?? 0o22);
  // The login uid (audit): a task may write only its own, with CAP_AUDIT_CONTROL; before its
  // root moves. Its write needs the descriptor its open returns: the batch so far runs first.
  if (
    isFieldSet(tc, task_core_entrySchema.field.loginuid) &&
    tc.loginuid !== Number(readProcText(pid, "loginuid").trim())
  ) {
    run();
    const one = sysIn(rs);
    const fd = one(NR.open, "the login uid", arena.cstr("/proc/self/loginuid"), 1 /* O_WRONLY */);
    const text = new TextEncoder().encode(`${tc.loginuid}`);
    one(NR.write, `the login uid ${tc.loginuid}`, fd, arena.put(text), text.length);
    one(NR.close, "the login uid", fd);
  }
  const root = dump.files.get(task.fs.rootId)?.reg?.name;
  // Both are paths from our root: the working directory first (it may lie outside the root
  // the task chose), then the root (chroot leaves the working directory where it is).
  // /proc/N of a task gone: entered once a task N exists for a moment (enterDeadProc).
  if (cwd && fds.cwd === undefined && !dump.deadProcs.has(task.fs.cwdId)) {
    sys(NR.chdir, `the working directory ${cwd}`, arena.cstr(cwd));
  }
  if (fds.root !== undefined) {
    // Opened by criu (a path the task may not walk): entered, made the root, and the working
    // directory entered again.
    sys(NR.fchdir, `the root ${root}`, fds.root);
    sys(NR.chroot, `the root ${root}`, arena.cstr("."));
    if (fds.cwd !== undefined) sys(NR.fchdir, `the working directory ${cwd}`, fds.cwd);
  } else if (root && root !== "/") sys(NR.chroot, `the root ${root}`, arena.cstr(root));
  for (const fd of kept) if (fd !== undefined) sys(NR.close, "restorer descriptors", fd);
  // (Later, with `subreaperLater`: once the session helpers went, restore/sessions.ts.)
  if (tc.childSubreaper && !subreaperLater) subreaper(sys);
  if (mm.thpDisabled) sys(NR.prctl, "THP disabled", PR.SET_THP_DISABLE, 1, 0, 0, 0);
  restoreMembarrier(sys, tc.membarrierRegistrationMask ?? 0);
  run();
  if (isFieldSet(tc, task_core_entrySchema.field.oomScoreAdj)) {
    writeProcValue(pid, "oom_score_adj", tc.oomScoreAdj);
  }
  drainSignals(rs, arena);
  const self = selfId(task);
  queueSignals(sysIn(rs), arena, self, self, tc.signalsS?.signals, true);
}

/**
 * Exactly the dumped signals are pending: the making of the tree may have queued others (the
 * SIGCHLD of a child made a zombie). Takes every signal pending for the task (its own, then
 * the process's).
 */
function drainSignals(rs: RemoteSyscalls, arena: RemoteArena): void {
  // Nothing pending, to the task or to the process: no call to make.
  const st = parseStatus(readProcText(rs.task.pid, `task/${rs.task.pid}/status`));
  if (!st.sigPnd && !st.shdPnd) return;
  const all = arena.words([~((1n << 8n) | (1n << 18n)) & 0xffffffffffffffffn]);
  const now = arena.words([0, 0]);
  for (let i = 0; i < 256 && rs.call(NR.rt_sigtimedwait, all, 0, now, 8) > 0n; i++);
}

/**
 * The process's and its leader's pending signals again, after something (its children dying
 * as zombies) queued more: everything pending is taken, the dumped signals queued again.
 */
export function requeueSignals(rs: RemoteSyscalls, arena: RemoteArena, task: TaskImages): void {
  const sys = sysIn(rs);
  arena.reset();
  drainSignals(rs, arena);
  const self = selfId(task);
  queueSignals(sys, arena, self, self, task.core.tc?.signalsS?.signals, true);
  queueSignals(sys, arena, self, self, task.core.threadCore?.signalsP?.signals, false);
}

/** membarrier(2) commands, by the bit of MEMBARRIER_CMD_GET_REGISTRATIONS they register. */
const MEMBARRIER_REGISTER = [
  [1 << 2, 1 << 2, "global expedited"], // MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED
  [1 << 4, 1 << 4, "private expedited"], // ..._REGISTER_PRIVATE_EXPEDITED
  [1 << 6, 1 << 6, "private expedited sync core"],
  [1 << 8, 1 << 8, "private expedited rseq"],
] as const;

/** The process's membarrier registrations, as membarrier(GET_REGISTRATIONS) reported them. */
function restoreMembarrier(sys: Sys, mask: number): void {
  for (const [bit, cmd, what] of MEMBARRIER_REGISTER) {
    if (mask & bit) sys(NR.membarrier, `the membarrier registration (${what})`, cmd, 0, 0);
  }
}

/**
 * One thread's own state, in that thread; `core` is its core image, `tgid` and `tid` its ids
 * as the task sees them (the images').
 */
export function restoreThreadState(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  tgid: number,
  tid: number,
  core: core_entry,
): void {
  const { sys, run } = batchIn(rs);
  const th = core.threadCore;
  arena.reset();
  // Scheduling, before the credentials (raising a priority needs CAP_SYS_NICE).
  const PRIO_PROCESS = 0;
  if (th && isFieldSet(th, thread_core_entrySchema.field.schedNice)) {
    sys(NR.setpriority, "the nice value", PRIO_PROCESS, tid, th.schedNice);
  }
  if (th && isFieldSet(th, thread_core_entrySchema.field.schedPolicy)) {
    const param = arena.put(new Uint8Array(new Int32Array([th.schedPrio ?? 0]).buffer));
    sys(NR.sched_setscheduler, "the scheduling policy", tid, th.schedPolicy, param);
  }
  if (th?.sas && th.sas.ssSize && !(th.sas.ssFlags & SS_DISABLE)) {
    const ss = arena.words([th.sas.ssSp, 0, th.sas.ssSize]);
    sys(NR.sigaltstack, "the alternate signal stack", ss, 0);
  }
  if (th?.futexRla) sys(NR.set_robust_list, "the robust futex list", th.futexRla, th.futexRlaLen);
  sys(NR.set_tid_address, "clear_child_tid", core.threadInfo!.clearTidAddr);
  if (th?.rseqEntry?.rseqAbiPointer) {
    const r = th.rseqEntry;
    sys(NR.rseq, "the rseq area", r.rseqAbiPointer, r.rseqAbiSize, 0, r.signature);
  }
  const comm = th?.comm || core.tc?.comm || "";
  sys(NR.prctl, "the task name", PR.SET_NAME, arena.cstr(comm.slice(0, 15)));
  run();
  // Each signal's room in the arena serves the next: one call at a time.
  queueSignals(sysIn(rs), arena, tgid, tid, th?.signalsP?.signals, false);
}

const SECBIT_NO_SETUID_FIXUP = 1 << 2;
const CAP_AMBIENT_RAISE = 2, CAP_AMBIENT_CLEAR_ALL = 4;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

/** The highest capability number of this kernel. */
function capLastCap(): number {
  return Number(Deno.readTextFileSync("/proc/sys/kernel/cap_last_cap").trim());
}

/** Capability numbers of a set, for a message. */
function capNames(set: bigint): string {
  const out: string[] = [];
  for (let cap = 0n; cap < 64n; cap++) if (set & (1n << cap)) out.push(`capability ${cap}`);
  return out.join(", ");
}

/**
 * A thread's seccomp mode, before its credentials (a filter may be installed only with root's
 * capabilities or no_new_privs): strict, or its chain of filters, oldest first, each with the
 * flags it was made with (TSYNC gives the chain to every thread of the process). The syscalls
 * made in the task after it go unfiltered: the tree is traced with seccomp suspended.
 */
export function restoreSeccomp(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  filters: seccomp_filter[],
  core: core_entry,
): void {
  const tc = core.threadCore;
  const sys = sysIn(rs);
  const SET_MODE_STRICT = 0, SET_MODE_FILTER = 1;
  if (tc?.seccompMode === seccomp_mode.strict) {
    sys(NR.seccomp, "seccomp strict mode", SET_MODE_STRICT, 0, 0);
  }
  if (tc?.seccompMode !== seccomp_mode.filter) return;
  // criu's order: the thread names its oldest filter, each filter (by `prev`) the next newer.
  const chain: seccomp_filter[] = [];
  for (let i: number | undefined = tc.seccompFilter; i !== undefined;) {
    const f: seccomp_filter = filters[i];
    chain.push(f);
    i = isFieldSet(f, seccomp_filterSchema.field.prev) ? f.prev : undefined;
  }
  chain.forEach((f, i) => {
    arena.reset();
    const prog = arena.put(f.filter);
    // struct sock_fprog: len (u16, instructions), then the program's address.
    const fprog = new DataView(new ArrayBuffer(16));
    fprog.setUint16(0, f.filter.length / 8, true);
    fprog.setBigUint64(8, prog, true);
    sys(
      NR.seccomp,
      `seccomp filter ${i + 1} of ${chain.length}`,
      SET_MODE_FILTER,
      f.flags ?? 0,
      arena.put(new Uint8Array(fprog.buffer)),
    );
  });
}

/** A capability set from its two 32-bit words. */
function capBits(words: number[]): bigint {
  return BigInt(words[0] ?? 0) | (BigInt(words[1] ?? 0) << 32n);
}

/**
 * Credentials of one thread, last: everything before may need root. In this order: groups;
 * user and group ids with SECBIT_NO_SETUID_FIXUP, so that no capability is lost on the way;
 * the inheritable set (before the bounding set shrinks); the bounding set; ambient
 * capabilities; securebits; the final capability sets; no_new_privs. Then what a change of
 * credentials resets in the kernel: the parent-death signal (a leader's always set: the
 * restore helper armed one in the root while it was unfinished), and with `process` (its
 * leader, last of its threads) the process's dumpable flag.
 */
export function restoreCreds(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  core: core_entry,
  process?: TaskImages,
): void {
  const { sys, run } = batchIn(rs);
  const c = core.threadCore?.creds;
  if (c) {
    const last = capLastCap();
    const all = (1n << BigInt(last + 1)) - 1n;
    const [eff, prm, inh, bnd, amb] = [c.capEff, c.capPrm, c.capInh, c.capBnd, c.capAmb]
      .map((w) => capBits(w) & all);
    // What the task has now: the restorer's own credentials (root, maybe not every capability).
    const now = parseStatus(readProcText(rs.task.pid, `task/${rs.task.pid}/status`));
    const same = !(c.uid || c.euid || c.suid || c.fsuid || c.gid || c.egid || c.sgid ||
      c.fsgid || c.groups.length || c.secbits || c.noNewPrivs) &&
      eff === now.capEff && prm === now.capPrm && bnd === now.capBnd &&
      inh === now.capInh && amb === now.capAmb;
    if (prm & ~now.capPrm) {
      throw new RestoreError(
        `Cannot restore the capabilities of task ${rs.task.pid}: it had ` +
          `${capNames(prm & ~now.capPrm)}, which this criu does not have`,
      );
    }
    if (!same) {
      arena.reset();
      const groups = arena.put(new Uint8Array(new Uint32Array(c.groups).buffer));
      sys(NR.setgroups, "the supplementary groups", c.groups.length, groups);
      sys(NR.prctl, "securebits", PR.SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP);
      sys(NR.setresgid, "the group ids", c.gid, c.egid, c.sgid);
      sys(NR.setfsgid, "the fs group id", c.fsgid);
      sys(NR.setresuid, "the user ids", c.uid, c.euid, c.suid);
      sys(NR.setfsuid, "the fs user id", c.fsuid);
      const capset = (e: bigint, p: bigint, i: bigint) => {
        const head = arena.put(
          new Uint8Array(new Int32Array([LINUX_CAPABILITY_VERSION_3, 0]).buffer),
        );
        const word = (v: bigint, k: number) => Number((v >> BigInt(32 * k)) & 0xffffffffn);
        const data = arena.put(
          new Uint8Array(
            new Uint32Array([
              word(e, 0),
              word(p, 0),
              word(i, 0),
              word(e, 1),
              word(p, 1),
              word(i, 1),
            ])
              .buffer,
          ),
        );
        sys(NR.capset, "the capabilities", head, data);
      };
      // Everything we have in effect while the rest is set; a capability we lack fails below.
      capset(now.capPrm, now.capPrm, inh & (now.capInh | now.capBnd));
      for (let cap = 0; cap <= last; cap++) {
        if (!(bnd & (1n << BigInt(cap)))) {
          sys(NR.prctl, `the bounding set (capability ${cap})`, PR.CAPBSET_DROP, cap);
        }
      }
      sys(NR.prctl, "the ambient capabilities", PR.CAP_AMBIENT, CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
      for (let cap = 0; cap <= last; cap++) {
        if (amb & (1n << BigInt(cap))) {
          sys(
            NR.prctl,
            `ambient capability ${cap}`,
            PR.CAP_AMBIENT,
            CAP_AMBIENT_RAISE,
            cap,
            0,
            0,
          );
        }
      }
      sys(NR.prctl, "securebits", PR.SET_SECUREBITS, c.secbits);
      capset(eff, prm, inh);
      if (c.noNewPrivs) sys(NR.prctl, "no_new_privs", PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
  }
  // After the credentials (a change of them clears it). A thread made by clone has none, so
  // one without is left as it is; a leader may have the restore helper's (SIGKILL, the root).
  const pdeath = core.threadCore?.pdeathSig ?? 0;
  if (pdeath || process) sys(NR.prctl, "the parent-death signal", PR.SET_PDEATHSIG, pdeath);
  // The leader's, last of all threads: process-wide state a change of credentials resets.
  const dumpable = process && dumpableAfterCreds(process);
  if (dumpable !== undefined) sys(NR.prctl, "the dumpable flag", PR.SET_DUMPABLE, dumpable);
  run();
}

/**
 * Whether the process may be dumped (ptrace, core files, /proc ownership), to be set once
 * every thread has its credentials (a change of them resets it); undefined when the images
 * leave it as it is.
 */
function dumpableAfterCreds(task: TaskImages): number | undefined {
  if (!isFieldSet(task.mm, mm_entrySchema.field.dumpable)) return undefined;
  return task.mm.dumpable === 2 ? undefined : task.mm.dumpable;
}
