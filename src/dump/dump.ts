/**
 * `dump`: checkpoint a process into CRIU-format images. Reads like a table of contents: one
 * named step per resource, top to bottom.
 *
 * Safety: the task is frozen with ptrace for the whole dump. Any failure thaws it with the
 * registers and signal mask it had (the `using` below), and nothing stays in its memory: the
 * parasite area and what was made through it are removed when it is cured. If criu itself dies,
 * every task goes home on its own (tree/parasite.ts). The task is killed only after every image
 * is written and synced.
 *
 * @module
 */
import { checkInterrupt } from "../util/interrupt.ts";
import { VERSION } from "../version.ts";
import { parseCgroups } from "../util/cgroup_fs.ts";
import { create, type MessageInitShape } from "../images/protobuf.ts";
import {
  core_entrySchema,
  type task_kobj_ids_entry,
  task_kobj_ids_entrySchema,
} from "../../proto/gen/core_pb.ts";
import { fs_entrySchema } from "../../proto/gen/files_pb.ts";
import {
  dump_stats_entrySchema,
  fstype,
  inventory_entrySchema,
  lsmtype,
  netns_entrySchema,
  pstree_entrySchema,
  seccomp_entrySchema,
  stats_entrySchema,
  timens_entrySchema,
  timespecSchema,
} from "../../proto/gen/misc_pb.ts";
import { ImageWriter } from "../images/image.ts";
import type { ImagesDir } from "../images/images_dir.ts";
import { SCRATCH_PREFIX } from "../images/durable.ts";
import { serveTreePages, TreePages } from "./lazy_serve.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import {
  CLOCK,
  clockGettime,
  close,
  KCMP,
  kcmp,
  NR,
  O,
  REG,
  userDev,
  zeroPagePfn,
} from "../syscalls/mod.ts";
import { DEFAULT_LOCK_METHOD, LOCK_METHODS } from "../net/netlock.ts";
import { collectTree, type FrozenTree, releasePending, type TreeProcess } from "../tree/collect.ts";
import { Parasite } from "../tree/parasite.ts";
import { DumpGuard } from "./guard.ts";
import { holdersOf, holdStopped, socketHolders } from "../tree/stop_hold.ts";
import { freezeCgroup } from "../tree/freezer.ts";
import type { PendingSeize } from "../tree/seize.ts";
import { VirtualPids } from "../tree/pid_ns.ts";
import {
  NoSuchTaskError,
  nsLink,
  ownNamespace,
  parseMaps,
  parseStatus,
  readProcText,
  readProcTextsAhead,
  readTimeOffsets,
} from "../tree/proc.ts";
import {
  DumpContext,
  type DumpOptions,
  type DumpStats,
  NS_KINDS,
  OWN_NS_KINDS,
} from "./context.ts";
import { coreEntry, threadCoreEntry, zombieCoreEntry } from "./core.ts";
import { dumpTtys } from "./tty.ts";
import {
  collectFiles,
  dumpFileData,
  dumpFiles,
  mntIdOf,
  regFileEntry,
  UnsupportedError,
  writeRegFile,
} from "./files.ts";
import { aioRings } from "./aio.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import type { Vma } from "../pagemap/vma.ts";
import type { PageTracking } from "./mm.ts";
import {
  parentTracker,
  protectAgain,
  readTrackers,
  startTracking,
  writeTracking,
} from "./track.ts";
import { PageServerClient } from "../pagemap/page_server.ts";
import { ServerXfer } from "../pagemap/page_xfer.ts";
import {
  collectVmas,
  dumpMm,
  dumpPages,
  earlyVmas,
  pagesAhead,
  ringMappings,
  scanRanges,
  socketMappings,
} from "./mm.ts";
import { settleRings } from "./io_uring.ts";
import { ghostOf, writeDeadProcRemap, writeGhost } from "./ghost.ts";
import { dumpShmem, writeShmem } from "./shmem.ts";
import { checkSysvAttachments, dumpSysvShm, writeSysvShm } from "./sysv.ts";
import { collectTask, collectThread, type TaskState } from "./task.ts";
import {
  checkNestedTmpfs,
  cloneTmpfsMounts,
  readMountNamespace,
  readNestedMountNamespace,
  writeMountNamespace,
} from "./mnt_ns.ts";
import { readTreeUserns, shareImages, writeUserns } from "./userns.ts";
import { readUtsNames, type UtsNames, writeUtsNs } from "./uts.ts";
import { type IpcNamespace, readIpcNamespace, writeIpcNs } from "./ipc_ns.ts";
import { NetnsError } from "../net/in_netns.ts";
import { mapPingGroups, readNetns } from "../net/netns.ts";
import {
  lockNetns as lockNetnsOf,
  netnsLockSteps,
  unlockNetns as unlockNetnsOf,
} from "../net/netns_lock.ts";
import { nsenterArgv } from "../net/netlock.ts";
import { useNamespaceOf } from "../net/ns_sockets.ts";
import { writeNetns } from "./netns.ts";
import { DumpWorker } from "./dump_worker.ts";
import { readNestedNetns } from "./nested_netns.ts";
import { markNestedProcs, readNestedPids } from "./nested_pidns.ts";
import { tunHolders } from "./tun_files.ts";
import { processesBelow, withFlagsOf } from "./smaps_ahead.ts";

export type { DumpOptions, DumpStats };

/** CRIU image format version written into inventory.img (CRTOOLS_IMAGES_V1_1). */
export const IMAGES_VERSION = 2;

/** What a dump produced. */
export interface DumpResult {
  /** Image files written, relative to the images directory. */
  images: string[];
  stats: DumpStats;
}

/**
 * What a dump or pre-dump does before it touches the tree: the task and the images directory
 * checked, the parent images linked, the page server reached (one that cannot be leaves the
 * tree be), the pre-dump action run.
 */
