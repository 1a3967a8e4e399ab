/**
 * `restore`: bring a dumped process back from its images, with its PID, memory, files, signal
 * state and registers.
 *
 * Stages, in order (each names the resource in its error):
 *
 * 1. READ: every image is read and checked (magics, framing, pages file long enough), and the
 *    files the task had are checked to exist with their dumped size. Nothing exists yet.
 * 2. FORK: the restore helper (a static executable; Deno never forks) makes the task with
 *    clone3(set_tid = dumped PID). The task sleeps in the helper's code.
 * 3. SEIZE: we become its tracer and run syscalls inside it (tree/infect.ts).
 * 4. FILES: its descriptor table is emptied and refilled: dumped descriptors at their numbers,
 *    plus the restorer's own (pages-N.img, mapped files, exe) above them.
 * 5. MEMORY: the restorer blob is mapped in a gap free in both address spaces and runs the
 *    operations of restore/memory.ts: the helper's mappings go, the vDSO moves to its dumped
 *    place, every dumped mapping comes back with its pages read from pages-N.img.
 * 6. STATE: mm fields and exe link, signals, timers, limits, cwd, session, rseq, pending
 *    signals, credentials (restore/task_state.ts); the blob area is unmapped.
 * 7. RESUME: dumped registers, FPU/AVX state and signal mask are set with ptrace, and the task
 *    is let go. It continues where it was dumped; a syscall it was in is restarted.
 *
 * Any failure after FORK kills the task, so nothing half-restored runs.
 *
 * @module
 */
import { ImagesDir } from "../images/images_dir.ts";
import { create, isFieldSet } from "../images/protobuf.ts";
import { dirname, join } from "../util/path.ts";
import type { ActionHook, ScriptAction } from "../action_scripts.ts";
import { BLOBS } from "../../parasite/blobs_gen.ts";
import { fstype, restore_stats_entrySchema, stats_entrySchema } from "../../proto/gen/misc_pb.ts";
import { ImageWriter } from "../images/image.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { MAP, VMA } from "../pagemap/vma.ts";
import {
  anonSharedMemory,
  CGROUP_MAGICS,
  close,
  errno,
  errnoName,
  fileSystemOf,
  ioctl,
  kill,
  nap,
  NR,
  O,
  open as openHere,
  PTRACE_O,
  ptraceCont,
  ptraceGetXstate,
  ptraceSetOptions,
  ptraceSetSigmask,
  readRemote,
  remoteAdd,
  type RemotePtr,
  remotePtr,
  sleep,
  tryKill,
  tryOpen,
  tryTgkill,
  waitPid,
  withSharedMapping,
  writeRemote,
} from "../syscalls/mod.ts";
import { RemoteSyscalls } from "../tree/infect.ts";
import { endRestorer, restorerCalls, type RestorerRoom, startRestorer } from "./restorer_blob.ts";
import { parseMaps, parseStat, readProcText } from "../tree/proc.ts";
import {
  type core_entry,
  task_kobj_ids_entrySchema,
  thread_core_entrySchema,
} from "../../proto/gen/core_pb.ts";
import { NS_CLONE_FLAGS, NS_KINDS, OWN_NS_KINDS } from "../dump/context.ts";
import { checkPidNamespaces, pidNamespacesOf, type PidPlan, selfId } from "./nested_pidns.ts";
import { rootOf } from "../tree/userns.ts";
import type { vma_entry } from "../../proto/gen/mm_pb.ts";
import { type reg_file_entry, reg_file_entrySchema } from "../../proto/gen/files_pb.ts";
import { SeizedTask, TASK_STATE } from "../tree/seize.ts";
import { NoSuchTaskError } from "../tree/proc.ts";
import { decodeBase64 } from "../util/base64.ts";
import { checkInterrupt } from "../util/interrupt.ts";
import { cString } from "../syscalls/ffi.ts";
import { RemoteArena } from "./arena.ts";
import { DEFAULT_LOCK_METHOD, LOCK_METHODS, type LockMethod } from "../net/netlock.ts";
import { RepairedConnections } from "../net/tcp_conns.ts";
import {
  FileTable,
  type FileTableTcp,
  isLateFile,
  isTreeProcFile,
  linkMount,
  ourTerminal,
  RestoreError,
  writeShmemImage,
} from "./files.ts";
import { type PtyTable, setForegroundGroup } from "./ttys.ts";
import { installFiles, restoreLateFiles, type ServiceFds } from "./install.ts";
import { makeRingsInMemory, mapRings, registerRingBuffers } from "./io_uring.ts";
import { restoreAioRings } from "./aio.ts";
import { PidTakenError, spawnTask, type TimeNamespaceClocks, timeOffsets } from "./helper.ts";
import { RealPids } from "../tree/pid_ns.ts";
import {
  planSessions,
  type SessionHelper,
  type SessionPlan,
  SessionPlanError,
} from "./sessions.ts";
import { setUtsNames } from "./uts.ts";
import { removeMarkedSegments, restoreIpcNamespace } from "./ipc_ns.ts";
import { NetnsError } from "../net/in_netns.ts";
import { mapPingGroups, type OutsideLinks, restoreNetns } from "../net/netns.ts";
import { tunMakers } from "../net/tun.ts";
import { lockNetns, unlockNetns } from "../net/netns_lock.ts";
import { NetNamespaces, socketNsId, tcpConnections } from "./nested_netns.ts";
import { useNamespaceOf } from "../net/ns_sockets.ts";
import { type CgroupMode, CgroupMover, cgSetOf } from "./cgroups.ts";
import { exists } from "../util/exists.ts";

/** Whether id `pid` is taken here (a process or thread: /proc shows both). */
function pidInUse(pid: number): boolean {
  return exists(`/proc/${pid}`);
}
import {
  type DumpImages,
  hostPath,
  mountNamespaces,
  outsideGid,
  readDump,
  type TaskImages,
} from "./images.ts";
import {
  checkLateProcs,
  checkMountNamespace,
  checkNestedNamespaces,
  enterMountNamespace,
  makeMountNamespace,
  makeReadOnly,
  makeReadOnlyFromOutside,
  mountLateProcs,
  outsidePath,
} from "./mnt_ns.ts";
import { hasTar, within } from "./mount_plan.ts";
import { checkVdsoCode } from "./vdso_check.ts";
import { GhostSpecials } from "./ghost_specials.ts";
import {
  encodeOps,
  findGap,
  inheritedVmas,
  occupied,
  OP,
  type Op,
  OP_SIZE,
  planMemory,
} from "./memory.ts";
import { keepLazyFillable, LazyPagesLink } from "./lazy.ts";
import { gpregsWords, xsaveArea } from "../images/x86.ts";
import {
  makeSubreaper,
  requeueSignals,
  restoreCreds,
  restoreSeccomp,
  restoreTaskState,
  restoreThreadState,
} from "./task_state.ts";
import { ensureSysvSegment, markSysvRemoved } from "./sysv.ts";

/** Options of a restore, as `criu restore` takes them. */
export interface RestoreOptions {
  /** Where the images are (`-D`). */
  imagesDir: string;
  /** Where stats-restore goes, as criu writes it: its work directory (`-W`); `imagesDir` if unset. */
  workDir?: string;
  /** Return once the task runs instead of waiting for it (`-d`). */
  detach?: boolean;
  /** Keep the task in the restorer's session and terminal (`-j`). */
  shellJob?: boolean;
  /** Write the restored root task's PID here (`--pidfile`); an existing file is an error. */
  pidfile?: string;
  /** Restore established TCP connections (`--tcp-established`). */
  tcpEstablished?: boolean;
  /** Restore established TCP connections closed (`--tcp-close`). */
  tcpClose?: boolean;
  /** How the dump locked the network (`--network-lock`); default: what inventory.img says. */
  networkLock?: LockMethod;
  /**
   * Files the caller hands in (`--inherit-fd fd[N]:KEY`): a file criu names KEY (`pipe:[INO]`,
   * `socket:[INO]`, a path without its leading slash) is restored as descriptor N of this
   * process, not made anew.
   */
  inheritFds?: ReadonlyMap<string, number>;
  /** Leave the restored tree stopped (`-s`): every task gets SIGSTOP as it is released. */
  leaveStopped?: boolean;
  /**
   * Runs criu's action scripts (`--action-script`): pre-restore, post-restore (a failure undoes
   * the restore), pre-resume and post-resume (failures are only reported).
   */
  actions?: ActionHook;
  /** What to do with the cgroups of cgroup.img (`--manage-cgroups`; soft when absent). */
  manageCgroups?: CgroupMode;
  /** Make the tree's network namespace empty, for setup-namespaces to fill (`--empty-ns net`). */
  emptyNet?: boolean;
  /** Restore into the network namespace bound at this path (`--join-ns net:...`). */
  joinNet?: string;
  /** The outside ends of veth devices and the lower devices of macvlans, by their names
   * inside (`--external veth[...]`, `macvlan[...]`). */
  outsideLinks?: OutsideLinks;
  /** The directory the root of the tree's own mount namespace is made from (`--root`). */
  root?: string;
  /** Mounts found in criu's namespace at dump are bound from there (`--ext-mount-map auto`). */
  extMountAuto?: boolean;
  /** `--cgroup-root [CONTROLLER:]/PATH`: the dumped cgroups moved under these roots. */
  cgroupRoots?: string[];
  /** What external mounts are bound from, by the key the dump gave them (`--external mnt[KEY]:PATH`). */
  externalMounts?: ReadonlyMap<string, string>;
  /**
   * A pty slave whose master was outside the tree gets a new master, handed to this (criu's
   * orphan-pts-master, to an RPC caller: runc gives it to its console socket).
   */
  orphanPtsMaster?: (master: number) => Promise<void>;
  /** The restored root is born the caller's child, criu's sibling (`--restore-sibling`). */
  sibling?: boolean;
  /**
   * Leave the lazy pages (PE_LAZY) to `criu lazy-pages`, listening in the work directory
   * (`--lazy-pages`): the tree runs before they are in.
   */
  lazyPages?: boolean;
  /** Test hook: fail at the named stage after the task exists. */
  faultInject?: string;
  /** Aborted when criu is asked to stop (SIGINT, SIGTERM, SIGHUP): the restore rolls back. */
  signal?: AbortSignal;
}

