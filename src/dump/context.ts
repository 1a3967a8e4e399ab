/**
 * State shared by the steps of one dump: options, the log, id generators, and the image
 * writers opened so far.
 *
 * @module
 */
import type { NestedPids } from "./nested_pidns.ts";
import type { MountNamespace } from "./mnt_ns.ts";
import type { mnt_entry } from "../../proto/gen/misc_pb.ts";
import type { ActionHook } from "../action_scripts.ts";
import type { Tracker } from "./track.ts";
import { ImagesXfer, type PageXfer } from "../pagemap/page_xfer.ts";
import { ImagesDir } from "../images/images_dir.ts";
import type { DumpWorker } from "./dump_worker.ts";
import { PageCopiers } from "../pagemap/page_copiers.ts";
import type { LazyServe, TreePages } from "./lazy_serve.ts";
import type { Logger } from "../log.ts";
import type { OpenFile, PipeData, TtyInfo } from "./files.ts";
import { SeccompImage } from "./seccomp.ts";
import { CgroupSets } from "./cgroups.ts";
import type { UnixSocketInfo } from "../net/unix_diag.ts";
import type { NamespaceSockets } from "../net/ns_sockets.ts";
import type { QueuedMessage } from "../net/unix.ts";
import type { task_kobj_ids_entry } from "../../proto/gen/core_pb.ts";
import type { ipc_shm_entry } from "../../proto/gen/misc_pb.ts";
import type {
  file_lock_entry,
  memfd_inode_entry,
  remap_file_path_entry,
} from "../../proto/gen/files_pb.ts";
import type { ImageWriter, MagicName } from "../images/image.ts";
import { checkInterrupt } from "../util/interrupt.ts";
import type { TcpDumpPolicy } from "../net/inet.ts";
import { DEFAULT_LOCK_METHOD, type LockMethod } from "../net/netlock.ts";
import { RepairedConnections } from "../net/tcp_conns.ts";
import type { DumpGuard } from "./guard.ts";
import { VirtualPids } from "../tree/pid_ns.ts";
import { nsLink, type ProcMap } from "../tree/proc.ts";
import type { Vma } from "../pagemap/vma.ts";
import { type IdMap, overflowId, throughMap, type UserNamespace } from "../tree/userns.ts";
import { UnsupportedError } from "./file_types.ts";