export async function startDump(ctx: DumpContext): Promise<void> {
  const { opts } = ctx;
  const pid = opts.pid;
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`Invalid PID ${pid}`);
  if (pid === Deno.pid) throw new Error(`Cannot dump task ${pid}: it is this criu process`);
  checkImagesDir(opts.imagesDir);
  if (opts.prevImagesDir) ctx.dir.linkParent(opts.prevImagesDir);
  try {
    Deno.statSync(`/proc/${pid}`);
  } catch {
    throw new NoSuchTaskError(pid);
  }
  if (opts.pageServer && opts.lazyServe) {
    throw new Error("A lazy dump serves its pages itself: --lazy-pages takes no --page-server");
  }
  if (opts.pageServer) {
    const client = PageServerClient.connect(opts.pageServer.address, opts.pageServer.port);
    ctx.pageXfer = new ServerXfer(client);
  }
  if (opts.lazyServe) ctx.treePages = new TreePages();
  await opts.actions?.("pre-dump", pid);
}

/**
 * With --track-mem: the worker that walks the pages beside the dump, started now; it reads the
 * smaps of `processes` (the tree about to be frozen) ahead.
 */
export async function startDumpWorker(
  ctx: DumpContext,
  processes: number[],
  final = true,
): Promise<DumpWorker | undefined> {
  if (!ctx.opts.trackMem) return undefined;
  zeroPagePfn(); // found now, before the freeze
  const parent = ctx.parentImages;
  const spare = final ? spareFor(ctx, parent) : undefined;
  ctx.worker = await DumpWorker.start(parent, spare, processes);
  // Whoever writes the first pages file takes it: the worker (a few pages) or the copiers.
  ctx.copiers.spare = ctx.worker.spare;
  return ctx.worker;
}

/** The most a spare pages file takes (see spareFor). */
const SPARE_MAX = 64 << 20;

/**
 * A pages file allocated before the freeze for a dump after pre-dumps, written into its images
 * directory: about what its parent wrote, when that was itself what a tree wrote between two
 * dumps (at most SPARE_MAX). Making a file's blocks costs more than filling them (on tmpfs in a
 * virtual machine, twice as much), and this file's are filled inside the frozen time.
 */
function spareFor(
  ctx: DumpContext,
  parent: ImagesDir | undefined,
): { path: string; bytes: number } | undefined {
  if (!parent?.parent || !ctx.pageXfer.toFiles) return undefined;
  let bytes = 0;
  for (const name of parent.names()) {
    if (/^pages-\d+\.img$/.test(name)) bytes += Deno.statSync(parent.file(name)).size;
  }
  if (!bytes) return undefined;
  return { path: ctx.dir.file(`${SCRATCH_PREFIX}spare-pages`), bytes: Math.min(bytes, SPARE_MAX) };
}

function checkImagesDir(dir: string): void {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(dir);
  } catch {
    throw new Error(`Cannot use images directory ${dir}: it does not exist`);
  }
  if (!st.isDirectory) throw new Error(`Cannot use images directory ${dir}: not a directory`);
  const probe = `${dir}/${SCRATCH_PREFIX}probe-${Deno.pid}`;
  try {
    Deno.writeFileSync(probe, new Uint8Array(), { mode: 0o600 });
    Deno.removeSync(probe);
  } catch (e) {
    throw new Error(`Cannot write to images directory ${dir}: ${(e as Error).message}`);
  }
}

/**
 * Refuses what this version cannot dump yet, before anything is written; returns the live
 * processes whose descriptor table another of them shares (found on the way).
 */
function checkTree(tree: FrozenTree, pids: VirtualPids): Set<number> {
  const root = tree.root;
  // As criu: a tree in a PID namespace of its own is that namespace whole, from its init.
  if (pids.own && pids.tryVirt(root) !== 1) {
    throw new UnsupportedError(
      `Cannot dump task ${root}: it is in a PID namespace of its own (as task ` +
        `${pids.tryVirt(root)}) but is not its init; dump the tree of the namespace's init`,
    );
  }
  const live = tree.processes.filter((p) => p.zombieExit === undefined);
  for (const p of live) {
    // As criu: a SIGTRAP pending cannot be told from a tracer's own traps.
    for (const tid of p.threads) {
      const st = parseStatus(readProcText(p.pid, `task/${tid}/status`));
      if ((st.sigPnd | st.shdPnd) & (1n << 4n)) {
        throw new UnsupportedError(
          `Cannot dump task ${tid}: it has a SIGTRAP pending, which a tracer cannot keep apart ` +
            `from its own traps`,
        );
      }
    }
    if (pids.own) {
      const g = pids.groups(p.pid, p.pgid, p.sid);
      for (const [what, id] of [["session", g.sid], ["process group", g.pgid]] as const) {
        if (id === 0) {
          throw new UnsupportedError(
            `Cannot dump task ${p.pid}: its ${what} is led from outside its PID namespace`,
          );
        }
      }
    }
    // Children made later would get another time namespace: it cannot be made again.
    if (nsLink(p.pid, "time_for_children") !== nsLink(p.pid, "time")) {
      throw new UnsupportedError(
        `Cannot dump task ${p.pid}: its future children get another time namespace ` +
          `(/proc/${p.pid}/ns/time_for_children); nested time namespaces are not supported`,
      );
    }
    for (const kind of NS_KINDS) {
      // Restored into criu's namespaces, a task elsewhere would come back changed. The root's
      // own namespaces of OWN_NS_KINDS are made again (with the whole tree in them).
      if (p.pid === root && !OWN_NS_KINDS.has(kind) && ownNamespace(root, kind)) {
        throw new UnsupportedError(
          `Cannot dump task ${root}: it is in another ${kind} namespace than criu; ` +
            `namespaces are not supported yet`,
        );
      }
      // A mount namespace nested in the root's own (a service's, made by systemd) is read
      // with the root's and made again from it; a nested network namespace is read by
      // nested_netns.ts (which refuses criu's); a nested PID namespace by nested_pidns.ts.
      const nested = kind === "net" || kind === "pid" ||
        (kind === "mnt" && ownNamespace(root, "mnt") && ownNamespace(p.pid, "mnt"));
      if (nsLink(p.pid, kind) !== nsLink(root, kind) && !nested) {
        throw new UnsupportedError(
          `Cannot dump task ${p.pid}: it is in another ${kind} namespace than task ${root}; ` +
            `namespaces are not supported yet`,
        );
      }
    }
  }
  // Kernel objects shared between processes. A descriptor table or fs info shared with the
  // parent (clone with CLONE_FILES / CLONE_FS) is restored the same way; memory or signal
  // handlers shared without being threads, or sharing with anyone but the parent, are not.
  const parentOf = (pid: number) => tree.processes.find((p) => p.children.includes(pid))?.pid;
  // A table shared along parent links (each sharing it with its parent) is made again the same
  // way, however far apart two of its tasks are (a grandchild, a parent's other child).
  const sharedFrom = (pid: number, type: number): number => {
    const parent = parentOf(pid);
    return parent !== undefined && kcmp(parent, pid, type) === 0 ? sharedFrom(parent, type) : pid;
  };
  const sharingFiles = new Set<number>();
  for (let i = 0; i < live.length; i++) {
    for (let j = 0; j < i; j++) {
      const [a, b] = [live[j].pid, live[i].pid];
      for (
        const [type, what, withParent] of [
          [KCMP.VM, "memory", false],
          [KCMP.FILES, "descriptor table", true],
          [KCMP.FS, "fs info", true],
          [KCMP.SIGHAND, "signal handlers", false],
        ] as const
      ) {
        if (kcmp(a, b, type) !== 0) continue;
        if (type === KCMP.FILES) sharingFiles.add(a).add(b);
        if (withParent && sharedFrom(a, type) === sharedFrom(b, type)) continue;
        throw new UnsupportedError(
          `Cannot dump tasks ${a} and ${b}: they share their ${what} (clone without threads); ` +
            `not supported yet`,
        );
      }
    }
  }
  return sharingFiles;
}