/** Restore statistics (times in microseconds), as stats-restore records them. */
export interface RestoreStats {
  forkingUs: number;
  restoreUs: number;
  /** Pages written into the tasks. */
  pagesRestored: number;
  /** Pages compared with what a child inherited from its parent. */
  pagesCompared: number;
  /** Of those, pages left shared with the parent (copy-on-write), not written. */
  pagesSkippedCow: number;
}

/** What a restore produced. */
export interface RestoreResult {
  /** PID of the restored root task, as criu sees it (in a new PID namespace, not its own). */
  pid: number;
  stats: RestoreStats;
  /** Without `detach`: resolves to the task's exit status (128 + signal when killed). */
  exit?: Promise<number>;
}

const AREA_CODE = 0;
const AREA_ARGS = 4096;
const ARENA_SIZE = 64 << 10;
const STACK_SIZE = 16 << 10;
/**
 * Room for the restorer's struct helper (parasite/restorer.c, 40 bytes), after its args, and
 * at SOURCE_SLOT its slot for the userfaultfd it fills memory through (OP.SOURCE_OPEN).
 */
const HELPER_STATE_ROOM = 64;
const SOURCE_SLOT = 48;
/** The ptrace options cleared while the restorer may start a thread: it runs untraced. */
const UNTRACED_HELPER = PTRACE_O.TRACEFORK | PTRACE_O.TRACEVFORK | PTRACE_O.TRACECLONE;
const BLOB_TIMEOUT_MS = 600_000;

/**
 * Checks task `task` can be restored before anything is made; `outside` says where criu finds
 * a path of the tree now, of the namespace of mount `mntId` when given (undefined: on a mount
 * the restore makes, nothing to check).
 */
function checkTask(
  dump: DumpImages,
  task: TaskImages,
  shellJob: boolean,
  outside: (path: string, mntId?: number) => string | undefined,
): void {
  const pid = task.pstree.pid;
  const ps = task.pstree;
  // In a new PID namespace every id is free.
  for (const tid of dump.pidNs ? [] : ps.threads.length ? ps.threads : [pid]) {
    if (pidInUse(tid)) throw new PidTakenError(tid);
  }
  if (dump.pidNs && task === dump.tasks[0] && pid !== 1) {
    throw new RestoreError(
      `Cannot restore task ${pid}: it was in a PID namespace of its own but not its init`,
    );
  }
  if (task.zombie) return;
  const dead = dump.deadProcs.get(task.fs.cwdId);
  // In a PID namespace of its own, N is made in it (its own /proc shows it there).
  const ownProc = dump.mntNs?.entries.some((e) =>
    e.fstype === fstype.PROC && e.mountpoint === "/proc"
  );
  if (dead !== undefined && ((dump.pidNs && !ownProc) || (!dump.pidNs && pidInUse(dead)))) {
    if (dump.pidNs) {
      throw new RestoreError(
        `Cannot restore task ${pid}: its working directory is /proc/${dead} of a task gone, ` +
          `in a PID namespace of its own; not supported`,
      );
    }
    throw new PidTakenError(dead);
  }
  // A task that lived in namespaces of its own (criu's images of a container) would come back
  // in ours, changed. The root's own namespaces of OWN_NS_KINDS are made again, with every
  // task in them.
  const rootIds = dump.inventory.rootIds;
  const treeRoot = dump.tasks[0];
  for (const kind of NS_KINDS) {
    const field = task_kobj_ids_entrySchema.field[`${kind}NsId`];
    // So are nested mount, network and PID namespaces (checkPidNamespaces checked those).
    const nested = (kind === "mnt" && dump.nestedMnts.has(task.ids.mntNsId)) ||
      (kind === "net" && dump.nestedNets.has(task.ids.netNsId)) ||
      (kind === "pid" && task.pstree.nsPid.length > 0);
    if (OWN_NS_KINDS.has(kind) && isFieldSet(task.ids, field)) {
      if (task.ids[`${kind}NsId`] !== treeRoot.ids[`${kind}NsId`] && !nested) {
        throw new RestoreError(
          `Cannot restore task ${pid}: it was in another ${kind} namespace than task ` +
            `${treeRoot.pstree.pid}; nested namespaces are not supported yet`,
        );
      }
      continue;
    }
    if (
      rootIds && isFieldSet(task.ids, field) && isFieldSet(rootIds, field) &&
      task.ids[`${kind}NsId`] !== rootIds[`${kind}NsId`] && !nested
    ) {
      throw new RestoreError(
        `Cannot restore task ${pid}: it was in a ${kind} namespace of its own; namespaces are ` +
          `not supported yet`,
      );
    }
  }
  // The root's session: its own, or criu's for a shell job (the others: restore/sessions.ts).
  if (ps === dump.tasks[0].pstree && !shellJob && ps.sid !== ps.pid) {
    throw new RestoreError(
      `Cannot restore task ${pid}: it belonged to session ${ps.sid}, which is not in the ` +
        `images; restore it into this session with --shell-job (-j)`,
    );
  }
  const ids = new Set<number>(task.fds.map((f) => f.id));
  for (const f of task.fds) {
    const fifo = dump.files.get(f.id)?.fifo;
    if (fifo?.regfId) ids.add(fifo.regfId);
  }
  for (const v of task.mm.vmas) {
    if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) ids.add(Number(v.shmid));
  }
  ids.add(task.mm.exeFileId);
  for (const id of ids) {
    const reg = dump.files.get(id)?.reg;
    if (
      !reg || reg.ext || dump.ghosts.has(id) || dump.deadProcs.has(id) ||
      isTreeProcFile(reg.name, dump)
    ) continue;
    // A deleted file still linked elsewhere is checked at its link (on the mount of its name
    // when the link names none, as criu's).
    const at = dump.linked.get(id) ?? reg;
    const path = outside(at.name, linkMount(at, reg));
    if (path === undefined) continue;
    let st: Deno.FileInfo;
    try {
      // A descriptor of a symlink itself (O_PATH | O_NOFOLLOW) names the link, not its target.
      st = reg.flags & O.NOFOLLOW ? Deno.lstatSync(path) : Deno.statSync(path);
    } catch {
      // A cgroup directory (a working directory there, say) is made by the cgroup restore.
      if (onCgroupFs(path)) continue;
      throw new RestoreError(`Cannot restore task ${pid}: file ${at.name} no longer exists`);
    }
    if (
      st.isFile && isFieldSet(reg, reg_file_entrySchema.field.size) && BigInt(st.size) !== reg.size
    ) {
      throw new RestoreError(
        `Cannot restore task ${pid}: file ${reg.name} changed size since the dump ` +
          `(${st.size} bytes, was ${reg.size})`,
      );
    }
  }
}

/** Whether the nearest existing directory above `path` is on a cgroup file system. */
function onCgroupFs(path: string): boolean {
  for (let dir = dirname(path); dir !== "/"; dir = dirname(dir)) {
    const fd = tryOpen(dir, O.PATH | O.DIRECTORY | O.CLOEXEC);
    if (fd < 0) continue;
    try {
      return CGROUP_MAGICS.includes(fileSystemOf(fd, dir).type);
    } finally {
      close(fd);
    }
  }
  return false;
}

/** A process being restored. */
interface Restoring {
  task: TaskImages;
  seized: SeizedTask;
  /** Threads other than the leader, once made. */
  threads: { tid: number; seized: SeizedTask; core: core_entry }[];
  /**
   * The read-only mounts of the nested mount namespace it made, left writable for the deleted
   * files made on them: made read-only once its files are, before its seccomp filters and
   * credentials may forbid it.
   */
  readOnlyLater?: string[];
}

const CLONE_THREAD_FLAGS = 0x100n | 0x200n | 0x400n | 0x800n | 0x10000n | 0x40000n; // VM FS FILES SIGHAND THREAD SYSVSEM
const SIGCHLD = 17n;
const SIGSTOP = 19;
/** sizeof(struct clone_args) with set_tid (CLONE_ARGS_SIZE_VER1). */
const CLONE_ARGS_SIZE = 80;

/**
 * clone_args for a fork (or a thread) with a chosen id, in `arena`; `quiet` children die
 * without signalling their parent (helpers).
 */
function cloneArgs(
  arena: RemoteArena,
  tid: number[] | undefined,
  thread: boolean,
  share = 0n,
  quiet = false,
): RemotePtr {
  // set_tid is an array of pid_t.
  const setTid = tid === undefined ? 0n : arena.put(new Uint8Array(new Int32Array(tid).buffer));
  return arena.words([
    thread ? CLONE_THREAD_FLAGS : share, // flags
    0, // pidfd
    0, // child_tid
    0, // parent_tid
    thread || quiet ? 0n : SIGCHLD, // exit_signal
    0, // stack
    0, // stack_size
    0, // tls
    setTid, // set_tid
    tid?.length ?? 0, // set_tid_size (none: any PID)
  ]);
}

/**
 * Task `id` (its id as the tree sees it), made by the task of `rs` with clone3 (`options` as
 * cloneArgs takes them) and traced from birth; `real` learns the id criu knows it by. `what`
 * names it should clone3 give it another id.
 */
function makeTask(...args: Parameters<typeof makeTaskWithId>): SeizedTask {
  return makeTaskWithId(...args).seized;
}

