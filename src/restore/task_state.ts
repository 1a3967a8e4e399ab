/**
 * Kernel state of a restored process, set by syscalls run inside it once its memory is back.
 *
 * - `restoreTaskState`, once per process (in its leader): mm fields and exe link, signal
 *   dispositions, interval timers, resource limits, personality, umask, cwd and root,
 *   parent-death signal, child-subreaper flag, process-wide pending signals.
 * - `restoreThreadState`, in every thread: alternate stack, robust futex list,
 *   clear_child_tid, rseq, the thread's pending signals, its name.
 * - `restoreCreds`, in every thread, last of all: raw setresuid() changes only the calling
 *   thread, and everything before it (clone3 with set_tid above all) needs root.
 *
 * Sessions and process groups are set by the orchestrator (restore.ts): they depend on the
 * order in which tasks are made.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { errnoName, NR, type RemotePtr, SIGINFO_SIZE } from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import type { RemoteArena } from "./arena.ts";
import type { core_entry } from "../../proto/gen/core_pb.ts";
import type { DumpImages, TaskImages } from "./images.ts";
import type { ServiceFds } from "./install.ts";
import { RestoreError } from "./files.ts";

const PR = {
  SET_NAME: 15,
  SET_MM: 35,
  SET_MM_MAP: 14,
  SET_PDEATHSIG: 1,
  SET_CHILD_SUBREAPER: 36,
} as const;
const SS_DISABLE = 2;

type Sys = (nr: number, what: string, ...args: (bigint | number | RemotePtr)[]) => bigint;

function sysIn(rs: RemoteSyscalls): Sys {
  const pid = rs.task.pid;
  return (nr, what, ...args) => {
    const ret = rs.call(nr, ...args);
    if (ret < 0n) {
      throw new RestoreError(`Cannot restore ${what} of task ${pid}: ${errnoName(Number(-ret))}`);
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
    const info = arena.put(siginfo);
    if (shared) sys(NR.rt_sigqueueinfo, `pending signal ${sig}`, tgid, sig, info);
    else sys(NR.rt_tgsigqueueinfo, `pending signal ${sig}`, tgid, tid, sig, info);
  }
}

/** The process-wide state, in the leader. */
export function restoreTaskState(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  dump: DumpImages,
  task: TaskImages,
  fds: ServiceFds,
  log: Logger,
): void {
  const pid = rs.task.pid;
  const sys = sysIn(rs);
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
  for (const fd of fds.all) sys(NR.close, "restorer descriptors", fd);

  // Signal dispositions: entries for signals 1..64 without SIGKILL and SIGSTOP. Defaults are
  // set too: the helper's own dispositions (ignored signals survive exec) must not leak in.
  const sigs = Array.from({ length: 64 }, (_, i) => i + 1).filter((s) => s !== 9 && s !== 19);
  tc.sigactions.forEach((sa, i) => {
    const sig = sigs[i];
    if (!sig) return;
    const act = arena.words([sa.sigaction, sa.flags, sa.restorer, sa.mask]);
    sys(NR.rt_sigaction, `the action of signal ${sig}`, sig, act, 0, 8);
  });

  const timers = tc.timers;
  if (timers) {
    [timers.real, timers.virt, timers.prof].forEach((t, which) => {
      if (!t || (!t.vsec && !t.vusec)) return;
      const val = arena.words([t.isec, t.iusec, t.vsec, t.vusec]);
      sys(NR.setitimer, "an interval timer", which, val, 0);
    });
  }

  (tc.rlimits?.rlimits ?? []).forEach((r, res) => {
    const ret = rs.call(NR.prlimit64, 0, res, arena.words([r.cur, r.max]), 0);
    if (ret < 0n) {
      log.warn(`Cannot restore resource limit ${res} of task ${pid}: ${errnoName(Number(-ret))}`);
    }
  });

  if (tc.personality) sys(NR.personality, "the personality", tc.personality);
  sys(NR.umask, "the umask", task.fs.umask ?? 0o22);
  const cwd = dump.files.get(task.fs.cwdId)?.reg?.name;
  const root = dump.files.get(task.fs.rootId)?.reg?.name;
  if (root && root !== "/") sys(NR.chroot, `the root ${root}`, arena.cstr(root));
  if (cwd) sys(NR.chdir, `the working directory ${cwd}`, arena.cstr(cwd));
  if (tc.childSubreaper) sys(NR.prctl, "the child-subreaper flag", PR.SET_CHILD_SUBREAPER, 1);
  queueSignals(sys, arena, pid, pid, tc.signalsS?.signals, true);
}

/** One thread's own state, in that thread; `core` is its core image. */
export function restoreThreadState(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  tgid: number,
  core: core_entry,
): void {
  const tid = rs.task.pid;
  const sys = sysIn(rs);
  const th = core.threadCore;
  arena.reset();
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
  queueSignals(sys, arena, tgid, tid, th?.signalsP?.signals, false);
  const comm = th?.comm || core.tc?.comm || "";
  sys(NR.prctl, "the task name", PR.SET_NAME, arena.cstr(comm.slice(0, 15)));
}

/**
 * Credentials of one thread, last: everything before may need root. Then what a change of
 * credentials resets in the kernel: the parent-death signal (always set: the restore helper
 * armed one while the task was unfinished).
 */
export function restoreCreds(rs: RemoteSyscalls, arena: RemoteArena, core: core_entry): void {
  const sys = sysIn(rs);
  const c = core.threadCore?.creds;
  if (
    c &&
    (c.uid || c.euid || c.suid || c.fsuid || c.gid || c.egid || c.sgid || c.fsgid ||
      c.groups.length)
  ) {
    arena.reset();
    const groups = arena.put(new Uint8Array(new Uint32Array(c.groups).buffer));
    sys(NR.setgroups, "the supplementary groups", c.groups.length, groups);
    sys(NR.setresgid, "the group ids", c.gid, c.egid, c.sgid);
    sys(NR.setresuid, "the user ids", c.uid, c.euid, c.suid);
    sys(NR.setfsgid, "the fs group id", c.fsgid);
    sys(NR.setfsuid, "the fs user id", c.fsuid);
  }
  const pdeath = core.threadCore?.pdeathSig ?? 0;
  sys(NR.prctl, "the parent-death signal", PR.SET_PDEATHSIG, pdeath);
}