/**
 * Dumps the process tree rooted at `opts.pid` into `opts.imagesDir`.
 *
 * Precondition: no task of the tree is a child of the calling process (Deno reaps its own
 * children from a background thread and would take the ptrace stops).
 */
export async function dump(opts: DumpOptions, log: Logger = silentLogger()): Promise<DumpResult> {
  const ctx = new DumpContext(opts, log);
  using _copiers = ctx.copiers;
  const pid = opts.pid;
  await startDump(ctx);
  // The tree about to be frozen, as it is now (whatever it forks meanwhile is read once frozen).
  const below = processesBelow(pid);
  using _worker = await startDumpWorker(ctx, below);
  // The checks between steps cost nothing once the first is made: made before the freeze.
  await checkInterrupt(opts.signal);
  // What infecting each process needs, found while the tree still runs.
  Parasite.prepare(below);
  const tFreeze = performance.now();
  const timeoutMs = (opts.timeoutSeconds ?? 10) * 1000;
  // With --freeze-cgroup, the cgroup's freezer stops every task at once; they are seized
  // frozen, and take their ptrace stops as it thaws.
  let early: Map<number, PendingSeize> | undefined;
  let seized: FrozenTree;
  try {
    if (opts.freezeCgroup) {
      const frozen = await freezeCgroup(opts.freezeCgroup, timeoutMs, async (thaw) => {
        // Should criu die while the cgroup is frozen, the guard thaws it.
        ctx.guard ??= await DumpGuard.start();
        ctx.guard.undoWith(["/bin/sh", "-c", `echo ${thaw.word} > "$1"`, "sh", thaw.file]);
      });
      log.info(
        `Cgroup ${opts.freezeCgroup} frozen in ${frozen.freezeMs.toFixed(1)} ms: ` +
          `${frozen.seized.size} tasks seized`,
      );
      early = frozen.seized;
      if (!early.has(pid)) {
        throw new UnsupportedError(
          `Cannot dump task ${pid}: it is not in cgroup ${opts.freezeCgroup} (--freeze-cgroup)`,
        );
      }
    }
    log.info(`Seizing the tree of task ${pid}`);
    seized = collectTree(pid, timeoutMs, early);
  } catch (e) {
    if (early) releasePending(early, timeoutMs);
    await ctx.guard?.finish();
    throw e;
  }
  using tree = seized;
  const tFrozen = performance.now();
  ctx.stats.freezingUs = Math.round((tFrozen - tFreeze) * 1000);
  log.info(
    `Frozen: ${tree.processes.length} processes, ${tree.tasks.size} threads`,
  );
  try {
    try {
      await writeImages(ctx, tree);
      // The page server has every page on disk once it answers the close.
      ctx.pageXfer.close();
    } finally {
      // Copies of descriptors in flight in unix queues (the peeks put them here).
      for (const fd of ctx.inFlightFds.splice(0)) close(fd);
    }
  } catch (e) {
    await ctx.writesSettled();
    ctx.pageXfer.abort();
    await undoOutside(ctx);
    throw e;
  }
  log.info("Images written and synced");
  if (ctx.treePages) {
    // The lazy pages are still in the tree: it stays frozen until they are all fetched.
    ctx.stats.pagesLazy = ctx.treePages.pages;
    try {
      await serveTreePages(ctx.treePages, opts.lazyServe!, ctx.dir, log);
    } catch (e) {
      // Whatever was restored from it lacks pages: the tree goes on as it was.
      await undoOutside(ctx);
      throw new Error(`Cannot serve the lazy pages: ${(e as Error).message}`);
    }
  }
  // Every image is complete and durable: now the tree may go.
  if (opts.leaveRunning || opts.leaveStopped) {
    // As criu: a tree left running keeps its files as they were (no link remaps stay).
    if (opts.leaveRunning) removeLinkRemaps(ctx);
    ctx.tcp?.resume();
    await unlockNetns(ctx);
    tree.resume({ stopped: opts.leaveStopped });
  } else {
    // From here the tree dies whatever becomes of criu: the guard would kill it (it takes
    // pidfds first), and so would the kernel (EXITKILL). A tree let go now would run on with
    // its connections in repair mode, unusable.
    ctx.guard?.commit(tree.processes.map((p) => p.pid));
    tree.dieWithCriu();
    // Closed in repair mode, the sockets vanish without a word; the lock keeps the peers
    // from hearing a reset until the restore takes it away.
    ctx.tcp?.repairForKill();
    // Test hook: criu dies with the connections in repair mode, the tree not yet killed.
    if (Deno.env.get("CRIU_TEST_DIE_AT") === "repaired") Deno.kill(Deno.pid, "SIGKILL");
    tree.kill();
    // Test hook: criu dies right after the tree, its images complete (tests/kill_test.ts).
    if (Deno.env.get("CRIU_TEST_DIE_AT") === "killed") Deno.kill(Deno.pid, "SIGKILL");
    ctx.tcp?.drop();
  }
  await ctx.guard?.finish();
  ctx.stats.frozenUs = Math.round((performance.now() - tFrozen) * 1000);
  log.info(opts.leaveRunning || opts.leaveStopped ? "Tree released" : "Tree killed");
  // What the next dump needs of the tracking (not the restore's): once the tree is let go.
  if (opts.trackMem && ctx.trackers.size) {
    ctx.written.push(...writeTracking(ctx.dir, ctx.trackers, ctx.frames));
  }

  writeStats(ctx);
  log.info(`Dumping finished successfully`);
  return { images: [...ctx.written], stats: { ...ctx.stats } };
}