/** {@link makeTask}, with the id the new task has as its maker sees it (any, without `id`). */
function makeTaskWithId(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  id: number | undefined,
  what: string,
  real?: RealPids,
  options: { thread?: boolean; share?: bigint; quiet?: boolean; pids?: PidPlan } = {},
): { seized: SeizedTask; virt: number } {
  // In nested PID namespaces: its id at every level, and clone3 returns the maker's.
  const plan = options.pids;
  const args = cloneArgs(
    arena,
    plan?.setTid ?? (id === undefined ? undefined : [id]),
    options.thread ?? false,
    (options.share ?? 0n) | (plan?.flags ?? 0n),
    options.quiet,
  );
  const made = rs.clone(args, CLONE_ARGS_SIZE);
  const expect = plan?.expect ?? id;
  if (expect !== undefined && made.virt !== expect) {
    // Ours to reap (traced from birth): a task left unreaped could keep the init of its PID
    // namespace, and the restore's cleanup waiting for it, from ever exiting.
    try {
      SeizedTask.adopt(made.real).kill();
    } catch {
      tryKill(made.real, 9); // not in its first stop: at least it dies
    }
    throw new RestoreError(`${what} came back as ${made.virt}`);
  }
  if (id !== undefined) real?.set(id, made.real);
  return { seized: SeizedTask.adopt(made.real), virt: made.virt };
}

/** Restores the process tree in `opts.imagesDir`. */
export async function restore(
  opts: RestoreOptions,
  log: Logger = silentLogger(),
): Promise<RestoreResult> {
  const t0 = performance.now();
  // 1. READ
  const dump = readDump(new ImagesDir(opts.imagesDir), opts.emptyNet ?? false);
  checkPidNamespaces(dump.tasks);
  await opts.actions?.("pre-restore");
  // The checks between stages cost nothing once the first is made: made now.
  await checkInterrupt(opts.signal);
  const lockMethod = opts.networkLock ??
    LOCK_METHODS[dump.inventory.networkLockMethod ?? -1] ?? DEFAULT_LOCK_METHOD;
  const tcp = {
    established: opts.tcpEstablished ?? false,
    close: (opts.tcpClose || dump.inventory.tcpClose) ?? false,
    conns: new RepairedConnections(lockMethod, dump.tasks[0].pstree.pid, log),
  };
  // The dump locked these; whatever happens below, the lock goes. A tree with a network
  // namespace of its own comes back in a new one, which has no lock (the old went with it).
  if (!dump.netns) { for (const c of tcpConnections(dump)) tcp.conns.lock.adopt(c); }
  try {
    // A namespace the dump named external is joined, as one given with --join-ns.
    const joinNet = opts.joinNet ?? externalNet(dump, opts.inheritFds);
    return await restoreTree(dump, { ...opts, joinNet }, log, tcp, t0);
  } catch (e) {
    tcp.conns.drop({ unlock: true });
    throw e;
  }
}