/** Options of a dump, as `criu dump` takes them. */
export interface DumpOptions {
  /** Root of the tree to dump (`-t`). */
  pid: number;
  /**
   * Memory is tracked (`--track-mem`, dump/track.ts): pages the parent images hold and the
   * tree has not written since are left to them, and the next dump may take these as parent.
   */
  trackMem?: boolean;
  /** The parent images (`--prev-images-dir`, relative to the images directory as criu's). */
  prevImagesDir?: string;
  /** Pages go to the page server there (`--page-server --address --port`), not the images. */
  pageServer?: { address?: string; port: number };
  /**
   * The lazy pages stay in the frozen tree, served there (`--lazy-pages --port`) until a lazy
   * restore has them all (dump/lazy_serve.ts).
   */
  lazyServe?: LazyServe;
  /** Where images go (`-D`); must exist. */
  imagesDir: string;
  /**
   * A pty slave whose master is outside the tree is carried (RPC's orphan_pts_master, as runc
   * asks for a container's console): the restore makes a new master for it.
   */
  orphanPtsMaster?: boolean;
  /**
   * Asks the caller for more external resources once the network is locked, as criu asks an
   * RPC caller (query-ext-files); they count as if `external` had named them.
   */
  queryExternal?: () => Promise<string[]>;
  /** Where stats-dump goes, as criu writes it: its work directory (`-W`); `imagesDir` if unset. */
  workDir?: string;
  /** Leave the tree running after the dump (`-R`). */
  leaveRunning?: boolean;
  /** Leave the tree stopped after the dump (`-s`). */
  leaveStopped?: boolean;
  /** The tree is a shell job: its session and terminal belong to the caller (`-j`). */
  shellJob?: boolean;
  /** Print dump statistics at the end (`--display-stats`). */
  displayStats?: boolean;
  /** Give up freezing after this many seconds (`--timeout`). */
  timeoutSeconds?: number;
  /**
   * A network namespace of the tree's own is not dumped (`--empty-ns net`): the restore's
   * setup-namespaces script fills the new one. It is still locked while the dump runs.
   */
  emptyNet?: boolean;
  /** Freeze the tree through this cgroup's freezer (`--freeze-cgroup`), then seize it. */
  freezeCgroup?: string;
  /** Dump file locks (`-l`); without it a locked file refuses the dump, as criu does. */
  fileLocks?: boolean;
  /**
   * A deleted file still linked elsewhere is linked again beside its old name, and restored
   * through that link (`--link-remap`); without it such a file is refused.
   */
  linkRemap?: boolean;
  /** `--external` resources: `file[MNT_ID:INODE]`, `tty[RDEV:DEV]` (hex), `unix[INO]`. */
  external?: string[];
  /** `--ext-mount-map auto`: mounts showing what criu's namespace has are external. */
  extMountAuto?: boolean;
  /** `--enable-external-sharing`, `--enable-external-masters`: for auto external mounts. */
  externalSharing?: boolean;
  externalMasters?: boolean;
  /** `--enable-fs`: file systems mounted anew at restore (they must be empty). */
  enableFs?: string[];
  /** `--cgroup-root [CONTROLLER:]/PATH`: the cgroups dumped from these roots down. */
  cgroupRoots?: string[];
  /**
   * A datagram unix socket connected to a named socket outside the tree is dumped, to be
   * connected to that name again (`--ext-unix-sk`); without it such a socket is refused.
   */
  extUnixSk?: boolean;
  /** Largest deleted file whose contents the dump carries (`--ghost-limit`), default 1 MiB. */
  ghostLimit?: number;
  /** Checkpoint established TCP connections with TCP repair (`--tcp-established`). */
  tcpEstablished?: boolean;
  /** Record TCP connections without their state, to be restored closed (`--tcp-close`). */
  tcpClose?: boolean;
  /** Drop connections waiting to be accepted instead of refusing the dump (`--skip-in-flight`). */
  skipInFlight?: boolean;
  /** How TCP connections are locked while dumped (`--network-lock`), default nftables. */
  networkLock?: LockMethod;
  /** Runs criu's action scripts (`--action-script`): pre-dump, then post-dump before the end. */
  actions?: ActionHook;
  /** Test hook: fail the dump at the named step, after the task is seized. */
  faultInject?: string;
  /** Aborted when criu is asked to stop (SIGINT, SIGTERM, SIGHUP): the dump rolls back. */
  signal?: AbortSignal;
}

/** Dump statistics, as stats-dump records them (times in microseconds). */
export interface DumpStats {
  freezingUs: number;
  frozenUs: number;
  memdumpUs: number;
  memwriteUs: number;
  pagesScanned: number;
  pagesWritten: number;
  /** Pages left to the parent images (--track-mem). */
  pagesSkippedParent: number;
  /** Pages a lazy dump left in the tree, served from there (`--lazy-pages`). */
  pagesLazy: number;
  /** Pages of shared memory written (shmem objects, once each). */
  shpagesWritten: number;
}

/** The namespace kinds ids-PID.img names, in criu's order. */
export const NS_KINDS = ["pid", "net", "ipc", "uts", "time", "mnt", "user", "cgroup"] as const;

/**
 * The namespace kinds a root may have of its own: made again at restore, with the whole tree
 * in them.
 */
export const OWN_NS_KINDS: ReadonlySet<NsKind> = new Set([
  "user",
  "uts",
  "time",
  "pid",
  "ipc",
  "net",
  "cgroup",
  "mnt",
]);

/** The CLONE_NEW* flag of each namespace kind. */
export const NS_CLONE_FLAGS: Record<NsKind, number> = {
  pid: 0x20000000,
  net: 0x40000000,
  ipc: 0x08000000,
  uts: 0x04000000,
  time: 0x80,
  mnt: 0x20000,
  user: 0x10000000,
  cgroup: 0x02000000,
};

/** One of {@link NS_KINDS}. */
export type NsKind = typeof NS_KINDS[number];

/** A network namespace nested in the tree's: its id, a task in it, its socket helper. */
export interface NestedNet {
  id: number;
  pid: number;
  sockets: NamespaceSockets;
}