/**
 * What a failed dump undoes outside the tree, which is thawed as it was (the caller's
 * `using`): its connections go on first, the network is unlocked, the guard has nothing left
 * to undo, the links made for deleted files go.
 */
async function undoOutside(ctx: DumpContext): Promise<void> {
  ctx.tcp?.resume();
  await unlockNetns(ctx);
  await ctx.guard?.finish();
  removeLinkRemaps(ctx);
}

/**
 * Locks the whole network namespace of task `pid` (the tree's own, or one nested in it), as
 * criu locks the tree's own, before any connection in it is read; the guard learns how to
 * unlock it first. It stays locked after a dump that kills the tree, for the restore to unlock
 * (--join-ns net).
 */
async function lockNetns(ctx: DumpContext, pid: number): Promise<void> {
  const method = ctx.opts.networkLock ?? DEFAULT_LOCK_METHOD;
  const vroot = ctx.pids.virt(ctx.opts.pid);
  if (method === "skip") return;
  ctx.guard ??= await DumpGuard.start();
  for (const u of netnsLockSteps(method, vroot, true)) {
    ctx.guard.undoWith(nsenterArgv(pid, u.argv), u.input ?? "");
  }
  ctx.netnsLocks.push({ pid, method, vroot });
  await lockNetnsOf(pid, method, vroot);
  ctx.log.info(`Network namespace of task ${pid} locked (${method})`);
}

/** Takes away the locks of {@link lockNetns}, when the tree goes on. Never throws. */
async function unlockNetns(ctx: DumpContext): Promise<void> {
  if (ctx.ownNet) {
    // As criu: the caller's unlock runs whatever became of its lock, and cannot fail the dump.
    try {
      await ctx.opts.actions?.("network-unlock", ctx.opts.pid);
    } catch (e) {
      ctx.log.error((e as Error).message);
    }
  }
  for (const l of ctx.netnsLocks.splice(0)) {
    await unlockNetnsOf(l.pid, l.method, l.vroot, ctx.log);
  }
}

/**
 * The key of `--external net[INODE]:KEY` when it names the network namespace of task `root`;
 * undefined when none names one. One naming another namespace is refused: only the tree's own
 * can be external.
 */
function externalNetKey(external: readonly string[], root: number): string | undefined {
  const ino = /^net:\[(\d+)\]$/.exec(nsLink(root, "net"))?.[1];
  let key: string | undefined;
  for (const e of external) {
    const m = /^net\[(\d+)\]:(.+)$/.exec(e);
    if (!m) continue;
    if (m[1] !== ino) {
      throw new UnsupportedError(
        `Cannot dump with --external ${e}: the tree's network namespace is net:[${ino}], and ` +
          `only it can be external`,
      );
    }
    key = m[2];
  }
  return key;
}