/** Restores the tree of `dump`: steps 1 (checks) to 7 (resume). */
async function restoreTree(
  dump: DumpImages,
  opts: RestoreOptions,
  log: Logger,
  tcp: FileTableTcp,
  t0: number,
): Promise<RestoreResult> {
  const rootTask = dump.tasks[0];
  const pid = rootTask.pstree.pid;
  if (rootTask.zombie) throw new RestoreError(`Cannot restore: the root task ${pid} is a zombie`);
  // The cgroups the tasks go back into.
  using cgroups = new CgroupMover(dump.dir, opts.manageCgroups ?? "soft", opts.cgroupRoots);
  // The tree's own mount namespace: its plan, and everything it is made from, checked.
  const mounts = dump.mntNs && checkMountNamespace(dump.mntNs.entries, {
    root: opts.root,
    external: opts.externalMounts,
    extMountAuto: opts.extMountAuto,
    images: dump.dir,
    userns: dump.userns,
    cgroupNsRoots: dump.cgroupNs ? cgroups.dumpedNamespaceRoots(cgSetOf(rootTask.core)) : undefined,
  });
  const outside = mounts ? (path: string) => outsidePath(mounts, path) : (path: string) => path;
  // Those nested in it (systemd's services'), made from copies of it.
  const nestedPlans = mounts ? checkNestedNamespaces(dump) : new Map();
  checkLateProcs(dump);
  // A file in a nested namespace (the task's, or the one its mount is in) on a tmpfs of that
  // namespace comes from its tar.
  const nestedOf = (mntId?: number) => {
    const ns = mntId === undefined ? undefined : mountNamespaces(dump).get(mntId);
    return ns !== undefined && dump.nestedMnts.has(ns) ? ns : undefined;
  };
  const outsideFor = (task: TaskImages) => (path: string, mntId?: number) => {
    const ns = nestedOf(mntId) ?? task.ids?.mntNsId;
    const nested = ns === undefined ? undefined : dump.nestedMnts.get(ns);
    if (!nested) return outside(path);
    const top = nested.filter((e) => within(path, e.mountpoint))
      .sort((a, b) => b.mountpoint.length - a.mountpoint.length)[0];
    return top && hasTar(top) ? undefined : outside(path);
  };
  for (const task of dump.tasks) {
    checkTask(dump, task, opts.shellJob ?? false, outsideFor(task));
    if (!task.zombie) checkVdsoCode(task);
  }
  let sessionPlan: SessionPlan;
  try {
    sessionPlan = planSessions(dump.tasks, Boolean(dump.pidNs));
  } catch (e) {
    if (e instanceof SessionPlanError) throw new RestoreError(e.message);
    throw e;
  }
  if (opts.pidfile) {
    try {
      Deno.statSync(opts.pidfile);
      throw new RestoreError(`Cannot write pidfile ${opts.pidfile}: it exists already`);
    } catch (e) {
      if (e instanceof RestoreError) throw e;
    }
  }

  // Deleted FIFOs, directories, devices and symlinks exist again for the time of the restore
  // (once the tree's own mount namespace is made, when it has one).
  using _ghosts = mounts ? undefined : new GhostSpecials(dump);

  // The lazy pages' daemon must be listening (as with criu).
  using lazy = opts.lazyPages ? LazyPagesLink.connect(opts.workDir ?? opts.imagesDir) : undefined;
  if (lazy) { for (const t of dump.tasks) if (!t.zombie) keepLazyFillable(t); }

  // 2. FORK: the root by the helper, every other task by its restored parent.
  log.info(`Creating task ${pid}`);
  // As criu: the root's parent is criu, which a detached restore leaves at once.
  if (opts.detach && !opts.sibling && rootTask.core.threadCore?.pdeathSig) {
    log.warn(
      `The root task ${pid} has a parent-death signal (${rootTask.core.threadCore.pdeathSig}): ` +
        `it gets it as soon as criu exits; restore without -d, or with --restore-sibling`,
    );
  }
  // Every cgroup the tasks go back into must be here before anything is made.
  cgroups.check(dump.tasks);
  // As criu: the tree gets a time namespace whose clocks go on from where they were at the dump.
  const t = dump.timens;
  const clocks = t?.monotonic && t.boottime && exists("/proc/self/ns/time")
    ? {
      monotonic: [t.monotonic.tvSec, t.monotonic.tvNsec] as [bigint, bigint],
      boottime: [t.boottime.tvSec, t.boottime.tvNsec] as [bigint, bigint],
    }
    : undefined;
  // In a user namespace of its own, the tree's time namespace belongs to that one, whether the
  // tree had a time namespace of its own (which the dump checks belonged to it) or criu's: the
  // root makes it there (see below), as criu's root does once in its user namespace. The
  // namespace's root may then join it (lxc-attach), and a dump after finds it the tree's own.
  const timeInside = dump.userns ? clocks : undefined;
  const made = await spawnTask(
    pid,
    opts.detach ?? false,
    (dump.userns ? NS_CLONE_FLAGS.user : 0) |
      (dump.uts ? NS_CLONE_FLAGS.uts : 0) | (dump.pidNs ? NS_CLONE_FLAGS.pid : 0) |
      (dump.ipcNs ? NS_CLONE_FLAGS.ipc : 0) |
      (dump.netns && !opts.joinNet ? NS_CLONE_FLAGS.net : 0) | (mounts ? NS_CLONE_FLAGS.mnt : 0),
    timeInside ? undefined : clocks,
    opts.joinNet,
    opts.sibling,
    dump.userns,
  );
  // The tasks' real ids, as they are made (the images' own without a PID namespace).
  const pids = new RealPids(dump.pidNs);
  pids.set(pid, made.pid);
  dump.rootPid = made.pid;
  const tForked = performance.now();
  const procs: Restoring[] = [];
  // The session helpers made (restore/sessions.ts), until the tree is made.
  const sessions: Sessions = { plan: sessionPlan, helpers: [], groups: new Set() };
  let pidfileWritten = false;
  const checkpoint = async (stage: string) => {
    // The last before the tree is let go sees every signal sent so far.
    await checkInterrupt(opts.signal, stage === "resume");
    if (opts.faultInject === stage) throw new RestoreError(`Fault injected at ${stage}`);
  };
  try {
    // The cgroups the mode makes (removed again should the restore fail), before any task
    // moves into them.
    cgroups.make();
    // 3. SEIZE, and the tree below the root
    const rootSeized = SeizedTask.seize(made.pid, traceOptions(dump));
    procs.push({ task: rootTask, seized: rootSeized, threads: [] });
    // In its own user namespace, the root becomes that namespace's root (its ids were criu's,
    // which the namespace does not map): what it makes, and what criu makes there for it (a
    // tmpfs's files, by tar in the namespace), belongs to ids the namespace knows. Its own ids
    // come last, as everyone's. Dumpable again (a change of ids clears it), its /proc files
    // are its own.
    if (dump.userns) {
      inTask(rootSeized, (rs) => {
        rs.check(NR.setresgid, "setresgid(0)", 0, 0, 0);
        rs.check(NR.setresuid, "setresuid(0)", 0, 0, 0);
        rs.check(NR.prctl, "prctl(PR_SET_DUMPABLE)", 4, /* PR_SET_DUMPABLE */ 1);
        // Its time namespace, made there (it belongs to the user namespace), its clocks set
        // before the root joins it (a time namespace takes offsets only while empty).
        if (timeInside) enterTimeNamespace(rs, timeInside);
      });
    }
    // The tree's own UTS namespace gets its names before any task is made in it.
    if (dump.uts) inTask(rootSeized, (rs) => setUtsNames(rs, dump.uts!));
    // Its own IPC namespace gets its objects before any task's memory may attach them.
    if (dump.ipcNs) inTask(rootSeized, (rs) => restoreIpcNamespace(rs, dump.ipcNs!));
    // Its own network namespace: devices, sysctls, addresses, routes, rules (by the tools);
    // its sockets and tun files are made in it.
    using _netns = dump.netns || opts.joinNet
      ? useNamespaceOf(made.pid, dump.userns && rootOf(dump.userns))
      : undefined;
    // Network namespaces nested in it (or in criu's), made empty by the root, which alone
    // exists, before its own is filled (a veth may join them); filled after it.
    using nets = new NetNamespaces(dump);
    nets.create(made.pid, (fn) => inTask(rootSeized, fn));
    let madeTunFiles = new Map<number, number>();
    if (dump.netns && !opts.joinNet) {
      // Its sysctls are written from here: ping_group_range's groups as criu sees them.
      const ping = "net.ipv4.ping_group_range";
      if (dump.userns) mapPingGroups(dump.netns, (g) => outsideGid(dump, g, ping));
      try {
        madeTunFiles = await restoreNetns(
          made.pid,
          dump.netns,
          opts.outsideLinks,
          // (Those of the nested namespaces make theirs with them: nested_netns.ts.)
          tunMakers(
            [...dump.files.values()].filter((f) => !dump.nestedNets.has(socketNsId(f) ?? -1)),
          ),
          nets.across(made.pid),
        );
      } catch (e) {
        if (e instanceof NetnsError) throw new RestoreError(e.message);
        throw e;
      }
    }
    await nets.fill(made.pid, opts.outsideLinks);
    // The namespaces are made: the caller's scripts set them up (an empty network namespace's
    // devices, say), as with criu. An empty one is locked meanwhile, as the dump left it; a new
    // one with connections too (as criu): none may speak before both its ends are back.
    const lockNew = dump.netns && !opts.joinNet &&
      (opts.emptyNet || tcpConnections(dump).length > 0);
    if (lockNew) await lockNetns(made.pid, tcp.conns.lock.method, pid);
    // So is a nested one with connections coming back.
    if (!tcp.close) await nets.lock(tcp.conns.lock.method, pid);
    // Only for a tree with namespaces of its own, as criu runs them.
    const ownNs = dump.userns || dump.uts || dump.pidNs || dump.ipcNs || dump.netns ||
      dump.cgroupNs || mounts;
    if (ownNs) await opts.actions?.("setup-namespaces", made.pid);
    // Its own cgroup namespace: unshared by the root where its roots were (cgns_prefix), before
    // it mounts the namespace's cgroups and moves on into its cgroups and makes its children.
    if (dump.cgroupNs) {
      cgroups.enterNamespaceRoots(made.pid, cgSetOf(rootTask.core));
      inTask(
        rootSeized,
        (rs) => rs.check(NR.unshare, "unshare(CLONE_NEWCGROUP)", NS_CLONE_FLAGS.cgroup),
      );
    }
    // Its own mount namespace: its mounts, made its root; criu reaches its files from now on
    // through the root task's root.
    // Read-only mounts are made so once the deleted files on them are made and gone again,
    // by the root task (when its root is the namespace's).
    let readOnlyLater: string[] = [];
    if (mounts) {
      const maps = parseMaps(readProcText(made.pid, "maps"));
      const rs = RemoteSyscalls.open(rootSeized, maps);
      const rootDir = dump.files.get(rootTask.fs.rootId)?.reg?.name ?? "/";
      try {
        readOnlyLater = await makeMountNamespace(
          rs,
          mounts,
          log,
          dump.premadePtys,
          rootDir === "/",
        );
      } finally {
        rs.close({ restoreState: false });
      }
      dump.fsRoot = `/proc/${made.pid}/root`;
    }
    using _nsGhosts = mounts ? new GhostSpecials(dump) : undefined;
    const mountNs = {
      rootId: rootTask.ids.mntNsId,
      holders: new Map([[rootTask.ids.mntNsId, pid]]),
      plans: nestedPlans,
    };
    if (ownNs) {
      await opts.actions?.("post-setup-namespaces", made.pid);
    }
    await checkpoint("fork");

    let pages = 0, compared = 0, kept = 0, forkMs = tForked - t0;
    for (const { entry, data } of dump.sysvShm.values()) {
      ensureSysvSegment(entry, data);
    }
    {
      using table = new FileTable(
        dump,
        opts.shellJob ?? false,
        tcp,
        opts.inheritFds,
        opts.orphanPtsMaster !== undefined,
      );
      table.adoptTunFiles(madeTunFiles);
      table.adoptTunFiles(nets.takeTunFiles());
      table.useNetNamespaces(nets);
      const shmem = new Map<bigint, number>();
      try {
        // Each task is made by its parent once the parent's memory is back (procs grows).
        // While one process's restorer fills its memory, the next one's files are made and
        // its restorer started, when the two share nothing that the order could change
        // (sideBySide); the first is then finished.
        let running: InsideRun | undefined;
        const finishRunning = () => {
          if (!running) return;
          const run = running;
          running = undefined;
          const done = endInside(run);
          run.rs.close({ restoreState: false });
          const p = run.proc;
          for (const [tid, core] of p.task.threadCores) {
            cgroups.moveThread(p.seized.pid, pids.real(tid), cgSetOf(core));
          }
          pages += done.pages;
          compared += done.compared;
          kept += done.kept;
          forkMs += done.forkMs;
        };
        for (let i = 0; i < procs.length || running;) {
          // The last one made finishes (it may make more).
          if (i === procs.length) {
            finishRunning();
            continue;
          }
          const p = procs[i++];
          if (p.task.zombie) {
            lazy?.skip(p.task.pstree.pid);
            continue;
          }
          await checkpoint("process");
          if (running && !sideBySide(p.task, running.proc.task, Boolean(mounts || lazy))) {
            finishRunning();
          }
          pages += makeShmem(dump, p.task, shmem);
          // Into its cgroups before it makes its children (they start in them); its threads
          // once made.
          cgroups.moveProcess(p.seized.pid, cgSetOf(p.task.core));
          const maps = parseMaps(readProcText(p.seized.pid, "maps"));
          const rs = RemoteSyscalls.open(p.seized, maps);
          // Into its own mount and network namespaces (nested in the tree's) before its files,
          // from its parent's, which it was made in (the root: its own).
          const parent = p === procs[0]
            ? rootTask
            : dump.tasks.find((t) => t.pstree.pid === p.task.pstree.ppid)!;
          if (mounts) {
            const now = parent.ids.mntNsId;
            p.readOnlyLater = enterMountNamespace(rs, dump, p.task, now, mountNs, made.pid, log);
            mountLateProcs(rs, dump, p.task, log);
          }
          nets.enter(rs, p.task, parent.ids.netNsId);
          const next = beginInside(
            rs,
            dump,
            table,
            shmem,
            p,
            procs,
            pids,
            maps,
            opts,
            sessions,
            log,
            lazy,
          );
          finishRunning();
          running = next;
        }
        // pidfds and /proc files of the tree's tasks, now that every task exists.
        for (const p of procs) {
          if (
            p.task.zombie ||
            !p.task.fds.some((f) => isLateFile(dump.files.get(f.id), dump, p.task))
          ) {
            continue;
          }
          const maps = parseMaps(readProcText(p.seized.pid, "maps"));
          const rs = RemoteSyscalls.open(p.seized, maps);
          try {
            restoreLateFiles(rs, dump, p.task, table);
          } finally {
            rs.close({ restoreState: false });
          }
        }
        table.addWatches();
        // Process groups, then the owners of files (an owner may name a group); zombies,
        // in their groups now, die.
        restoreGroups(dump, procs, pids, opts.shellJob ?? false);
        // The helpers go: the kernel hands the session helpers' tasks to their reapers.
        endSessionHelpers(sessions, procs);
        for (const fg of table.ptys.foregroundGroups()) {
          const leader = procs.find((p) => p.task.pstree.pid === fg.sid);
          if (!leader) throw new RestoreError(`Cannot restore ${fg.what}: no session ${fg.sid}`);
          inTask(leader.seized, (rs) => {
            const arena = new RemoteArena(leader.seized.pid, rs.scratch(4096), 4096);
            setForegroundGroup(rs, arena, fg.pgrp, fg.what);
          });
        }
        if (opts.shellJob) giveTerminal(dump, pids);
        // The new masters of ptys whose masters were outside: to the caller (runc's console).
        for (const master of table.ptys.orphanMasters()) await opts.orphanPtsMaster!(master);
        table.applyOwners((v) => pids.real(v));
        for (const p of procs) if (p.task.zombie) zombify(p.seized, p.task.core.tc!);
        for (const p of procs) {
          if (
            p.task.zombie ||
            !procs.some((z) => z.task.zombie && z.task.pstree.ppid === p.task.pstree.pid)
          ) continue;
          requeueIn(p);
        }
      } finally {
        for (const fd of shmem.values()) close(fd);
      }
    }
    if (readOnlyLater.length) await makeReadOnlyFromOutside(rootSeized.pid, readOnlyLater);
    await checkpoint("state");
    await opts.actions?.("post-restore", made.pid);
    markSysvRemoved([...dump.sysvShm.values()].map((x) => x.entry));
    if (dump.ipcNs) inTask(procs[0].seized, (rs) => removeMarkedSegments(rs, dump.ipcNs!));

    if (opts.pidfile) {
      Deno.writeTextFileSync(opts.pidfile, `${made.pid}`, { createNew: true, mode: 0o600 });
      pidfileWritten = true;
    }

    await checkpoint("resume");
    // 7. RESUME: connections out of repair mode and the network unlocked, then children and
    // threads first; zombies are left to exit.
    await nets.unlock(tcp.conns.lock.method, pid, log);
    tcp.conns.finishRestore();
    // A namespace joined holds the dump's lock of it (criu's way), and a new one the lock
    // taken above: taken away now.
    if ((opts.joinNet && dump.netns) || lockNew) {
      await unlockNetns(made.pid, tcp.conns.lock.method, pid, log);
    }
    // The caller's unlock of a namespace of the tree's own (RPC's network-unlock), as criu's.
    if (dump.netns) await reported(opts.actions, "network-unlock", made.pid, log);
    await reported(opts.actions, "pre-resume", made.pid, log);
    // The daemon brings the rest of the lazy pages in from now on.
    lazy?.finish();
    for (const p of [...procs].reverse()) {
      if (p.task.zombie) continue;
      for (const th of p.threads) release(th.seized, th.core, p.task.core);
      release(p.seized, p.task.core, p.task.core, opts.leaveStopped);
      // A stopped task stops again now, which tells its parent (CLD_STOPPED) a second time:
      // once it has, the parent (released after its children) gets its own signals back.
      const parent = procs.find((x) => x.task.pstree.pid === p.task.pstree.ppid);
      if (p.task.core.tc?.taskState === TASK_STATE.STOPPED && parent) {
        await waitStopped(p.seized.pid);
        requeueIn(parent);
      }
    }
    await made.release();
    log.info(`Tree of task ${pid} resumed: ${procs.length} processes`);
    // The links the dump gave deleted files go: the tasks hold them open again.
    const gone = new Set<reg_file_entry>();
    for (const [id, link] of dump.linked) {
      if (gone.has(link)) continue;
      gone.add(link);
      try {
        const mnt = linkMount(link, dump.files.get(id)?.reg);
        const ns = mnt === undefined ? undefined : mountNamespaces(dump).get(mnt);
        Deno.removeSync(hostPath(dump, link.name, ns));
      } catch {
        // removed already
      }
    }
    await reported(opts.actions, "post-resume", made.pid, log);
    const result: RestoreResult = {
      pid: made.pid,
      stats: {
        forkingUs: Math.round(forkMs * 1000),
        restoreUs: Math.round((performance.now() - t0) * 1000),
        pagesRestored: pages - kept,
        pagesCompared: compared,
        pagesSkippedCow: kept,
      },
    };
    writeStats(opts.workDir ?? opts.imagesDir, result.stats);
    if (!opts.detach) {
      result.exit = made.helper.status.then((s) => s.code);
    } else {
      await made.helper.status;
    }
    return result;
  } catch (e) {
    log.info(`Restore of task ${pid} failed; killing what was made`);
    if (pidfileWritten) Deno.removeSync(opts.pidfile!);
    tcp.conns.drop();
    for (const h of sessions.helpers) h.seized.sendKill();
    for (const p of procs) {
      for (const t of [p.seized, ...p.threads.map((x) => x.seized)]) t.sendKill();
    }
    // The helper, subreaper of the tree, reaps meanwhile what comes to it: the init of a nested
    // PID namespace exits only once every task there is reaped, some of them by the helper.
    await made.abandon();
    for (const h of sessions.helpers) h.seized.reap();
    for (const p of [...procs].reverse()) {
      for (const th of p.threads) th.seized.reap();
      p.seized.reap();
    }
    try {
      Deno.kill(made.pid, "SIGKILL");
    } catch {
      // gone
    }
    await made.abandon();
    await made.helper.status.catch(() => {});
    // The cgroups made for the tree go with it.
    cgroups.removeMade();
    throw e;
  }
}

