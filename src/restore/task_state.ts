/**
 * `restoreTaskState`: the per-task kernel state, set by syscalls run inside the restored task
 * once its memory is back: mm fields and exe link, signal dispositions, alternate stack,
 * interval timers, resource limits, personality, umask, cwd and root, session and group, robust
 * futex list, clear_child_tid, rseq, pending signals, name, and credentials last.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { errnoName, NR, type RemotePtr, SIGINFO_SIZE } from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import type { RemoteArena } from "./arena.ts";
import type { DumpImages, TaskImages } from "./images.ts";
import type { ServiceFds } from "./files.ts";
import { RestoreError } from "./files.ts";

const PR = {
  SET_NAME: 15,
  SET_MM: 35,
  SET_MM_MAP: 14,
  SET_PDEATHSIG: 1,
  SET_CHILD_SUBREAPER: 36,
} as const;
const SS_DISABLE = 2;

/** Options for {@link restoreTaskState}. */
export interface TaskStateOptions {
  /** `--shell-job`: the task stays in the restorer's session. */
  shellJob: boolean;
}

/** Restores everything kernel-side that is not memory, files or registers. */
export function restoreTaskState(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  dump: DumpImages,
  task: TaskImages,
  fds: ServiceFds,
  opts: TaskStateOptions,
  log: Logger,
): void {
  const pid = rs.task.pid;
  const sys = (nr: number, what: string, ...args: (bigint | number | RemotePtr)[]) => {
    const ret = rs.call(nr, ...args);
    if (ret < 0n) {
      throw new RestoreError(`Cannot restore ${what} of task ${pid}: ${errnoName(Number(-ret))}`);
    }
    return ret;
  };
  const tc = task.core.tc!;
  const th = task.core.threadCore;
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
  sys(
    NR.prctl,
    "mm fields (PR_SET_MM_MAP)",
    PR.SET_MM,
    PR.SET_MM_MAP,
    arena.put(new Uint8Array(map.buffer)),
    104,
    0,
  );
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

  if (th?.sas && th.sas.ssSize && !(th.sas.ssFlags & SS_DISABLE)) {
    const ss = arena.words([th.sas.ssSp, 0, th.sas.ssSize]);
    sys(NR.sigaltstack, "the alternate signal stack", ss, 0);
  }

  const timers = tc.timers;
  if (timers) {
    [timers.real, timers.virt, timers.prof].forEach((t, which) => {
      if (!t || (!t.vsec && !t.vusec)) return;
      sys(
        NR.setitimer,
        "an interval timer",
        which,
        arena.words([t.isec, t.iusec, t.vsec, t.vusec]),
        0,
      );
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

  const ps = task.pstree;
  if (!opts.shellJob && ps.sid === ps.pid) sys(NR.setsid, "the session");
  else if (ps.pgid === ps.pid) sys(NR.setpgid, "the process group", 0, 0);

  if (th?.futexRla) sys(NR.set_robust_list, "the robust futex list", th.futexRla, th.futexRlaLen);
  sys(NR.set_tid_address, "clear_child_tid", task.core.threadInfo!.clearTidAddr);
  if (th?.rseqEntry?.rseqAbiPointer) {
    const r = th.rseqEntry;
    sys(NR.rseq, "the rseq area", r.rseqAbiPointer, r.rseqAbiSize, 0, r.signature);
  }
  if (th?.pdeathSig) sys(NR.prctl, "the parent-death signal", PR.SET_PDEATHSIG, th.pdeathSig);
  if (tc.childSubreaper) sys(NR.prctl, "the child-subreaper flag", PR.SET_CHILD_SUBREAPER, 1);

  // Pending signals, queued by the task to itself (allowed for any si_code).
  const queue = (infos: { siginfo: Uint8Array }[] | undefined, shared: boolean) => {
    for (const { siginfo } of infos ?? []) {
      if (siginfo.length !== SIGINFO_SIZE) {
        throw new RestoreError(`A pending signal of task ${pid} is malformed`);
      }
      const sig = new DataView(siginfo.buffer, siginfo.byteOffset).getInt32(0, true);
      const info = arena.put(siginfo);
      if (shared) sys(NR.rt_sigqueueinfo, `pending signal ${sig}`, pid, sig, info);
      else sys(NR.rt_tgsigqueueinfo, `pending signal ${sig}`, pid, pid, sig, info);
    }
  };
  queue(tc.signalsS?.signals, true);
  queue(th?.signalsP?.signals, false);

  const comm = th?.comm || tc.comm;
  sys(NR.prctl, "the task name", PR.SET_NAME, arena.cstr(comm.slice(0, 15)));

  // Credentials last: everything above may need root.
  const c = th?.creds;
  if (
    c &&
    (c.uid || c.euid || c.suid || c.fsuid || c.gid || c.egid || c.sgid || c.fsgid ||
      c.groups.length)
  ) {
    sys(
      NR.setgroups,
      "the supplementary groups",
      c.groups.length,
      arena.put(new Uint8Array(new Uint32Array(c.groups).buffer)),
    );
    sys(NR.setresgid, "the group ids", c.gid, c.egid, c.sgid);
    sys(NR.setresuid, "the user ids", c.uid, c.euid, c.suid);
    sys(NR.setfsgid, "the fs group id", c.fsgid);
    sys(NR.setfsuid, "the fs user id", c.fsuid);
  }
}