/** Collects the frozen tree and writes every image, synced. Kills nothing. */
async function writeImages(ctx: DumpContext, tree: FrozenTree): Promise<void> {
  ctx.pids = VirtualPids.of(tree.root);
  readAhead(ctx, tree.processes, Boolean(ctx.opts.leaveRunning || ctx.opts.leaveStopped));
  // The tree's own user namespace first: every id read from now on is carried as it sees it.
  if (ownNamespace(tree.root, "user")) {
    const tasks = Math.max(tree.processes.length, tree.tasks.size);
    ctx.userns = readTreeUserns(tree.root, tasks, ownNamespace(tree.root, "pid"));
    writeUserns(ctx, ctx.nsIds(tree.root).userNsId, ctx.userns);
  }
  ctx.ownNet = ownNamespace(tree.root, "net");
  // The tree's own network namespace: its devices, sysctls, addresses, routes and rules, read
  // before any connection in it is locked; its sockets are made in it from now on.
  using _netns = ctx.ownNet ? useNamespaceOf(tree.root) : undefined;
  let rootNs;
  // A namespace the caller names external (`--external net[INODE]:KEY`, runc's for a container
  // joined to a namespace of its own) is not dumped: the restore joins it again, given by KEY.
  const extNet = ctx.ownNet ? externalNetKey(ctx.opts.external ?? [], tree.root) : undefined;
  if (extNet !== undefined) {
    const id = ctx.nsIds(tree.root).netNsId;
    ctx.image(`netns-${id}.img`, "NETNS").entry(
      netns_entrySchema,
      create(netns_entrySchema, { extKey: extNet }),
    );
    ctx.log.info(`Network namespace of task ${tree.root} is external (${extNet})`);
  } else if (ctx.ownNet && !ctx.opts.emptyNet) {
    try {
      const id = ctx.nsIds(tree.root).netNsId;
      const holders = () => tunHolders(tree.processes.map((p) => p.pid));
      rootNs = await readNetns(tree.root, id, holders);
      mapPingGroups(rootNs, (g) => ctx.gid(g, "net.ipv4.ping_group_range"));
    } catch (e) {
      if (e instanceof NetnsError) throw new UnsupportedError(e.message);
      throw e;
    }
  }
  // Those nested in it (or in criu's), with their socket helpers; then the root's is written
  // (a veth to a nested one learns its peer's namespace there).
  using nestedNets = new DisposableStack();
  await readNestedNetns(ctx, tree, rootNs, nestedNets);
  if (rootNs) writeNetns(ctx, rootNs.id, rootNs);
  if (ctx.ownNet) {
    // The caller's own lock of the namespace first, as criu runs it (RPC's network-lock).
    await ctx.opts.actions?.("network-lock", tree.root);
    await lockNetns(ctx, tree.root);
  }
  // What else the caller counts as external, asked once the network is locked (as criu asks an
  // RPC caller), before anything that could be external is read.
  const more = await ctx.opts.queryExternal?.();
  if (more?.length) ctx.opts.external = [...ctx.opts.external ?? [], ...more];
  // A nested one is locked whole too when its connections are to be carried.
  if (ctx.opts.tcpEstablished) {
    for (const n of ctx.nestedNets.values()) await lockNetns(ctx, n.pid);
  }
  for (const pid of checkTree(tree, ctx.pids)) ctx.sharingFiles.add(pid);
  ctx.nestedPids = readNestedPids(tree, ctx.pids);
  // The tree's own mount namespace: each mount checked before anything is written.
  if (ownNamespace(tree.root, "mnt")) {
    ctx.mntNs = readMountNamespace(ctx, tree.root, ctx.nsIds(tree.root).mntNsId);
    const rootNs = nsLink(tree.root, "mnt");
    for (const p of tree.processes) {
      if (p.zombieExit !== undefined) continue;
      const link = nsLink(p.pid, "mnt");
      if (link === rootNs || ctx.nestedMnts.has(link)) continue;
      // Made again from a copy of the root's, whichever namespace it was made from (its
      // mounts are planned against the root's; a file system only nested ones share is
      // refused below).
      ctx.nestedMnts.set(
        link,
        readNestedMountNamespace(ctx, p.pid, ctx.nsIds(p.pid).mntNsId, ctx.mntNs),
      );
    }
    checkNestedTmpfs(ctx.mntNs, [...ctx.nestedMnts.values()]);
    markNestedProcs(ctx.nestedPids, ctx.pids, [ctx.mntNs, ...ctx.nestedMnts.values()]);
  }
  for (const tid of tree.tasks.keys()) ctx.treeTids.add(tid);
  for (const p of tree.processes) {
    ctx.treeTids.add(p.pid); // zombies too
    ctx.treeGroups.push({
      real: { pgid: p.pgid, sid: p.sid },
      virt: ctx.pids.groups(p.pid, p.pgid, p.sid),
    });
  }
  const virt = (real: number) => ctx.pids.virt(real);

  // Collect and write, process by process (parents first); nothing is killed before the end.
  const files = ctx.image("files.img", "FILES");
  const pstree = ctx.image("pstree.img", "PSTREE");
  for (const proc of tree.processes) {
    pstree.entry(
      pstree_entrySchema,
      create(pstree_entrySchema, {
        pid: virt(proc.pid),
        ppid: proc.ppid && virt(proc.ppid),
        ...ctx.pids.groups(proc.pid, proc.pgid, proc.sid),
        threads: proc.threads.map(virt),
        nsPid: ctx.nestedPids.inner.get(proc.pid) ?? [],
        nsTids: proc.threads.slice(1).flatMap((t) => ctx.nestedPids.inner.get(t) ?? []),
      }),
    );
    if (proc.zombieExit !== undefined) {
      if (proc.zombieExit & 0x80) {
        throw new UnsupportedError(
          `Cannot dump zombie ${proc.pid}: it dumped core when it died (wait status ` +
            `0x${proc.zombieExit.toString(16)}), which a restore cannot make again`,
        );
      }
      const comm = readComm(proc.pid);
      ctx.image(`core-${virt(proc.pid)}.img`, "CORE").entry(
        core_entrySchema,
        zombieCoreEntry(comm, proc.zombieExit),
      );
      continue;
    }
    await ctx.checkpoint("process");
    await dumpProcess(ctx, tree, proc, files);
  }
  await writeShmem(ctx);
  await ctx.checkpoint("collect");
  checkDeletedWatches(ctx);
  dumpTtys(ctx, tree.processes);
  dumpFileData(ctx, files);
  writeSysvShm(ctx);
  // root_ids are the dumper's own objects, as criu writes them (a restore compares the root
  // task's with them: the same descriptor table would mean the images are corrupt).
  const rootIds = create(task_kobj_ids_entrySchema, {
    vmId: ctx.objectId(),
    filesId: ctx.objectId(),
    fsId: ctx.objectId(),
    sighandId: ctx.objectId(),
    ...ctx.nsIds(Deno.pid),
  });
  writeInventory(ctx, {
    rootIds,
    tcpClose: ctx.opts.tcpClose || undefined,
    networkLockMethod: LOCK_METHODS.indexOf(ctx.opts.networkLock ?? DEFAULT_LOCK_METHOD),
  });
  ctx.cgroups.write(ctx);
  ctx.image("seccomp.img", "SECCOMP").entry(
    seccomp_entrySchema,
    create(seccomp_entrySchema, { seccompFilters: ctx.seccomp.filters }),
  );
  // The clocks a time namespace made at restore starts from (criu's): ours, in timens-0.img;
  // those of the root's own time namespace (the host's moved by its offsets) in timens-ID.img.
  const clocks = (offsets: Map<number, [bigint, bigint]>) => {
    const ts = (clock: number) => {
      const [sec, nsec] = clockGettime(clock);
      const [osec, onsec] = offsets.get(clock) ?? [0n, 0n];
      let tvSec = sec + osec, tvNsec = nsec + onsec;
      if (tvNsec >= 1_000_000_000n) [tvSec, tvNsec] = [tvSec + 1n, tvNsec - 1_000_000_000n];
      if (tvNsec < 0n) [tvSec, tvNsec] = [tvSec - 1n, tvNsec + 1_000_000_000n];
      return create(timespecSchema, { tvSec, tvNsec });
    };
    return create(timens_entrySchema, {
      monotonic: ts(CLOCK.MONOTONIC),
      boottime: ts(CLOCK.BOOTTIME),
    });
  };
  ctx.image("timens-0.img", "TIMENS").entry(timens_entrySchema, clocks(new Map()));
  if (ownNamespace(tree.root, "time")) {
    // Offsets count from the host's clocks, and criu's own may be moved too (criu in a time
    // namespace): the tree's clock is ours less our offset plus its.
    const ours = readTimeOffsets(Deno.pid), its = readTimeOffsets(tree.root);
    const moved = new Map<number, [bigint, bigint]>();
    for (const clock of [CLOCK.MONOTONIC, CLOCK.BOOTTIME]) {
      const [os, on] = ours.get(clock) ?? [0n, 0n], [ts, tn] = its.get(clock) ?? [0n, 0n];
      moved.set(clock, [ts - os, tn - on]);
    }
    ctx.image(`timens-${ctx.nsIds(tree.root).timeNsId}.img`, "TIMENS").entry(
      timens_entrySchema,
      clocks(moved),
    );
  }

  if (ctx.mntNs) await writeMountNamespace(ctx, ctx.mntNs);
  for (const ns of ctx.nestedMnts.values()) await writeMountNamespace(ctx, ns, ctx.mntNs);
  await ctx.pagesFilesDone();
  ctx.flush();
  if (ctx.userns) shareImages(ctx.opts.imagesDir, ctx.userns);
  await ctx.dir.sync();
  await ctx.checkpoint("sync");
  // The last word before the tree goes: a failing post-dump script leaves it running.
  await ctx.opts.actions?.("post-dump", tree.root);
}