/**
 * Puts the task of `rs` (single-threaded, in its own user namespace) into a new time namespace
 * of that user namespace whose clocks read `clocks` now: unshared for its children, its offsets
 * written, then joined (setns through /proc/self/ns/time_for_children).
 */
function enterTimeNamespace(rs: RemoteSyscalls, clocks: TimeNamespaceClocks): void {
  const arena = new RemoteArena(rs.task.pid, rs.scratch(4096), 4096);
  rs.check(NR.unshare, "unshare(CLONE_NEWTIME)", NS_CLONE_FLAGS.time);
  const text = new TextEncoder().encode(timeOffsets(clocks));
  const offsets = arena.cstr("/proc/self/timens_offsets");
  const fd = Number(rs.check(NR.open, "timens_offsets", offsets, O.WRONLY));
  try {
    rs.check(NR.write, "timens_offsets", fd, arena.put(text), text.length);
  } finally {
    rs.call(NR.close, fd);
  }
  const children = arena.cstr("/proc/self/ns/time_for_children");
  const ns = Number(rs.check(NR.open, "time_for_children", children, O.RDONLY));
  try {
    rs.check(NR.setns, "setns(CLONE_NEWTIME)", ns, NS_CLONE_FLAGS.time);
  } finally {
    rs.call(NR.close, ns);
  }
}

/**
 * Where the tree's network namespace is joined when the dump named it external: the descriptor
 * the caller gave for its key (`--inherit-fd fd[N]:KEY`, as runc gives its container's).
 */
function externalNet(
  dump: DumpImages,
  inheritFds: ReadonlyMap<string, number> | undefined,
): string | undefined {
  const key = dump.netns?.external;
  if (key === undefined) return undefined;
  const fd = inheritFds?.get(key);
  if (fd === undefined) {
    throw new RestoreError(
      `The tree's network namespace was dumped as external (${key}): give it with ` +
        `--inherit-fd fd[N]:${key} or --join-ns net:PATH`,
    );
  }
  return `/proc/${Deno.pid}/fd/${fd}`;
}

/** Runs the action scripts of a point after which failures can only be reported (as criu). */
async function reported(
  actions: ActionHook | undefined,
  action: ScriptAction,
  pid: number,
  log: Logger,
): Promise<void> {
  try {
    await actions?.(action, pid);
  } catch (e) {
    log.error((e as Error).message);
  }
}

/**
 * The shared anonymous memory objects `task` maps that no earlier task made: made here (a
 * shmem object, as mmap makes one), sized for every task that maps them, filled with their
 * dumped pages, and kept in `shmem`; every mapping is then a mapping of one of them, at its
 * offset. Returns the pages written.
 */
function makeShmem(dump: DumpImages, task: TaskImages, shmem: Map<bigint, number>): number {
  let pages = 0;
  if (task.zombie) return 0;
  for (const v of task.mm.vmas) {
    // A System V attach (criu marks it shared anonymous memory too) is its segment's.
    if (!(v.status & VMA.ANON_SHARED) || v.status & VMA.AREA_SYSVIPC || shmem.has(v.shmid)) {
      continue;
    }
    let size = 0n;
    for (const t of dump.tasks) {
      for (const w of t.zombie ? [] : t.mm.vmas) {
        if (
          w.status & VMA.ANON_SHARED && !(w.status & VMA.AREA_SYSVIPC) && w.shmid === v.shmid &&
          w.pgoff + w.end - w.start > size
        ) {
          size = w.pgoff + w.end - w.start;
        }
      }
    }
    const what = `shared memory ${v.shmid}`;
    const huge = v.flags & (MAP.HUGETLB | (0x3f << 26));
    if (huge) {
      // hugetlbfs takes whole huge pages, and no write(2): filled through a mapping here.
      const page = 1n << BigInt((v.flags >>> 26) & 0x3f);
      size = (size + page - 1n) / page * page;
    }
    const fd = anonSharedMemory(size, what, huge);
    shmem.set(v.shmid, fd);
    pages += huge
      ? withSharedMapping(
        fd,
        size,
        what,
        (bytes) => writeShmemImage(dump, v.shmid, fd, what, bytes),
      )
      : writeShmemImage(dump, v.shmid, fd, what);
  }
  return pages;
}

/**
 * POSIX timers, with their ids: PR_TIMER_CREATE_RESTORE_IDS makes timer_create take the id it
 * is given. Made after the threads, which SIGEV_THREAD_ID timers target.
 */
function restorePosixTimers(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  dump: DumpImages,
  task: TaskImages,
): void {
  const posix = task.core.tc?.timers?.posix ?? [];
  if (!posix.length) return;
  const pid = rs.task.pid;
  const PR_TIMER_CREATE_RESTORE_IDS = 77;
  const check = (ret: bigint, what: string) => {
    if (ret < 0n) throw new RestoreError(`Cannot restore ${what} of task ${pid}: errno ${-ret}`);
  };
  check(
    rs.call(NR.prctl, PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0),
    "POSIX timer ids (PR_TIMER_CREATE_RESTORE_IDS)",
  );
  try {
    for (const p of posix) {
      arena.reset();
      const sev = new Uint8Array(64);
      const v = new DataView(sev.buffer);
      v.setBigUint64(0, p.sivalPtr, true);
      v.setInt32(8, p.siSigno, true);
      v.setInt32(12, p.itSigevNotify, true);
      const tid = p.notifyThreadId ?? 0;
      v.setInt32(16, pidNamespacesOf(dump).seenBy(task, tid, `POSIX timer ${p.itId}`), true);
      const sevAt = arena.put(sev);
      const idAt = arena.put(new Uint8Array(new Int32Array([p.itId]).buffer));
      check(rs.call(NR.timer_create, p.clockId, sevAt, idAt), `POSIX timer ${p.itId}`);
      const got = new Int32Array(1);
      readRemote(pid, idAt, new Uint8Array(got.buffer));
      if (got[0] !== p.itId) {
        throw new RestoreError(`POSIX timer ${p.itId} of task ${pid} came back as ${got[0]}`);
      }
      if (p.vsec || p.vnsec) {
        const spec = arena.words([p.isec, p.insec, p.vsec, p.vnsec]);
        check(rs.call(NR.timer_settime, p.itId, 0, spec, 0), `POSIX timer ${p.itId}`);
      }
    }
  } finally {
    rs.call(NR.prctl, PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0);
  }
}