/** What a dump reads of a live process as soon as the tree is frozen (dump.ts readAhead). */
export interface ProcessAhead {
  /** Its mappings with their VmFlags (smaps: a walk of all its pages), on their way. */
  mappings: Promise<ProcMap[]>;
  /** Its mappings as /proc/PID/maps shows them (mm.ts earlyVmas). */
  early: { maps: ProcMap[]; vmas: Vma[] };
  /** With --track-mem: its parent images and their tracker, if that is still its own. */
  parent?: { dir: ImagesDir; tracker: Tracker };
}

/** The context one dump runs in. */
export class DumpContext {
  readonly opts: DumpOptions;
  readonly log: Logger;
  readonly stats: DumpStats = {
    freezingUs: 0,
    frozenUs: 0,
    memdumpUs: 0,
    memwriteUs: 0,
    pagesScanned: 0,
    pagesWritten: 0,
    pagesSkippedParent: 0,
    pagesLazy: 0,
    shpagesWritten: 0,
  };
  /** Images written, by file name. */
  readonly written: string[] = [];
  /** Every open file description met so far, across the tree. */
  readonly openFiles: OpenFile[] = [];
  /** Ids of the file entries already in files.img. */
  readonly filesWritten = new Set<number>();
  /** Pipe contents by pipe inode (captured once per pipe). */
  readonly pipes = new Map<number, PipeData>();
  /** Named pipe (FIFO) contents by inode. */
  readonly fifos = new Map<number, PipeData>();
  /** Terminals by tty-info id. */
  readonly ttys = new Map<number, TtyInfo>();
  /** Established TCP connections held in repair mode, made on first need. */
  tcp?: RepairedConnections;
  /** Undoes the lock and repair mode should criu die; started with the first connection. */
  guard?: DumpGuard;
  /** The tree's processes holding each socket, by inode; read with the first connection. */
  socketHolders?: Map<number, Set<number>>;
  /** Shutdown bits of the namespace's inet sockets by inode (sock_diag), read on first need. */
  inetShutdowns?: Map<number, number>;
  /** The device of the namespace filesystem (nsfs), read on first need. */
  nsfsDev?: number;
  /** The mount ids of criu's mount namespace, read on first need. */
  ownMounts?: Set<number>;
  /**
   * By mount id: whether another mount may hide it, and then where its paths are taken (a
   * task of its namespace); worked out once for each mount (files.ts).
   */
  mountHiders?: Map<number, { pid?: number } | null>;
  /** The tree's own mount namespace, when the root has one: its mounts, read once frozen. */
  mntNs?: MountNamespace;
  /** Mount namespaces nested in it (made by tasks of the tree), by /proc/PID/ns/mnt. */
  readonly nestedMnts = new Map<string, MountNamespace>();

  /** Every mount of the tree's own mount namespaces. */
  allMounts(): mnt_entry[] {
    return [
      ...(this.mntNs?.entries ?? []),
      ...[...this.nestedMnts.values()].flatMap((n) => n.entries),
    ];
  }
  /** Whether the root has a network namespace of its own (its sockets are made in it). */
  ownNet = false;
  /** Network namespaces nested in the tree's (made by its tasks), by /proc/PID/ns/net. */
  readonly nestedNets = new Map<string, NestedNet>();
  /**
   * The root's own user namespace, when it has one: the tree's ids are carried as they are
   * seen in it ({@link DumpContext.uid}), as criu carries them.
   */
  userns?: UserNamespace;

  /** Uid `id`, as criu sees it, as the tree sees it; refused when its namespace maps none. */
  uid(id: number, what: string): number {
    return this.#inside(this.userns?.uid, id, "uid", what);
  }

  /** Gid `id`, as criu sees it, as the tree sees it (see {@link DumpContext.uid}). */
  gid(id: number, what: string): number {
    return this.#inside(this.userns?.gid, id, "gid", what);
  }

  /**
   * Uid `id` as the tree sees it, for an image field the restore does not apply (a terminal's
   * owner, other than a pty's): the kernel's overflow uid when its namespace maps none.
   */
  seenUid(id: number): number {
    return throughMap(this.userns?.uid, id, "inside") ?? overflowId("uid");
  }