/**
 * A watch on a deleted file comes back only with the file: the tree must hold it open (its
 * ghost or its link remap then brings the inode back, and the watch is put on it, as criu does).
 */
function checkDeletedWatches(ctx: DumpContext): void {
  for (const w of ctx.deletedWatches) {
    const key = `${userDev(w.sdev)}:${w.ino}`;
    const linked = [...ctx.linkRemaps.keys()].some((k) => k === key || k.startsWith(`${key}@`));
    if (ctx.ghostIds.has(key) || linked) continue;
    throw new UnsupportedError(
      `Cannot dump ${w.what}: it watches a deleted file (inode ${w.ino}) that no task of the ` +
        `tree holds open, so a restore could not bring it back`,
    );
  }
}

/**
 * The working or root directory of task `pid`: its path, and when it was deleted, a ghost
 * directory made again at restore (criu's ghost dir).
 */
function fsDir(
  ctx: DumpContext,
  pid: number,
  id: number,
  which: "cwd" | "root",
  path: string,
): string {
  if (!path.endsWith(" (deleted)")) return path;
  const dead = /^\/proc\/(\d+) \(deleted\)$/.exec(path);
  // In a PID namespace of its own, its /proc must be the tree's own (made again with it).
  const ownProc = ctx.mntNs?.entries.some((e) =>
    e.fstype === fstype.PROC && e.mountpoint === "/proc"
  );
  if (dead && which === "cwd" && (!ctx.pids.own || ownProc)) {
    // /proc/N of a task that is gone: the restore makes a task N for a moment, goes there,
    // and lets it go (criu's dead-process remap).
    writeDeadProcRemap(ctx, id, Number(dead[1]));
    return path.slice(0, -10);
  }
  if (path.startsWith("/proc/")) {
    throw new UnsupportedError(
      `Cannot dump task ${pid}: its ${which === "cwd" ? "working" : "root"} directory is ` +
        `${path.slice(0, -10)} of a task that is gone; not supported`,
    );
  }
  const link = `/proc/${pid}/${which}`;
  const st = Deno.statSync(link);
  writeGhost(ctx, id, ghostOf(link, st, { mode: st.mode ?? 0o40755 }));
  return path.slice(0, -10);
}

/** Removes the names this dump gave deleted files (--link-remap). */
function removeLinkRemaps(ctx: DumpContext): void {
  for (const path of ctx.linkRemaps.values()) {
    try {
      Deno.removeSync(ctx.linkRemapsAt.get(path) ?? ctx.hostPath(path));
    } catch {
      // gone already
    }
  }
}

function readComm(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
  } catch {
    return "";
  }
}

/**
 * With --track-mem: tracks the memory of the task `rs` runs syscalls in (from its parent
 * images' tracking when that is still the same) and says whether its parent images hold its
 * pages. With `keep` false (a tree killed after this dump: no dump of it follows) the pages are
 * only compared with the parent's, and the tracking is left as the pre-dumps made it: nothing is
 * registered or protected again, no frame recorded, inside the frozen time.
 */
export function trackPages(
  ctx: DumpContext,
  rs: RemoteSyscalls,
  vmas: Vma[],
  keep = true,
): PageTracking | undefined {
  if (!ctx.opts.trackMem) return undefined;
  const pid = rs.task.pid;
  const parent = ctx.ahead.get(pid)?.parent;
  const has = parent ? "the parent images hold its pages" : "no parent";
  if (!keep) {
    ctx.log.info(`Task ${pid}: ${has}; the tracking ends with it`);
    return { parentDir: parent?.dir, record: false };
  }
  ctx.trackers.set(ctx.pids.virt(pid), startTracking(rs, vmas, parent?.tracker));
  ctx.log.info(`Task ${pid}: memory tracked, ${has}`);
  return { parentDir: parent?.dir, record: true };
}

/**
 * Once the tree is frozen, for each live process (ctx.ahead): its mappings with their VmFlags,
 * from the smaps the dump's worker read before the freeze if they did not change since
 * (dump/smaps_ahead.ts), else from its smaps (a walk of all its pages in the kernel) read on a
 * thread of the runtime's, in the order the processes are dumped; its mappings as
 * /proc/PID/maps shows them; with --track-mem its parent's tracker, and the walk of its pagemap
 * posted to the dump's worker (dump/dump_worker.ts). The reads and the walk run while the dump
 * collects the rest.
 */