/** Registers, FPU state and signal mask of one thread from its core; then it runs. */
function release(
  seized: SeizedTask,
  core: core_entry,
  leaderCore: core_entry,
  leaveStopped = false,
): void {
  const ti = core.threadInfo!;
  const template = ptraceGetXstate(seized.pid);
  const leader = core === leaderCore;
  seized.release(
    gpregsWords(ti.gpregs!),
    xsaveArea(ti.fpregs!, template),
    // A thread's own mask when it has one (criu keeps the leader's in tc only).
    core.threadCore && isFieldSet(core.threadCore, thread_core_entrySchema.field.blkSigset)
      ? core.threadCore.blkSigset
      : leaderCore.tc!.blkSigset,
    leader && leaderCore.tc!.taskState === TASK_STATE.STOPPED
      ? leaderCore.tc!.stopSigno || SIGSTOP
      : leader && leaveStopped
      ? SIGSTOP
      : 0,
  );
}

/**
 * Makes the children of `parent` from inside it (clone3 with their PIDs), once its memory is
 * back: they start with it, and each child makes its own children in turn. A session leader
 * calls setsid() before it forks, so that its children are born in its session; a zombie
 * exits once process groups are set (it may have to join one).
 */
function createChildren(
  dump: DumpImages,
  parent: Restoring,
  procs: Restoring[],
  real: RealPids,
  rs: RemoteSyscalls,
  arena: RemoteArena,
  ptys: PtyTable,
  sessions: Sessions,
  log: Logger,
): void {
  const pid = parent.task.pstree.pid;
  const ps = parent.task.pstree;
  const children = dump.tasks.filter((t) =>
    t.pstree.ppid === pid && t !== dump.tasks[0] && !sessions.plan.byHelper.has(t.pstree.pid)
  );
  // Live children first: a zombie must not be reaped by anyone before its parent resumes. The
  // init of a nested PID namespace before the others, who may be made in its namespace.
  const nested = pidNamespacesOf(dump);
  const rank = (t: TaskImages) => Number(t.zombie) * 2 + Number(!nested.isInit(t));
  children.sort((a, b) => rank(a) - rank(b));
  const make = (child: TaskImages) => {
    const cpid = child.pstree.pid;
    ensureGroup(dump, child, rs, arena, parent.seized, real, sessions);
    arena.reset();
    // A descriptor table or fs info shared with the parent is shared from birth.
    const CLONE_FS = 0x200n, CLONE_FILES = 0x400n;
    const pids = parent.task.ids, cids = child.ids;
    const share = child.zombie || !pids ? 0n : (cids.filesId === pids.filesId ? CLONE_FILES : 0n) |
      (cids.fsId === pids.fsId ? CLONE_FS : 0n);
    const plan = nested.plan(rs, parent.task, cpid);
    const seized = makeTask(rs, arena, cpid, `Task ${cpid}`, real, { share, pids: plan });
    nested.made(child, seized.pid);
    procs.push({ task: child, seized, threads: [] });
    log.debug(`task ${cpid} made by ${pid}`);
    // A zombie makes no children: a session leader leads its session again at once, and
    // makes its session's helpers now.
    if (child.zombie && child.pstree.sid === cpid) {
      const made = procs[procs.length - 1];
      inTask(seized, (zs) => {
        zs.check(NR.setsid, `task ${cpid}: setsid`);
        const zarena = new RemoteArena(seized.pid, zs.scratch(4096), 4096);
        for (const h of sessions.plan.helpers) {
          if (h.maker === cpid) {
            makeSessionHelper(dump, made, h, zs, zarena, procs, real, sessions, log);
          }
        }
      });
    }
  };
  // Those that stayed in the session it was born in: made before its setsid().
  const early = sessions.plan.early.get(pid) ?? [];
  for (const child of children) if (early.includes(child.pstree.pid)) make(child);
  // A session leader is one again, the root of a shell job too (as criu does): its terminal
  // is then no longer its controlling one, and it reads it without job control.
  if (ps.sid === pid) {
    const ret = rs.call(NR.setsid);
    if (ret < 0n) throw new RestoreError(`Cannot make task ${pid} a session leader: errno ${-ret}`);
    // Its controlling terminal before its children, who inherit it.
    arena.reset();
    ptys.takeControllingTerminal(rs, arena, pid);
  }
  for (const child of children) if (!early.includes(child.pstree.pid)) make(child);
  for (const h of sessions.plan.helpers) {
    if (h.maker === pid) makeSessionHelper(dump, parent, h, rs, arena, procs, real, sessions, log);
  }
  nested.finish(rs, parent.task);
}

/**
 * The helpers of a restore: the session plan, the session and group helpers made so far with
 * the tasks that made them, and the process groups helpers lead.
 */
interface Sessions {
  plan: SessionPlan;
  /** Each helper, the task that made it, and its id as that task sees it (to reap it). */
  helpers: { seized: SeizedTask; maker: SeizedTask; virt: number }[];
  groups: Set<number>;
}

/**
 * A group helper, before `child` is made by the task of `rs` (`maker`, in the session the
 * child is born in): when the child's process group has no leader in the images, a task with
 * the group's id made its leader holds it until the child joins it (restoreGroups); it goes
 * with the session helpers. Made now, before the tasks take on their credentials.
 */
function ensureGroup(
  dump: DumpImages,
  child: TaskImages,
  rs: RemoteSyscalls,
  arena: RemoteArena,
  maker: SeizedTask,
  real: RealPids,
  sessions: Sessions,
): void {
  const { pid, pgid } = child.pstree;
  if (pgid === pid || sessions.groups.has(pgid) || dump.tasks.some((t) => t.pstree.pid === pgid)) {
    return;
  }
  arena.reset();
  const seized = makeTask(rs, arena, pgid, `Group helper ${pgid}`, real, { quiet: true });
  sessions.helpers.push({ seized, maker, virt: pgid });
  sessions.groups.add(pgid);
  inTask(seized, (hs) => hs.check(NR.setpgid, `process group ${pgid}`, 0, 0));
}

/**
 * Makes session helper `h` from `maker` (the task of `rs`): the session's leader again when
 * it is gone (its PID, setsid()), then the tasks it makes, born in the session.
 */
function makeSessionHelper(
  dump: DumpImages,
  maker: Restoring,
  h: SessionHelper,
  rs: RemoteSyscalls,
  arena: RemoteArena,
  procs: Restoring[],
  real: RealPids,
  sessions: Sessions,
  log: Logger,
): void {
  arena.reset();
  const what = `Session helper ${h.pid ?? `of session ${h.sid}`}`;
  const { seized, virt } = makeTaskWithId(rs, arena, h.pid, what, h.pid ? real : undefined, {
    quiet: true,
  });
  sessions.helpers.push({ seized, maker: maker.seized, virt });
  // Its session's leader again, it leads the session's process group too.
  if (h.pid) sessions.groups.add(h.pid);
  inTask(seized, (hs) => {
    if (h.pid) hs.check(NR.setsid, `${what}: setsid`);
    const harena = new RemoteArena(seized.pid, hs.scratch(4096), 4096);
    for (const m of h.members) {
      const task = dump.tasks.find((t) => t.pstree.pid === m)!;
      ensureGroup(dump, task, hs, harena, seized, real, sessions);
      harena.reset();
      procs.push({ task, seized: makeTask(hs, harena, m, `Task ${m}`, real), threads: [] });
      log.debug(`task ${m} made by session helper ${seized.pid} (session ${h.sid})`);
    }
  });
}

/**
 * The session and group helpers go (killed, reaped by their makers: they were made without an
 * exit signal); the kernel hands the tasks they made to their reapers. Then the other
 * subreapers become so.
 */
function endSessionHelpers(sessions: Sessions, procs: Restoring[]): void {
  // Those made by a helper first, while it can reap them.
  for (const { seized, maker, virt } of sessions.helpers.splice(0).reverse()) {
    seized.kill();
    // By the id its maker knows it by (in the tree's PID namespace, not criu's).
    const ret = inTask(maker, (rs) => rs.call(NR.wait4, virt, 0, 0x40000000, /* __WALL */ 0));
    if (ret !== BigInt(virt)) {
      throw new RestoreError(
        `Cannot reap helper ${virt} in task ${maker.pid}: ${errnoName(Number(-ret))}`,
      );
    }
  }
  for (const p of procs) {
    if (p.task.zombie || !p.task.core.tc?.childSubreaper || !subreaperLater(sessions, p.task)) {
      continue;
    }
    inTask(p.seized, makeSubreaper);
  }
}

/** Whether task `task` becomes a subreaper only once the session helpers went. */
function subreaperLater(sessions: Sessions, task: TaskImages): boolean {
  return sessions.plan.helpers.length > 0 &&
    !sessions.plan.earlySubreapers.has(task.pstree.pid);
}

/**
 * Lets a just-made child die the way the dumped zombie died: with its exit code, or killed by
 * its signal (delivered through ptrace with the default action, dumpable off so that no core
 * file is written; the dump refuses a zombie that had dumped core).
 */
function zombify(seized: SeizedTask, tc: NonNullable<core_entry["tc"]>): void {
  const rs = RemoteSyscalls.open(seized, parseMaps(readProcText(seized.pid, "maps")));
  const scratch = rs.scratch(4096);
  const status = tc.exitCode;
  const sig = status & 0x7f;
  const PR_SET_NAME = 15, PR_SET_DUMPABLE = 4;
  // Its name, in the scratch page it inherited from its parent.
  writeRemote(seized.pid, scratch, cString(tc.comm.slice(0, 15)));
  rs.call(NR.prctl, PR_SET_NAME, scratch);
  try {
    if (!sig) {
      rs.call(NR.exit_group, (status >> 8) & 0xff);
    } else {
      rs.call(NR.prctl, PR_SET_DUMPABLE, 0);
      writeRemote(seized.pid, scratch, new Uint8Array(32)); // SIG_DFL, no flags, empty mask
      rs.call(NR.rt_sigaction, sig, scratch, 0, 8);
      rs.close({ restoreState: false });
      // Sent for real, then let through at its delivery stop (PTRACE_CONT injects a signal
      // only there).
      ptraceSetSigmask(seized.pid, 0n);
      kill(seized.pid, sig);
      tryPtraceCont(seized.pid); // SIGKILL needs no delivery: the task may be gone already
      for (let i = 0; i < 8; i++) {
        const st = waitPid(seized.pid);
        if (st.signaled && st.termSig === sig) break;
        if (st.exited || st.signaled) {
          throw new RestoreError(`Zombie ${seized.pid} did not die of signal ${sig}`);
        }
        tryPtraceCont(seized.pid, st.stopSig === sig ? sig : 0);
      }
    }
  } catch (e) {
    if (!(e instanceof NoSuchTaskError)) throw e;
  }
  seized.forget();
}