  /** Gid `id` as the tree sees it (see {@link DumpContext.seenUid}). */
  seenGid(id: number): number {
    return throughMap(this.userns?.gid, id, "inside") ?? overflowId("gid");
  }

  #inside(map: IdMap | undefined, id: number, kind: string, what: string): number {
    const inside = throughMap(map, id, "inside");
    if (inside !== undefined) return inside;
    // The tree sees it as the overflow id: made again, it would be another one's.
    throw new UnsupportedError(
      `Cannot dump ${what}: ${kind} ${id} is not mapped in the tree's user namespace`,
    );
  }

  /**
   * The locks of the tree's network namespaces while they are held (its own, nested ones): a
   * task in each, the method, the root's id.
   */
  readonly netnsLocks: { pid: number; method: LockMethod; vroot: number }[] = [];
  /** The tree's tasks in PID namespaces nested in its own (nested_pidns.ts). */
  nestedPids: NestedPids = { inner: new Map(), forChildren: new Map(), namespaces: new Map() };
  /** Unix sockets of the network namespace (sock_diag), read on first need. */
  unixSockets?: Map<number, UnixSocketInfo>;
  /** The listener each client waiting in a listener's queue is queued at (made once). */
  queuedClients?: Map<number, number>;
  /** System V shared memory segments by IPC id, with their contents. */
  readonly sysvShm = new Map<number, { entry: ipc_shm_entry; data: Uint8Array }>();
  /** Kernel object ids written so far, by PID. */
  readonly ids = new Map<number, task_kobj_ids_entry>();
  /** memfd inodes by inode number (memfd.img, as criu names it). */
  readonly memfds = new Map<number, memfd_inode_entry>();
  /** filelocks.img entries. */
  readonly locks: file_lock_entry[] = [];
  /** Locks already recorded (a lock shows on every descriptor of its file). */
  readonly lockKeys = new Set<string>();
  /** seccomp filters of the tree (seccomp.img). */
  readonly seccomp = new SeccompImage();
  /** The cgroups of the tree's threads (cgroup.img). */
  readonly cgroups = new CgroupSets();
  /**
   * epoll sets in flight in unix queues: the copy here (`local`), the task that first holds the
   * socket whose queue has it (`pid`; the restore adds its targets there) and that socket.
   */
  readonly inFlightEpolls: {
    file: OpenFile;
    local: number;
    pid: number;
    carrier: string;
    checked?: boolean;
  }[] = [];
  /**
   * inotify watches on deleted files, by the inotify descriptor that holds each: the file must
   * come back with the tree (a ghost or a link remap of one of its files), checked once every
   * file is collected.
   */
  readonly deletedWatches: { what: string; sdev: number; ino: bigint }[] = [];
  /** Ghost images written, by "dev:ino" of the deleted inode. */
  readonly ghostIds = new Map<string, number>();
  /** remap-fpath.img entries (ghost files). */
  readonly remaps: remap_file_path_entry[] = [];
  /** Queued data of unix sockets by file id (sk-queues.img). */
  readonly skQueues = new Map<number, QueuedMessage[]>();
  #nextFileId = 1;
  #nextPagesId = 1;
  /** Shmem objects whose pages are dumped once every process is collected: by inode, a path. */
  readonly shmemObjects = new Map<bigint, string>();
  /**
   * File entries of mapped files and executables, by open flags and path: one entry for a file
   * however many tasks map it, as criu writes them (a child's mapping of the same file is then
   * known at restore for the one it inherits).
   */
  readonly mappedFiles = new Map<string, number>();
  #nextObjectId = 1;

  constructor(opts: DumpOptions, log: Logger) {
    this.opts = opts;
    this.log = log;
    this.dir = new ImagesDir(opts.imagesDir);
    this.pageXfer = new ImagesXfer({
      dir: this.dir,
      pagesId: () => this.pagesId(),
      image: (file, type) => this.image(file, type),
      written: this.written,
    });
  }

  /** The tree's task ids as the images carry them (set once the tree is frozen). */
  pids: VirtualPids = VirtualPids.identity();
  /** With --track-mem: each process's tracker and the frames of its images' pages, by id. */
  readonly trackers = new Map<number, Tracker>();
  readonly frames = new Map<number, Uint8Array>();
  /** The images directory. */
  readonly dir: ImagesDir;

  /** The parent images (`--prev-images-dir`, linked from the images directory), if any. */
  get parentImages(): ImagesDir | undefined {
    return this.opts.prevImagesDir ? this.dir.parent : undefined;
  }
  /** Where the pages go: the images directory, or a page server (`--page-server`). */
  pageXfer: PageXfer;
  /** What the dump read of each live process once the tree was frozen (dump.ts readAhead). */
  readonly ahead = new Map<number, ProcessAhead>();
  /** Pages files being written beside the dump (by the copiers or the worker). */
  readonly #writes: Promise<void>[] = [];
  /** The threads that write the large pages files (disposed with the dump). */
  readonly copiers = new PageCopiers();

  /** Pages files written ahead of their pagemap entries (mm.ts pagesAhead), to give up. */
  readonly #aheads: AbortController[] = [];

  /**
   * Lets pages file `write` go on beside the dump; {@link pagesFilesDone} waits for it. A
   * failed dump gives it up through `abort`, when it waits for more than its pages.
   */
  deferWrite(write: Promise<void>, abort?: AbortController): void {
    write.catch(() => {}); // its failure is the dump's, once waited for
    this.#writes.push(write);
    if (abort) this.#aheads.push(abort);
  }

  /** Waits for the pages files written beside the dump; throws the first failure. */
  async pagesFilesDone(): Promise<void> {
    this.copiers.help();
    await Promise.all(this.#writes.splice(0));
  }

  /**
   * Waits for the pages files written beside a failed dump to end, however they end (the
   * copiers told to stop first), before the tree is let go.
   */
  async writesSettled(): Promise<void> {
    this.copiers.stop();
    for (const a of this.#aheads.splice(0)) a.abort(new Error("The dump failed"));
    await Promise.allSettled(this.#writes.splice(0));
  }

  /** With --track-mem: the worker that walks the processes' pages beside the dump. */
  worker?: DumpWorker;
  /** The lazy pages left in the tree (`lazyServe`). */
  treePages?: TreePages;

  /** Process group or session `real` (as criu sees it) in the tree's PID namespace. */
  virtGroup(real: number, what: string): number {
    if (!this.pids.own || real === 0) return real;
    for (const t of this.treeGroups) {
      if (t.real.pgid === real) return t.virt.pgid;
      if (t.real.sid === real) return t.virt.sid;
    }
    return this.pids.virt(real, what);
  }

  /** Real and virtual groups and sessions of the tree's processes. */
  readonly treeGroups: {
    real: { pgid: number; sid: number };
    virt: { pgid: number; sid: number };
  }[] = [];

  /** What to do with TCP connections met while collecting files. */
  tcpPolicy(): TcpDumpPolicy {
    if (this.opts.tcpEstablished) {
      this.tcp ??= new RepairedConnections(
        // A namespace of the tree's own is locked whole (dump.ts lockNetns).
        this.ownNet ? "skip" : this.opts.networkLock ?? DEFAULT_LOCK_METHOD,
        // Named by the root's id in the images, which is what the restore knows.
        this.pids.virt(this.opts.pid),
        this.log,
        // Inside the tree's own network namespace, where its connections are.
        this.ownNet ? this.opts.pid : undefined,
      );
      return { repair: this.tcp, skipInFlight: this.opts.skipInFlight };
    }
    return { close: this.opts.tcpClose, skipInFlight: this.opts.skipInFlight };
  }

  /** A fresh id for a file entry (files.img ids are unique across the dump). */
  fileId(): number {
    return this.#nextFileId++;
  }

  /** The id of the next pages-N.img. */
  pagesId(): number {
    return this.#nextPagesId++;
  }

  /** A fresh kernel-object id (vm, files, fs, sighand) for ids-PID.img. */
  objectId(): number {
    return this.#nextObjectId++;
  }

  /**
   * The namespace ids of task `pid` (pid_ns_id, net_ns_id, ...) for ids-PID.img and
   * inventory's root_ids, as criu writes them: one id per namespace, the same for every task
   * in it (and for criu itself, whose root_ids they are when it shares them).
   */
  nsIds(pid: number): Record<`${NsKind}NsId`, number> {
    const out = {} as Record<`${NsKind}NsId`, number>;
    for (const kind of NS_KINDS) {
      let link = "";
      try {
        link = Deno.readLinkSync(`/proc/${pid}/ns/${kind === "uts" ? "uts" : kind}`);
      } catch {
        continue; // a kernel without that namespace kind
      }
      out[`${kind}NsId`] = this.nsId(link);
    }
    return out;
  }
  readonly #nsIds = new Map<string, number>();

  /** The id of the namespace a /proc/PID/ns link names (`net:[INODE]`), as in ids-PID.img. */
  nsId(link: string): number {
    let id = this.#nsIds.get(link);
    if (id === undefined) this.#nsIds.set(link, id = this.#nsIds.size + 1);
    return id;
  }

  /** Files in flight in unix queues (SCM_RIGHTS) and the copies here that name them. */
  readonly inFlight: OpenFile[] = [];
  /** The unix sockets whose queues were walked for descriptors in flight, by inode. */
  readonly walkedQueues = new Set<number>();
  readonly inFlightFds: number[] = [];

  /** Every task (thread) of the dumped tree: what a pidfd may refer to. */
  readonly treeTids = new Set<number>();
  /** The live processes of the tree whose descriptor table another of them shares. */
  readonly sharingFiles = new Set<number>();

  /**
   * Link remaps made for this dump, by inode ("DEV:INO", with "@MNT" for the mount it is held
   * through in a tree with mounts of its own): the path of each (removed if the dump fails).
   */
  readonly linkRemaps = new Map<string, string>();
  /** The file entry of each link remap, by its path. */
  readonly linkRemapIds = new Map<string, number>();

  /** Where criu reaches each link remap (by its name in the tree), to remove it. */
  readonly linkRemapsAt = new Map<string, string>();

  /** The mount each link remap was made on (by its name), when the tree has mounts of its own. */
  readonly linkRemapMounts = new Map<string, number>();

  /**
   * Where criu reaches path `path` of the tree (of task `pid`, whose mount namespace may be a
   * nested one, else the root's): through that task's root when the tree has a mount
   * namespace of its own.
   */
  hostPath(path: string, pid?: number): string {
    return this.mntNs ? `/proc/${pid ?? this.mntNs.pid}/root${path}` : path;
  }

  /**
   * Where criu reaches path `path` of a file of task `pid` on mount `mntId`: through the root
   * of a task of the tree's mount namespace that has that mount (a task in a nested one, its
   * root pivoted since, may hold files of the mounts it left), else {@link hostPath}'s.
   */
  filePath(path: string, pid: number, mntId?: number): string {
    if (!this.mntNs || mntId === undefined) return this.hostPath(path, pid);
    const has = (ns: MountNamespace) => ns.entries.some((e) => e.mntId === mntId);
    const mine = this.nestedMnts.get(nsLink(pid, "mnt")) ?? this.mntNs;
    if (has(mine)) return this.hostPath(path, pid);
    const owner = [this.mntNs, ...this.nestedMnts.values()].find(has);
    return this.hostPath(path, owner?.pid ?? pid);
  }

  /** Opens an image for writing; {@link DumpContext.close} writes it. */
  image(file: string, type: MagicName | "RAW"): ImageWriter {
    const w = this.dir.writer(file, type);
    this.#pending.push(w);
    this.written.push(file);
    return w;
  }
  #pending: ImageWriter[] = [];

  /**
   * Writes every image opened with {@link DumpContext.image}, unsynced: the images directory's
   * files are synced together once all are written (ImagesDir.sync).
   */
  flush(): void {
    for (const w of this.#pending) w.close(false);
    this.#pending = [];
  }

  /**
   * Between steps: throws when criu was asked to stop, or when the fault-injection hook names
   * `step` (tests prove the dump unwinds).
   */
  async checkpoint(step: string): Promise<void> {
    // The last before the tree may go sees every signal sent so far.
    await checkInterrupt(this.opts.signal, step === "sync");
    if (this.opts.faultInject === step) throw new Error(`Fault injected at ${step}`);
  }
}