export function readAhead(ctx: DumpContext, processes: TreeProcess[], keep: boolean): void {
  const live = processes.filter((p) => p.zombieExit === undefined).map((p) => p.pid);
  // Asked of the worker before its walks.
  const before = new Map(live.map((pid) => [pid, ctx.worker?.smapsAhead(pid)]));
  const smaps = readProcTextsAhead(live.filter((pid) => !before.get(pid)), "smaps");
  const dir = ctx.opts.trackMem ? ctx.parentImages : undefined;
  const trackers = dir && readTrackers(dir);
  for (const pid of live) {
    const vpid = ctx.pids.virt(pid);
    const tracker = trackers && parentTracker(trackers, pid, vpid);
    const early = earlyVmas(pid);
    const ahead = before.get(pid);
    const mappings = ahead
      ? ahead.then((text) => {
        const maps = text === undefined ? undefined : withFlagsOf(early.maps, parseMaps(text));
        if (maps) ctx.log.info(`Task ${pid}: mappings as read before the freeze (unchanged)`);
        return maps ?? readProcTextsAhead([pid], "smaps").get(pid)!.then(parseMaps);
      })
      : smaps.get(pid)!.then(parseMaps);
    // Awaited when its process is dumped, or never when the dump fails first.
    mappings.catch(() => {});
    ctx.ahead.set(pid, {
      mappings,
      early,
      parent: tracker && { dir: dir!, tracker },
    });
    // Its walk, on the worker (the arguments are worked out only when there is one).
    const parent = tracker !== undefined;
    ctx.worker?.post(pid, vpid, scanRanges(early.vmas), parent, keep, Number(zeroPagePfn()));
  }
}

/** Once its pages are read: the task's pages protected again, their frames kept. */
export function tracked(ctx: DumpContext, pid: number, vmas: Vma[], track: PageTracking): void {
  if (!track.record) return;
  protectAgain(pid, vmas);
  if (track.frames) ctx.frames.set(ctx.pids.virt(pid), track.frames);
}

/** Dumps one live process of the frozen tree; returns its kernel object ids. */
async function dumpProcess(
  ctx: DumpContext,
  tree: FrozenTree,
  proc: TreeProcess,
  files: ReturnType<DumpContext["image"]>,
): Promise<task_kobj_ids_entry> {
  const pid = proc.pid;
  const leader = tree.task(pid);
  // Its mappings with their VmFlags are on their way (readAhead: smaps, a walk of all its pages,
  // read before the freeze or on another thread); until they are in, the mappings as
  // /proc/PID/maps shows them do for what needs only their places and kinds. Nothing maps or
  // unmaps in the task before (a parasite waits for them).
  const { mappings, early } = ctx.ahead.get(pid)!;
  // io_uring requests in flight that complete by themselves complete first (their submitters
  // run once, inside, to post them), before its files and memory are read.
  await settleRings(ctx, pid, async () => {
    await mappings;
    using parasite = Parasite.infect(leader, early.maps);
    parasite.leader.call(NR.getpid);
    for (const tid of proc.threads.slice(1)) {
      using trs = parasite.thread(tree.task(tid));
      trs.call(NR.getpid);
    }
  });
  // AIO contexts proven idle (their requests that complete by themselves given a moment to)
  // before the files their completions may signal are read.
  const aios = await aioRings(ctx, pid, early.vmas);
  // Without memory tracking the pages need nothing of the parasite: found now, they go into
  // their file while it collects the rest (the page copiers), as the process was frozen (what
  // the parasite's own frames write below the stack's red zone, dead memory, is not asked for).
  // Found from the mappings as maps shows them, they move while smaps walks every page for the
  // VmFlags (dumpPages takes them if those change nothing: mm.ts pagesAhead).
  const pagesFirst = !ctx.opts.trackMem;
  const ahead = pagesFirst ? pagesAhead(ctx, pid, early.vmas) : undefined;
  const taskFiles = collectFiles(ctx, pid);
  const { maps, vmas, guards } = collectVmas(pid, await mappings);
  // The tree's own UTS namespace, asked inside the root (uname answers for the caller's).
  const ownUts = pid === tree.root && ownNamespace(pid, "uts");
  // The tree's own IPC namespace, read inside the root (System V calls answer for the caller's).
  const ownIpc = pid === tree.root && ownNamespace(pid, "ipc");
  const sockets = new Map([
    ...socketMappings(pid, vmas, taskFiles.fds),
    ...ringMappings(pid, vmas, taskFiles.fds),
  ]);
  if (ctx.tcp?.hasPending) {
    ctx.guard ??= await DumpGuard.start();
    // Should criu die while a connection is in repair mode, the processes that hold it stop
    // rather than meet it.
    ctx.socketHolders ??= socketHolders(tree);
    const only = holdersOf(ctx.socketHolders, ctx.tcp.pendingInodes);
    using _stopped = holdStopped(tree, ctx.guard, only);
    ctx.tcp.checkpointPending(ctx.guard);
  }
  ctx.log.info(`Task ${pid}: collected mappings and files`);
  // Each thread's stack pointer as the freeze found it (its page is never lazy).
  const sps = proc.threads.map((tid) => tree.task(tid).regs[REG.sp]);
  if (pagesFirst) await dumpPages(ctx, pid, vmas, sps, undefined, ahead);
  // Inside the task: signal state, timers, per-thread state, and, with tracking, the pages.
  const { state, threads } = await (async () => {
    using parasite = Parasite.infect(leader, maps);
    const state: TaskState & { uts?: UtsNames; ipc?: IpcNamespace } = collectTask(
      leader,
      parasite.leader,
    );
    if (ownUts) state.uts = readUtsNames(parasite.leader);
    if (ownIpc) state.ipc = readIpcNamespace(parasite.leader);
    // The tree's own tmpfs mounts, copied whole inside the root for their tars.
    if (pid === tree.root && ctx.mntNs) await cloneTmpfsMounts(ctx, parasite.leader, ctx.mntNs);
    // And those of a nested mount namespace, inside the task it was read through.
    for (const ns of ctx.nestedMnts.values()) {
      if (ns.pid === pid) await cloneTmpfsMounts(ctx, parasite.leader, ns, ctx.mntNs);
    }
    // The tree's own cgroup namespace: its roots, from what the root task reads of itself.
    if (pid === tree.root && ownNamespace(pid, "cgroup")) {
      const inside = new TextDecoder().decode(parasite.leader.readFile("/proc/self/cgroup"));
      ctx.cgroups.setNamespace(
        pid,
        parseCgroups(inside),
        parseCgroups(readProcText(pid, "cgroup")),
      );
    }
    const threads = proc.threads.slice(1).map((tid) => {
      using trs = parasite.thread(tree.task(tid));
      return collectThread(pid, tree.task(tid), trs);
    });
    await ctx.checkpoint("parasite");
    // seccomp: each thread's mode and filters (read with ptrace while every thread is in its
    // stop).
    const seccomp = ctx.seccomp.collect(
      proc.threads,
      [state.status.seccomp, ...threads.map((t) => t.status.seccomp)],
    );
    state.seccomp = seccomp[0];
    threads.forEach((t, i) => (t.seccomp = seccomp[i + 1]));
    if (!pagesFirst) {
      // Tracked: the pages are found once the parasite has protected them again.
      const keep = Boolean(ctx.opts.leaveRunning || ctx.opts.leaveStopped);
      const track = trackPages(ctx, parasite.leader, vmas, keep);
      await dumpPages(ctx, pid, vmas, sps, track);
      if (track) tracked(ctx, pid, vmas, track);
    }
    await ctx.checkpoint("pages");
    return { state, threads };
  })();
  // A timer signalling one thread names it as the tree sees it.
  for (const t of state.posixTimers) {
    if (t.notify === 4) {
      t.notifyTid = ctx.pids.virt(t.notifyTid, `the thread timer ${t.id} signals`);
    }
  }
  state.cgSet = ctx.cgroups.setOf(pid, pid);
  for (const t of threads) t.cgSet = ctx.cgroups.setOf(pid, t.tid);

  // The tree's own UTS namespace: its names, asked inside the root (written once, by its id).
  if (ownUts) {
    writeUtsNs(ctx, ctx.nsIds(pid).utsNsId, state.uts!);
  }
  if (ownIpc) writeIpcNs(ctx, ctx.nsIds(pid).ipcNsId, state.ipc!);
  const parent = tree.processes.find((p) => p.children.includes(pid));
  const parentIds = parent && ctx.ids.get(parent.pid);
  const shared = (type: number) => parentIds !== undefined && kcmp(parent!.pid, pid, type) === 0;
  const ids = create(task_kobj_ids_entrySchema, {
    vmId: ctx.objectId(),
    filesId: shared(KCMP.FILES) ? parentIds!.filesId : ctx.objectId(),
    fsId: shared(KCMP.FS) ? parentIds!.fsId : ctx.objectId(),
    sighandId: ctx.objectId(),
    ...ctx.nsIds(pid),
  });
  const forChildren = ctx.nestedPids.forChildren.get(pid);
  if (forChildren) ids.pidForChildrenNsId = ctx.nsId(forChildren);
  ctx.ids.set(pid, ids);
  const vpid = ctx.pids.virt(pid);
  ctx.image(`core-${vpid}.img`, "CORE").entry(core_entrySchema, coreEntry(state, ctx));
  for (const th of threads) {
    ctx.image(`core-${ctx.pids.virt(th.tid)}.img`, "CORE").entry(
      core_entrySchema,
      threadCoreEntry(th, ctx),
    );
  }
  ctx.image(`ids-${vpid}.img`, "IDS").entry(task_kobj_ids_entrySchema, ids);
  checkSysvAttachments(pid, vmas);
  dumpMm(ctx, files, state, vmas, sockets, guards, aios);
  dumpShmem(ctx, pid, vmas);
  // Segments of the tree's own IPC namespace are all in its images already.
  if (!ownNamespace(tree.root, "ipc")) dumpSysvShm(ctx, pid, vmas);
  await ctx.checkpoint("mm");
  if (!parentIds || ids.filesId !== parentIds.filesId) {
    dumpFiles(ctx, files, ids.filesId, taskFiles);
  }
  const cwdId = ctx.fileId(), rootId = ctx.fileId();
  // In the tree's own mount namespaces, the mount each is on names the namespace (as criu).
  const mntId = (which: string) => ctx.mntNs ? mntIdOf(`/proc/${pid}/${which}`) : undefined;
  writeRegFile(
    files,
    regFileEntry(cwdId, fsDir(ctx, pid, cwdId, "cwd", state.cwd), {
      flags: O.DIRECTORY,
      mntId: mntId("cwd"),
    }),
  );
  writeRegFile(
    files,
    regFileEntry(rootId, fsDir(ctx, pid, rootId, "root", state.root), {
      flags: O.DIRECTORY,
      mntId: mntId("root"),
    }),
  );
  ctx.image(`fs-${vpid}.img`, "FS").entry(
    fs_entrySchema,
    create(fs_entrySchema, { cwdId, rootId, umask: state.status.umask }),
  );
  return ids;
}