/**
 * A shell job whose root led its process group, but not its session, is made the foreground
 * group of the restorer's terminal before it runs, as criu does (else its first read of the
 * terminal stops it: SIGTTIN); unless the images say another group had the terminal.
 */
function giveTerminal(dump: DumpImages, pids: RealPids): void {
  const root = dump.tasks[0].pstree;
  if (root.sid === root.pid || root.pgid !== root.pid) return;
  if (dump.ttys.length && dump.ttys.every((t) => t.pgrp && t.pgrp !== root.pgid)) return;
  const fd = openHere(ourTerminal(), O.RDWR | O.NOCTTY | O.CLOEXEC);
  try {
    const TIOCSPGRP = 0x5410;
    ioctl(
      fd,
      TIOCSPGRP,
      new Uint8Array(new Int32Array([pids.real(root.pid)]).buffer),
      "the terminal",
    );
  } finally {
    close(fd);
  }
}

/** Waits (a second at most) until task `pid` sits in a group stop. */
async function waitStopped(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (parseStat(readProcText(pid, "stat")).state === "T") return;
    await sleep(5);
  }
  throw new RestoreError(`Task ${pid} did not stop again`);
}

/** PTRACE_CONT that ignores a task gone meanwhile. */
function tryPtraceCont(pid: number, sig = 0): void {
  try {
    ptraceCont(pid, sig);
  } catch {
    // gone: its death is what waitpid reports next
  }
}

/** Runs `fn` with syscalls injected into `seized`, at its mappings as they are now. */
function inTask<T>(seized: SeizedTask, fn: (rs: RemoteSyscalls) => T): T {
  const rs = RemoteSyscalls.open(seized, parseMaps(readProcText(seized.pid, "maps")));
  try {
    return fn(rs);
  } finally {
    rs.close({ restoreState: false });
  }
}

/** Gives process `p` back its dumped pending signals, after the restore queued others. */
function requeueIn(p: Restoring): void {
  inTask(p.seized, (rs) => {
    requeueSignals(rs, new RemoteArena(p.seized.pid, rs.scratch(4096), 4096), p.task);
  });
}

/**
 * Puts every task in its process group (leaders first): groups whose leader is gone were
 * made by helpers as their tasks were (see ensureGroup).
 */
function restoreGroups(
  dump: DumpImages,
  procs: Restoring[],
  real: RealPids,
  shellJob: boolean,
): void {
  const root = procs[0].task.pstree;
  if (
    !shellJob && root.pgid !== root.pid && !procs.some((p) => p.task.pstree.pid === root.pgid)
  ) {
    throw new RestoreError(
      `Cannot restore task ${root.pid}: its process group ${root.pgid} has no leader in the ` +
        `images; restore it as a shell job (-j)`,
    );
  }
  const order = [
    ...procs.filter((p) => p.task.pstree.pgid === p.task.pstree.pid),
    ...procs.filter((p) => p.task.pstree.pgid !== p.task.pstree.pid),
  ];
  for (const p of order) {
    const ps = p.task.pstree;
    const cur = parseStat(readProcText(p.seized.pid, "stat"));
    if (cur.pgid === real.real(ps.pgid)) continue;
    if (p === procs[0] && shellJob && ps.pgid !== ps.pid) continue;
    inTask(p.seized, (rs) => {
      const pgid = ps.pgid === ps.pid
        ? 0
        : pidNamespacesOf(dump).seenBy(p.task, ps.pgid, `process group ${ps.pgid}`);
      const ret = rs.call(NR.setpgid, 0, pgid);
      if (ret < 0n) {
        throw new RestoreError(
          `Cannot put task ${ps.pid} in process group ${ps.pgid}: errno ${-ret}`,
        );
      }
    });
  }
}

/**
 * A working directory in /proc/N of a task that is gone: the task makes a child N for a
 * moment, goes into /proc/N, and reaps it; the directory stays, unhashed, as it was.
 */
function enterDeadProc(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  dump: DumpImages,
  task: TaskImages,
): void {
  const dead = dump.deadProcs.get(task.fs.cwdId);
  if (dead === undefined) return;
  const pid = task.pstree.pid;
  arena.reset();
  const helper = makeTask(rs, arena, dead, `Task ${dead} for /proc/${dead}`, undefined, {
    quiet: true,
  });
  try {
    const ret = rs.call(NR.chdir, arena.cstr(`/proc/${dead}`));
    if (ret < 0n) {
      throw new RestoreError(`Cannot enter /proc/${dead} in task ${pid}: errno ${-ret}`);
    }
  } finally {
    helper.kill();
    rs.call(NR.wait4, dead, 0, 0x40000000, /* __WALL */ 0);
  }
}

/**
 * The ptrace options of the tasks a restore makes: the root's, which every task made from it
 * inherits. Until they are released, the tasks die with us (EXITKILL): a killed restore leaves
 * nothing half-made. Under seccomp, what we do in a task once its filters are back goes
 * unfiltered.
 */
function traceOptions(dump: DumpImages): number {
  const seccomp = dump.tasks.some((t) =>
    [t.core, ...t.threadCores.values()].some((c) => c.threadCore?.seccompMode)
  );
  return PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACEFORK | PTRACE_O.TRACECLONE | PTRACE_O.EXITKILL |
    (seccomp ? PTRACE_O.SUSPEND_SECCOMP : 0);
}

/**
 * Waits until the thread the restorer started to fill memory beside it (its state at `helper`
 * in task `pid`: struct helper, parasite/restorer.c) is gone and its id free: the restorer saw
 * it exit, which it does before the kernel lets its id go. False when none started (clone
 * refused: the restorer filled it all).
 */
function waitThreadGone(pid: number, helper: RemotePtr): boolean {
  const word = new Int32Array(2);
  readRemote(pid, helper, new Uint8Array(word.buffer));
  const tid = word[1];
  if (tid <= 0) return false;
  const end = performance.now() + 2000;
  while (tryTgkill(pid, tid, 0) !== -errno.ESRCH) {
    if (performance.now() > end) {
      throw new RestoreError(`The thread ${tid} that filled task ${pid}'s memory did not go`);
    }
    nap(0.05);
  }
  return true;
}

/**
 * Whether process `next` may be made ready while the restorer of `running` fills its memory:
 * they share no memory, descriptor table, fs or signal handlers, and the tree has neither a
 * mount namespace of its own nor lazy pages (`ordered`), whose steps keep the processes'
 * order.
 */
function sideBySide(next: TaskImages, running: TaskImages, ordered: boolean): boolean {
  if (ordered) return false;
  const a = next.ids, b = running.ids;
  return a.vmId !== b.vmId && a.filesId !== b.filesId && a.fsId !== b.fsId &&
    a.sighandId !== b.sighandId;
}

/** A process whose restorer runs ({@link beginInside}), and what the rest needs. */
interface InsideRun {
  rs: RemoteSyscalls;
  dump: DumpImages;
  table: FileTable;
  proc: Restoring;
  procs: Restoring[];
  pids: RealPids;
  opts: RestoreOptions;
  sessions: Sessions;
  log: Logger;
  lazy: LazyPagesLink | undefined;
  area: RemotePtr;
  arena: RemoteArena;
  room: RestorerRoom;
  gap: bigint;
  ops: Op[];
  fds: ServiceFds;
  split: boolean;
  traced: number;
  tMem: number;
  helperOff: number;
}

/**
 * Stages 4 and 5 inside the seized process up to its memory: its files, and the restorer
 * started on the plan of its memory, which it fills while criu goes on; {@link endInside}
 * does the rest.
 */
function beginInside(
  rs: RemoteSyscalls,
  dump: DumpImages,
  table: FileTable,
  shmem: Map<bigint, number>,
  proc: Restoring,
  procs: Restoring[],
  pids: RealPids,
  maps: ReturnType<typeof parseMaps>,
  opts: RestoreOptions,
  sessions: Sessions,
  log: Logger,
  lazy: LazyPagesLink | undefined,
): InsideRun {
  const pid = rs.task.pid;
  const task = proc.task;
  const code = decodeBase64(BLOBS.restorer);

  // The restorer area: code, args, ops, stack, arena, and room to park the vDSO block.
  const specials = maps.filter((m) => ["[vdso]", "[vvar]", "[vvar_vclock]"].includes(m.path));
  const parkSize = specials.length
    ? specials.reduce((a, m) => (m.end > a ? m.end : a), 0n) -
      specials.reduce((a, m) => (m.start < a ? m.start : a), specials[0].start)
    : 0n;
  // Ops are planned after the fds exist; size the area for the worst case first.
  const maxOps = (maps.length + task.mm.vmas.length) * 10 + task.pagemap.length * 4 + 16;
  const helperOff = AREA_ARGS + 64;
  const opsOff = helperOff + HELPER_STATE_ROOM;
  const stackOff = Math.ceil((opsOff + maxOps * OP_SIZE) / 16) * 16;
  const helperStackOff = stackOff + STACK_SIZE;
  const arenaOff = helperStackOff + STACK_SIZE;
  const areaSize = BigInt(Math.ceil((arenaOff + ARENA_SIZE) / 4096) * 4096);
  const reserved = areaSize + parkSize + 0x10000n;
  const gap = findGap(occupied(task, maps), reserved);
  const area = rs.scratch(Number(areaSize), true, remotePtr(gap));
  const arena = new RemoteArena(pid, remoteAdd(area, arenaOff), ARENA_SIZE);
  log.debug(`restorer area at 0x${gap.toString(16)} (${areaSize} bytes)`);
  writeRemote(pid, remoteAdd(area, AREA_CODE), code);
  // Batches of calls run in the restorer, in its ops' room (free between its runs).
  // The threads' too, one at a time, while the leader waits in its stop.
  const room: RestorerRoom = {
    code: remoteAdd(area, AREA_CODE),
    args: remoteAdd(area, AREA_ARGS),
    ops: remoteAdd(area, opsOff),
    opsBytes: maxOps * OP_SIZE,
    stackTop: remoteAdd(area, stackOff + STACK_SIZE),
    timeoutMs: BLOB_TIMEOUT_MS,
  };
  rs.batchWith(restorerCalls(rs, room));

  // 4. FILES
  // A descriptor table shared with an earlier process (CLONE_FILES) is filled already.
  const sharedTable = dump.tasks.some((t) =>
    t !== task && !t.zombie && t.ids.filesId === task.ids.filesId &&
    dump.tasks.indexOf(t) < dump.tasks.indexOf(task)
  );
  table.forTask(task);
  let deadArena: RemoteArena | undefined;
  table.deadPid = (n, open) => {
    deadArena ??= new RemoteArena(pid, rs.scratch(4096), 4096);
    deadArena.reset();
    const what = `Task ${n} for /proc/${n}`;
    const helper = makeTask(rs, deadArena, n, what, undefined, { quiet: true });
    try {
      return open();
    } finally {
      helper.kill();
      rs.call(NR.wait4, n, 0, 0x40000000, /* __WALL */ 0);
    }
  };
  const fds = installFiles(rs, arena, table, dump, task, shmem, sharedTable, (v) => pids.real(v));
  table.deadPid = undefined;
  if (opts.faultInject === "files") throw new RestoreError("Fault injected at files");

  // 5. MEMORY: a child keeps what it shares with its parent (made by it, from its memory).
  const parent = procs.find((p) => p.task.pstree.pid === task.pstree.ppid && p !== proc);
  const inherited = parent ? inheritedVmas(task, parent.task, maps) : new Set<vma_entry>();
  for (const v of inherited) {
    log.debug(`task ${pid} keeps ${v.start.toString(16)}-${v.end.toString(16)} of its parent`);
  }
  const ops = planMemory({
    inherited,
    buffer: {
      start: BigInt(remoteAdd(area, arenaOff)),
      end: BigInt(remoteAdd(area, arenaOff)) + BigInt(ARENA_SIZE),
    },
    task,
    maps,
    area: { start: gap, end: gap + areaSize },
    tempBase: gap + areaSize + 0x8000n,
    mapFds: fds.maps,
    pagesFds: fds.pages,
    shmemFds: fds.shmem,
    lazy: lazy && { parents: lazy.parents },
    helper: {
      stackTop: BigInt(remoteAdd(area, helperStackOff + STACK_SIZE)),
      state: BigInt(remoteAdd(area, helperOff)),
    },
    source: {
      slot: BigInt(remoteAdd(area, helperOff + SOURCE_SLOT)),
      reservedEnd: gap + reserved,
    },
  });
  if (opts.faultInject === "copy-source-taken") {
    // The source's place taken (by the restorer area): no copy can be had, every fill is read.
    for (const op of ops) if (op.code === OP.SOURCE_OPEN) op.args[2] = gap;
  }
  if (ops.length > maxOps) throw new RestoreError(`Too many restorer operations (${ops.length})`);
  if (log.level >= 4) { for (const op of ops) log.debug(`Task ${pid}: ${op.what}`); }
  const tMem = performance.now();
  // A thread the blob starts to fill memory beside it (OP.SPAWN) is not to be traced.
  const split = ops.some((op) => op.code === OP.SPAWN);
  const traced = split ? traceOptions(dump) : 0;
  if (split) ptraceSetOptions(pid, traced & ~UNTRACED_HELPER);
  try {
    startRestorer(rs, room, encodeOps(ops), ops.length);
  } catch (e) {
    if (split) ptraceSetOptions(pid, traced);
    throw e;
  }
  return {
    rs,
    dump,
    table,
    proc,
    procs,
    pids,
    opts,
    sessions,
    log,
    lazy,
    area,
    arena,
    room,
    gap,
    ops,
    fds,
    split,
    traced,
    tMem,
    helperOff,
  };
}

/**
 * The rest of stages 5 and 6 once the restorer {@link beginInside} started is done: its
 * children, its state, its threads.
 */
function endInside(
  run: InsideRun,
): { pages: number; compared: number; kept: number; forkMs: number } {
  const { rs, dump, table, proc, procs, pids, opts, sessions, log, lazy } = run;
  const { area, arena, room, gap, ops, fds, split, traced, tMem, helperOff } = run;
  const pid = rs.task.pid;
  const task = proc.task;
  let result;
  try {
    result = endRestorer(rs, room);
  } finally {
    if (split) ptraceSetOptions(pid, traced);
  }
  // Its id free again before any task is made (one may be given that id).
  if (split && !waitThreadGone(pid, remoteAdd(area, helperOff))) {
    log.debug(`Task ${pid}: no thread to fill memory beside the restorer, which filled it alone`);
  }
  if (result.failed >= 0n) {
    const op = ops[Number(result.failed)];
    throw new RestoreError(
      `Cannot restore memory of task ${pid}: ${op.what} failed with errno ${-result.result}`,
    );
  }
  const pages = task.pagemap.reduce((n, e) => n + e.nrPages, 0);
  const [compared, kept] = [Number(result.compared), Number(result.kept)];
  log.info(
    `Memory of task ${pid} restored: ${pages} pages (${kept} of ${compared} compared shared ` +
      `with the parent) in ${(performance.now() - tMem).toFixed(1)} ms`,
  );
  if (opts.faultInject === "memory") throw new RestoreError("Fault injected at memory");

  // Syscalls now run at a `syscall` instruction of the restored code.
  const restored = parseMaps(readProcText(pid, "maps")).filter((m) => m.start !== gap);
  rs.retarget(restored);
  makeRingsInMemory(rs, arena, dump, task, fds);
  mapRings(rs, task, fds.rings);
  registerRingBuffers(rs, arena, dump, task, fds.rings);
  // The children, from this memory: what they share with it stays shared.
  const tFork = performance.now();
  createChildren(dump, proc, procs, pids, rs, arena, table.ptys, sessions, log);
  const forkMs = performance.now() - tFork;
  // AIO contexts once the children are made (they would have the rings' mappings, not the
  // contexts).
  restoreAioRings(rs, arena, task);

  // 6. STATE
  // Guard regions, once the children are made (fork would pass them on where the images may
  // want pages).
  for (const g of task.guards) {
    const MADV_GUARD_INSTALL = 102;
    const ret = rs.call(NR.madvise, g.start, g.end - g.start, MADV_GUARD_INSTALL);
    if (ret < 0n) {
      throw new RestoreError(
        `Cannot restore the guard region at ${g.start.toString(16)} of task ${pid}: ` +
          errnoName(Number(-ret)),
      );
    }
  }
  // Its lazy pages to the daemon, once it has made its children (a fork would report to a
  // userfaultfd nobody reads yet) and while it may still make a userfaultfd (its credentials
  // come last).
  lazy?.handOver(rs, arena, task);
  restoreTaskState(rs, arena, dump, task, fds, log, subreaperLater(sessions, task));
  enterDeadProc(rs, arena, dump, task);
  restoreThreadState(rs, arena, selfId(task), selfId(task), task.core);

  // Threads: made by the leader (they share its memory), each then sets its own state.
  const threads: RemoteSyscalls[] = [];
  try {
    for (const [tid, core] of task.threadCores) {
      arena.reset();
      const seized = makeTask(rs, arena, tid, `Thread ${tid}`, pids, {
        thread: true,
        pids: pidNamespacesOf(dump).plan(rs, task, tid, true),
      });
      proc.threads.push({ tid, seized, core });
      const trs = RemoteSyscalls.open(seized, restored);
      threads.push(trs);
      trs.batchWith(restorerCalls(trs, room));
      restoreThreadState(trs, arena, selfId(task), selfId(task, tid), core);
    }
    restorePosixTimers(rs, arena, dump, task);
    if (proc.readOnlyLater?.length) makeReadOnly(rs, proc.readOnlyLater);
    // seccomp, the leader last (a chain made with TSYNC goes to every thread from it).
    proc.threads.forEach((th, i) =>
      restoreSeccomp(threads[i], arena, dump.seccompFilters, th.core)
    );
    restoreSeccomp(rs, arena, dump.seccompFilters, task.core);
    // Credentials last, in every thread.
    proc.threads.forEach((th, i) => restoreCreds(threads[i], arena, th.core));
    restoreCreds(rs, arena, task.core, task);
  } finally {
    for (const trs of threads) trs.close({ restoreState: false });
  }
  return { pages, compared, kept, forkMs };
}

function writeStats(dir: string, s: RestoreStats): void {
  try {
    new ImageWriter(dir, "stats-restore", "STATS").entry(
      stats_entrySchema,
      create(stats_entrySchema, {
        restore: create(restore_stats_entrySchema, {
          pagesCompared: BigInt(s.pagesCompared),
          pagesSkippedCow: BigInt(s.pagesSkippedCow),
          forkingTime: s.forkingUs,
          restoreTime: s.restoreUs,
          pagesRestored: BigInt(s.pagesRestored),
        }),
      }),
    ).close();
  } catch {
    // A read-only images directory does not fail a restore that worked.
  }
}

export { join };