/**
 * Writes inventory.img as criu writes it (image version, per-id fdinfo and namespaces, no LSM,
 * ours named), with a dump's own fields (`extra`).
 */
export function writeInventory(
  ctx: DumpContext,
  extra: MessageInitShape<typeof inventory_entrySchema> = {},
): void {
  ctx.image("inventory.img", "INVENTORY").entry(
    inventory_entrySchema,
    create(inventory_entrySchema, {
      imgVersion: IMAGES_VERSION,
      fdinfoPerId: true,
      nsPerId: true,
      lsmtype: lsmtype.NO_LSM,
      denoCriu: VERSION,
      ...extra,
    }),
  );
}

/** Writes stats-dump (in the work directory, as criu). */
export function writeStats(ctx: DumpContext): void {
  const s = ctx.stats;
  // criu writes it in its work directory, where podman reads it (--print-stats).
  const work = ctx.opts.workDir;
  const apart = work !== undefined && work !== ctx.opts.imagesDir;
  const image = apart
    ? new ImageWriter(work, "stats-dump", "STATS")
    : ctx.image("stats-dump", "STATS");
  image.entry(
    stats_entrySchema,
    create(stats_entrySchema, {
      dump: create(dump_stats_entrySchema, {
        freezingTime: s.freezingUs,
        frozenTime: s.frozenUs,
        memdumpTime: Math.round(s.memdumpUs),
        memwriteTime: Math.round(s.memwriteUs),
        pagesScanned: BigInt(s.pagesScanned),
        pagesSkippedParent: BigInt(s.pagesSkippedParent),
        pagesWritten: BigInt(s.pagesWritten),
        shpagesWritten: BigInt(s.shpagesWritten),
        pagesLazy: BigInt(s.pagesLazy),
      }),
    }),
  );
  if (apart) image.close();
  ctx.flush();
}
