/**
 * `readDump`: reads and checks every image a restore needs before anything is created, so that
 * a missing file, a wrong magic, a truncated entry or a short pages file is one clear error
 * naming the file.
 *
 * @module
 */
import type { ImagesDir } from "../images/images_dir.ts";
import { exists } from "../util/exists.ts";
import type { IpcNamespace } from "../dump/ipc_ns.ts";
import { NETNS_RAW_IMAGES, type NetnsState } from "../net/netns.ts";
import { create, isFieldSet } from "../images/protobuf.ts";
import { entryFlags, entryPages, pagemapName, PE_PARENT, PE_PRESENT } from "../pagemap/pagemap.ts";
import { dirname, join } from "../util/path.ts";
import {
  type core_entry,
  core_entrySchema,
  seccomp_mode,
  type task_kobj_ids_entry,
  task_kobj_ids_entrySchema,
} from "../../proto/gen/core_pb.ts";
import {
  fd_types,
  type fdinfo_entry,
  fdinfo_entrySchema,
  type file_entry,
  file_entrySchema,
  type file_lock_entry,
  file_lock_entrySchema,
  type fs_entry,
  fs_entrySchema,
  ghost_chunk_entrySchema,
  type ghost_file_entry,
  ghost_file_entrySchema,
  type memfd_inode_entry,
  memfd_inode_entrySchema,
  pipe_data_entrySchema,
  type reg_file_entry,
  remap_file_path_entrySchema,
  remap_type,
  sk_packet_entrySchema,
  type tty_data_entry,
  tty_data_entrySchema,
  type tty_info_entry,
  tty_info_entrySchema,
} from "../../proto/gen/files_pb.ts";
import {
  type inventory_entry,
  inventory_entrySchema,
  ipc_msg_entrySchema,
  ipc_msgSchema,
  ipc_sem_entrySchema,
  type ipc_shm_entry,
  ipc_shm_entrySchema,
  ipc_var_entrySchema,
  type mnt_entry,
  mnt_entrySchema,
  net_device_entrySchema,
  netns_entrySchema,
  type pstree_entry,
  pstree_entrySchema,
  seccomp_entrySchema,
  type seccomp_filter,
  seccomp_filterSchema,
  type timens_entry,
  timens_entrySchema,
  userns_entrySchema,
  type utsns_entry,
  utsns_entrySchema,
} from "../../proto/gen/misc_pb.ts";
import { IdMap, throughMap, type UserNamespace } from "../tree/userns.ts";
import {
  type mm_entry,
  mm_entrySchema,
  pagemap_entrySchema,
  pagemap_headSchema,
  type vma_entry,
} from "../../proto/gen/mm_pb.ts";
import { checkRingEntry, isRingFile, ringMaker } from "./io_uring.ts";
import { checkAioEntries } from "./aio.ts";
import {
  checkHeader,
  decodeEntries,
  ImageError,
  readHeadEntry,
  readImage,
  readImageBytes,
} from "../images/image.ts";

/** Everything the images say about one task. */
export interface TaskImages {
  pstree: pstree_entry;
  core: core_entry;
  /** Cores of the threads other than the leader, by tid. */
  threadCores: Map<number, core_entry>;
  /** A zombie: only pstree and core (with the exit status) are meaningful. */
  zombie: boolean;
  ids: task_kobj_ids_entry;
  mm: mm_entry;
  fs: fs_entry;
  fds: fdinfo_entry[];
  /**
   * Pagemap entries after the head; those in the parent images (PE_PARENT) resolved into
   * present runs of the image that holds them.
   */
  pagemap: PagemapRun[];
  /** The pages-N.img path (of these images). */
  pagesPath: string;
  /** The pages files the entries read from: these images' first, then parents' as needed. */
  pagesPaths: string[];
  /** For each pagemap entry, the pages file (index in pagesPaths) that holds its pages. */
  pageFile: number[];
  /** For each pagemap entry, the images it comes from: 0 these, 1 their parent, ... */
  pageLevel: number[];
  /** Offset of each pagemap entry's first page in its pages file (present entries only). */
  pageOffsets: number[];
  /** Guard regions (MADV_GUARD_INSTALL), taken out of mm's entries (criu writes them there). */
  guards: { start: bigint; end: bigint }[];
}

/** criu's VMA_AREA_GUARD. */
const VMA_AREA_GUARD = 1 << 16;

/** A whole dump. */
export interface DumpImages {
  dir: ImagesDir;
  inventory: inventory_entry;
  tasks: TaskImages[];
  /** files.img, by id. */
  files: Map<number, file_entry>;
  /**
   * The regular-file entries criu writes beside a file of another type under the same id (a
   * tun file's /dev/net/tun, with its open flags), by id.
   */
  regBeside: Map<number, reg_file_entry>;
  /** Pipe contents by pipe id, with the pipe buffer size. */
  pipeData: Map<number, { data: Uint8Array; size: number }>;
  /** Queued data of sockets by file id (sk-queues.img). */
  /** Queued messages of unix sockets by socket file entry, with the file entries in flight. */
  skQueues: Map<number, { data: Uint8Array; rights: number[] }[]>;
  /** System V shared memory segments by IPC id, with their contents. */
  sysvShm: Map<number, { entry: ipc_shm_entry; data: Uint8Array }>;
  /** memfd inodes by inode id (memfd.img). */
  memfds: Map<bigint, memfd_inode_entry>;
  /** File locks (filelocks.img). */
  locks: file_lock_entry[];
  /** Terminals (tty-info.img). */
  ttys: tty_info_entry[];
  /** Unread bytes of ptys (tty-data.img), by the tty-info id of the side they were read from. */
  ttyData: tty_data_entry[];
  /** Named pipe contents by inode (fifo-data.img). */
  fifoData: Map<number, { data: Uint8Array; size: number }>;
  /** Deleted files by the id of their file entry: attributes and contents. */
  /** Deleted files by the file entry they restore: the ghost (one per inode) and its data. */
  ghosts: Map<number, GhostImage>;
  /** Deleted files still linked elsewhere, by file entry: the link the dump made (link remap). */
  linked: Map<number, reg_file_entry>;
  /** /proc/N directories of tasks gone (criu's PROCFS remap), by file entry: N. */
  deadProcs: Map<number, number>;
  /** seccomp filters (seccomp.img): each thread's chain ends at its core's `seccompFilter`. */
  seccompFilters: seccomp_filter[];
  /** The tree's own UTS namespace (utsns-ID.img), when the root had one. */
  uts?: utsns_entry;
  /**
   * The tree's own user namespace (userns-ID.img), when the root had one: its id maps. The
   * images hold ids as the tree sees them; criu turns them into its own where it acts for
   * the tree (see {@link outsideUid}).
   */
  userns?: UserNamespace;
  /**
   * Whether the root was the init of a PID namespace of its own: the tree comes back in a new
   * one, with the images' ids in it (virtual ids; criu sees others).
   */
  pidNs: boolean;
  /** Whether the root had a cgroup namespace of its own (unshared again at its roots). */
  cgroupNs: boolean;
  /** The tree's own IPC namespace (ipcns-var/shm/msg/sem-ID.img), when the root had one. */
  ipcNs?: IpcNamespace;
  /** The tree's own network namespace (netdev-ID.img, netns-ID.img, ...), when it had one. */
  netns?: NetnsState;
  /**
   * Network namespaces nested in the tree's (a task's other than the root's), by id; made by
   * the first task in each (restore/nested_netns.ts).
   */
  nestedNets: Map<number, NetnsState>;
  /**
   * The clocks the tree's time namespace starts from: the root's own namespace's
   * (timens-ID.img), else criu's at the dump (timens-0.img); undefined without either.
   */
  timens?: timens_entry;
  /** Whether that namespace was the root's own (not criu's). */
  ownTimens: boolean;
  /** Shared anonymous memory objects by inode: their pages (offset in the object, data). */
  shmem: Map<bigint, ShmemPages>;
  /** The tree's own mount namespace (mountpoints-ID.img), when the root had one. */
  mntNs?: { id: number; entries: mnt_entry[] };
  /** Mount namespaces nested in it (made by tasks of the tree), by id. */
  nestedMnts: Map<number, mnt_entry[]>;
  /**
   * Proc mounts of PID namespaces nested in the tree's (`pidns_init`), taken out of their
   * namespace's mounts: each mounted by that namespace's init once it is made.
   */
  lateProcs: { nsId: number; entry: mnt_entry }[];
  /** Where criu reaches the paths of each nested mount namespace once made, by id. */
  fsRoots: Map<number, string>;
  /**
   * Masters of ptys of a devpts made anew, made with the mounts (a mount binds the slave: a
   * console), by the slave's path in the tree; taken by the pty's restore.
   */
  premadePtys: Map<string, number>;
  /**
   * Where the tree's paths are reached from criu once its own mount namespace is made
   * (/proc/ROOT/root); "" until then, and without one. See {@link hostPath}.
   */
  fsRoot: string;
  /** The root task's PID as criu sees it, once made (0 until then). */
  rootPid: number;
}

/**
 * The mount namespace of each mount of the tree's own namespaces (the root's and those nested
 * in it), by mount id (the kernel's, unique); derived once for each dump.
 */
export function mountNamespaces(dump: DumpImages): ReadonlyMap<number, number> {
  let out = mountNamespacesOf.get(dump);
  if (!out) {
    out = new Map();
    for (const e of dump.mntNs?.entries ?? []) out.set(e.mntId, dump.mntNs!.id);
    for (const [id, es] of dump.nestedMnts) for (const e of es) out.set(e.mntId, id);
    for (const { nsId, entry } of dump.lateProcs) out.set(entry.mntId, nsId);
    mountNamespacesOf.set(dump, out);
  }
  return out;
}
const mountNamespacesOf = new WeakMap<DumpImages, Map<number, number>>();

/**
 * Where criu reaches path `path` of the tree (through its own mount namespace's root, or that
 * of mount namespace `nsId` nested in it).
 */
export function hostPath(dump: DumpImages, path: string, nsId?: number): string {
  return (nsId !== undefined && dump.fsRoots.get(nsId) || dump.fsRoot) + path;
}

/** The dumped pages of one shmem object: runs of pages in one pages file. */
export interface ShmemPages {
  pagesPath: string;
  /** Each run's offset in the object, its length in bytes, and where it starts in the file. */
  runs: { offset: bigint; bytes: number; fileOffset: number }[];
}

/**
 * Reads the runs of `pages` from their pages file, handing each to `each` with its offset in
 * the object; returns the number of pages read.
 */
export function readShmemRuns(
  pages: ShmemPages,
  each: (offset: bigint, bytes: Uint8Array) => void,
): number {
  using f = Deno.openSync(pages.pagesPath, { read: true });
  let n = 0;
  for (const r of pages.runs) {
    const buf = new Uint8Array(r.bytes);
    f.seekSync(r.fileOffset, Deno.SeekMode.Start);
    for (let got = 0; got < r.bytes;) {
      const k = f.readSync(buf.subarray(got));
      if (!k) throw new ImageError(`Image ${pages.pagesPath} ended early`);
      got += k;
    }
    each(r.offset, buf);
    n += r.bytes / 4096;
  }
  return n;
}

/** File types a restore knows how to make. */
const SUPPORTED_FILES = new Set([
  fd_types.REG,
  fd_types.NETLINKSK,
  fd_types.PIDFD,
  fd_types.PIPE,
  fd_types.TTY,
  fd_types.NS,
  fd_types.PACKETSK,
  fd_types.FANOTIFY,
  fd_types.EVENTFD,
  fd_types.SIGNALFD,
  fd_types.TIMERFD,
  fd_types.EVENTPOLL,
  fd_types.UNIXSK,
  fd_types.INETSK,
  fd_types.FIFO,
  fd_types.INOTIFY,
  fd_types.MEMFD,
  fd_types.TUNF,
]);

function one<T>(path: string, entries: { message: T }[]): T {
  if (entries.length !== 1) {
    throw new ImageError(`Image ${path} has ${entries.length} entries, expected 1`);
  }
  return entries[0].message;
}

/** Reads the images of `dir` for a restore. */
export function readDump(dir: ImagesDir, emptyNet = false): DumpImages {
  if (!exists(dir.path)) throw new ImageError(`Images directory ${dir.path} does not exist`);
  const p = (f: string) => dir.file(f);
  const names = dir.names();
  const inventory = one(
    p("inventory.img"),
    readImage(p("inventory.img"), "INVENTORY", inventory_entrySchema),
  );
  if (inventory.imgVersion !== 2) {
    throw new ImageError(
      `Image ${p("inventory.img")} has image version ${inventory.imgVersion}, expected 2`,
    );
  }
  const pstree = readImage(p("pstree.img"), "PSTREE", pstree_entrySchema).map((e) => e.message);
  if (!pstree.length) throw new ImageError(`Image ${p("pstree.img")} lists no task`);

  const files = new Map<number, file_entry>();
  const regBeside = new Map<number, reg_file_entry>();
  for (const { message: f } of readImage(p("files.img"), "FILES", file_entrySchema)) {
    const had = files.get(f.id);
    if (had?.type === fd_types.REG && f.type !== fd_types.REG && had.reg) {
      regBeside.set(f.id, had.reg);
    } else if (had && had.type !== fd_types.REG && f.type === fd_types.REG && f.reg) {
      regBeside.set(f.id, f.reg);
      continue;
    }
    files.set(f.id, f);
  }

  const readPipeData = (file: string, type: "PIPES_DATA" | "FIFO_DATA") => {
    const out = new Map<number, { data: Uint8Array; size: number }>();
    if (!exists(p(file))) return out;
    for (
      const e of readImage(p(file), type, pipe_data_entrySchema, { payloadSize: (m) => m.bytes })
    ) {
      out.set(e.message.pipeId, { data: e.payload ?? new Uint8Array(), size: e.message.size ?? 0 });
    }
    return out;
  };
  const pipeData = readPipeData("pipes-data.img", "PIPES_DATA");
  const fifoData = readPipeData("fifo-data.img", "FIFO_DATA");
  // In our images every pipe and FIFO has an entry, empty or not: one missing means a missing
  // image. criu writes entries only for pipes with data (and no image when all are empty).
  for (const f of inventory.denoCriu ? files.values() : []) {
    const [id, data, img] = f.pipe
      ? [f.pipe.pipeId, pipeData, "pipes-data.img"]
      : f.fifo
      ? [f.fifo.pipeId, fifoData, "fifo-data.img"]
      : [undefined, pipeData, ""];
    if (id !== undefined && !data.has(id)) {
      throw new ImageError(
        `Image ${p(img)} has no entry for ${f.pipe ? "pipe" : "FIFO"} ${id}` +
          (exists(p(img)) ? "" : " (the image is missing)"),
      );
    }
  }

  const readCore = (tid: number) =>
    one(p(`core-${tid}.img`), readImage(p(`core-${tid}.img`), "CORE", core_entrySchema));
  // The tasks seen so far holding each io_uring instance.
  const ringHolders = new Map<number, Set<number>>();
  const tasks = pstree.map((ps): TaskImages => {
    const pid = ps.pid;
    const core = readCore(pid);
    if (core.tc && core.tc.taskState === 2 /* TASK_DEAD: a zombie */) {
      return {
        pstree: ps,
        core,
        threadCores: new Map(),
        zombie: true,
        ids: undefined as unknown as task_kobj_ids_entry,
        mm: undefined as unknown as mm_entry,
        fs: undefined as unknown as fs_entry,
        fds: [],
        pagemap: [],
        pagesPath: "",
        pagesPaths: [],
        pageFile: [],
        pageLevel: [],
        pageOffsets: [],
        guards: [],
      };
    }
    if (!core.threadInfo || !core.tc) {
      throw new ImageError(`Image ${p(`core-${pid}.img`)} has no x86-64 thread state`);
    }
    const threadCores = new Map<number, core_entry>();
    for (const tid of ps.threads) {
      if (tid === pid) continue;
      const tc = readCore(tid);
      if (!tc.threadInfo) {
        throw new ImageError(`Image ${p(`core-${tid}.img`)} has no x86-64 thread state`);
      }
      threadCores.set(tid, tc);
    }
    const ids = one(
      p(`ids-${pid}.img`),
      readImage(p(`ids-${pid}.img`), "IDS", task_kobj_ids_entrySchema),
    );
    const mm = one(p(`mm-${pid}.img`), readImage(p(`mm-${pid}.img`), "MM", mm_entrySchema));
    // A guard region may run across neighbouring mappings; never outside them.
    const maps = mm.vmas.filter((v) => !(v.status & VMA_AREA_GUARD));
    const covered = (start: bigint, end: bigint) => {
      for (let at = start; at < end;) {
        const w = maps.find((x) => x.start <= at && at < x.end);
        if (!w) return false;
        at = w.end;
      }
      return true;
    };
    const guards = mm.vmas.filter((v) => v.status & VMA_AREA_GUARD).map((v) => {
      if (!covered(v.start, v.end)) {
        throw new ImageError(
          `Image ${p(`mm-${pid}.img`)}: guard region ${v.start.toString(16)}-` +
            `${v.end.toString(16)} lies outside every mapping`,
        );
      }
      return { start: v.start, end: v.end };
    });
    mm.vmas = maps;
    const fs = one(p(`fs-${pid}.img`), readImage(p(`fs-${pid}.img`), "FS", fs_entrySchema));
    const fdPath = p(`fdinfo-${ids.filesId}.img`);
    const fds = readImage(fdPath, "FDINFO", fdinfo_entrySchema).map((e) => e.message);
    for (const fd of fds) {
      const f = files.get(fd.id);
      if (!f) {
        throw new ImageError(
          `Image ${fdPath}: fd ${fd.fd} refers to file ${fd.id}, missing from files.img`,
        );
      }
      if (isRingFile(f)) {
        checkRingEntry(f, p("files.img"));
        // Its maker comes first, holding it (the others take it from there).
        const maker = ringMaker(f);
        if (maker !== undefined && maker !== pid && !ringHolders.get(f.id)?.has(maker)) {
          throw new ImageError(
            `Image ${fdPath}: io_uring instance ${f.id} of task ${pid} is made by task ` +
              `${maker}, which does not hold it before it`,
          );
        }
        ringHolders.set(f.id, (ringHolders.get(f.id) ?? new Set()).add(pid));
      } else if (!SUPPORTED_FILES.has(f.type)) {
        throw new ImageError(
          `Cannot restore fd ${fd.fd} of task ${pid}: file type ${
            fd_types[f.type]
          } is not supported yet`,
        );
      }
    }

    // pagemap: a head naming pages-N.img, then runs; those in the parent images (PE_PARENT)
    // taken from there.
    const pages = readPages(dir, pid);
    checkAioEntries(mm, p(`mm-${pid}.img`));
    return {
      pstree: ps,
      core,
      threadCores,
      zombie: false,
      ids,
      mm,
      guards,
      fs,
      fds,
      ...pages,
    };
  });
  const shmem = new Map<bigint, ShmemPages>();
  for (const name of names) {
    const m = /^pagemap-shmem-(\d+)\.img$/.exec(name);
    if (!m) continue;
    const { head, entries } = readPagemap(p(name));
    const pagesPath = p(`pages-${head}.img`);
    let off = 0;
    const runs = entries.map((x) => {
      const r = { offset: x.vaddr, bytes: x.nrPages * 4096, fileOffset: off };
      off += r.bytes;
      return r;
    });
    checkPagesSize(pagesPath, p(name), off);
    shmem.set(BigInt(m[1]), { pagesPath, runs });
  }
  const skQueues = new Map<number, { data: Uint8Array; rights: number[] }[]>();
  if (exists(p("sk-queues.img"))) {
    for (
      const e of readImage(p("sk-queues.img"), "SK_QUEUES", sk_packet_entrySchema, {
        payloadSize: (m) => m.length,
      })
    ) {
      const q = skQueues.get(e.message.idFor) ?? [];
      const rights: number[] = [];
      for (const scm of e.message.scm) {
        if (scm.type !== 1 /* SCM_RIGHTS */) {
          throw new ImageError(
            `Image ${p("sk-queues.img")}: control messages of type ${scm.type} are not supported`,
          );
        }
        rights.push(...scm.rights);
      }
      q.push({ data: e.payload ?? new Uint8Array(), rights });
      skQueues.set(e.message.idFor, q);
    }
  }
  const ghosts = new Map<number, GhostImage>();
  const linked = new Map<number, reg_file_entry>();
  const deadProcs = new Map<number, number>();
  const byGhostId = new Map<number, GhostImage>();
  if (exists(p("remap-fpath.img"))) {
    for (const e of readImage(p("remap-fpath.img"), "REMAP_FPATH", remap_file_path_entrySchema)) {
      const r = e.message;
      if (r.remapType === remap_type.LINKED) {
        // Deleted, alive under another name: opened through the link the dump made.
        const link = files.get(r.remapId)?.reg;
        if (!link) {
          throw new ImageError(
            `Image ${p("remap-fpath.img")}: the link of file ${r.origId} (file ${r.remapId}) ` +
              `is missing from files.img`,
          );
        }
        linked.set(r.origId, link);
        continue;
      }
      if (r.remapType === remap_type.PROCFS) {
        deadProcs.set(r.origId, r.remapId);
        continue;
      }
      if (r.remapType !== remap_type.GHOST) {
        throw new ImageError(
          `Image ${p("remap-fpath.img")}: remap type ${
            remap_type[r.remapType]
          } is not supported yet`,
        );
      }
      let ghost = byGhostId.get(r.remapId);
      if (!ghost) {
        ghost = readGhost(p(`ghost-file-${r.remapId.toString(16)}.img`), r.remapId);
        byGhostId.set(r.remapId, ghost);
      }
      ghosts.set(r.origId, ghost);
    }
  }
  const locks = exists(p("filelocks.img"))
    ? readImage(p("filelocks.img"), "FILE_LOCKS", file_lock_entrySchema).map((e) => e.message)
    : [];
  const ttys = exists(p("tty-info.img"))
    ? readImage(p("tty-info.img"), "TTY_INFO", tty_info_entrySchema).map((e) => e.message)
    : [];
  const ttyData = exists(p("tty-data.img"))
    ? readImage(p("tty-data.img"), "TTY_DATA", tty_data_entrySchema).map((e) => e.message)
    : [];
  const memfds = new Map<bigint, memfd_inode_entry>();
  if (exists(p("memfd.img"))) {
    for (const e of readImage(p("memfd.img"), "MEMFD_INODE", memfd_inode_entrySchema)) {
      memfds.set(e.message.inodeId, e.message);
    }
  }
  const ownIpc = ownNamespaceId(inventory, tasks[0], "ipc");
  // In a user namespace of its own, tasks are made by tasks of the tree, which may choose
  // their ids only in a PID namespace of that user namespace.
  const userns = readUserns(dir, inventory, tasks[0]);
  const pidNs = ownNamespaceId(inventory, tasks[0], "pid") !== undefined;
  if (userns && !pidNs && (tasks.length > 1 || tasks[0].threadCores.size > 0)) {
    throw new ImageError(
      `Cannot restore task ${tasks[0].pstree.pid}: it had a user namespace of its own but ` +
        `not a PID namespace, and more than one task, which tasks of that user namespace ` +
        `would have to make with their ids in criu's PID namespace`,
    );
  }
  const sysvShm = new Map<number, { entry: ipc_shm_entry; data: Uint8Array }>();
  for (const name of names) {
    // Segments of the tree's own IPC namespace are made in it (ipcNs), not here.
    if (!/^ipcns-shm-\d+\.img$/.test(name) || name === `ipcns-shm-${ownIpc}.img`) continue;
    for (
      const x of readImage(p(name), "IPCNS_SHM", ipc_shm_entrySchema, {
        payloadSize: (m) => Math.ceil(Number(m.size) / 4) * 4,
      })
    ) {
      sysvShm.set(x.message.desc!.id, {
        entry: x.message,
        data: (x.payload ?? new Uint8Array()).subarray(0, Number(x.message.size)),
      });
    }
  }
  const mntNs = readMntNs(dir, ownNamespaceId(inventory, tasks[0], "mnt"), tasks[0]);
  const nestedMnts = readNestedMnts(dir, inventory, tasks);
  const lateProcs: DumpImages["lateProcs"] = [];
  for (
    const [nsId, entries] of [...(mntNs ? [[mntNs.id, mntNs.entries] as const] : []), ...nestedMnts]
  ) {
    for (const entry of entries.filter((e) => e.pidnsInit)) {
      lateProcs.push({ nsId, entry });
      entries.splice(entries.indexOf(entry), 1);
    }
  }
  return {
    dir,
    sysvShm,
    inventory,
    tasks,
    files,
    regBeside,
    pipeData,
    fifoData,
    shmem,
    skQueues,
    ghosts,
    linked,
    deadProcs,
    locks,
    ttys,
    ttyData,
    memfds,
    seccompFilters: readSeccomp(p("seccomp.img"), tasks),
    uts: readUts(dir, inventory, tasks[0]),
    userns,
    pidNs,
    cgroupNs: ownNamespaceId(inventory, tasks[0], "cgroup") !== undefined,
    ipcNs: ownIpc === undefined ? undefined : readIpcNs(dir, ownIpc, shmem, tasks[0]),
    netns: readNetnsImages(dir, ownNamespaceId(inventory, tasks[0], "net"), tasks[0], emptyNet),
    nestedNets: readNestedNets(dir, inventory, tasks),
    timens: readTimens(dir, inventory, tasks[0]),
    ownTimens: ownNamespaceId(inventory, tasks[0], "time") !== undefined,
    mntNs,
    nestedMnts,
    lateProcs,
    fsRoots: new Map(),
    premadePtys: new Map(),
    fsRoot: "",
    rootPid: 0,
  };
}

/** timens-ID.img of the root's own time namespace, else timens-0.img (either may be absent). */
function readTimens(
  dir: ImagesDir,
  inventory: inventory_entry,
  root: TaskImages,
): timens_entry | undefined {
  const own = ownNamespaceId(inventory, root, "time");
  const path = dir.file(`timens-${own ?? 0}.img`);
  if (own !== undefined) needNsImage(path, root, "a time");
  if (!exists(path)) return undefined;
  const [e] = readImage(path, "TIMENS", timens_entrySchema);
  return e?.message;
}

/** Throws unless image `path` is there: the root had `kind` ("an IPC") namespace of its own. */
function needNsImage(path: string, root: TaskImages, kind: string): void {
  if (!exists(path)) {
    throw new ImageError(
      `Image ${path} is missing: task ${root.pstree.pid} had ${kind} namespace of its own`,
    );
  }
}

/**
 * The id of the root's namespace of `kind` when it is not the dumper's (inventory's root_ids),
 * else undefined.
 */
function ownNamespaceId(
  inventory: inventory_entry,
  root: TaskImages,
  kind: "uts" | "time" | "pid" | "ipc" | "net" | "cgroup" | "mnt" | "user",
): number | undefined {
  const field = task_kobj_ids_entrySchema.field[`${kind}NsId`];
  const dumper = inventory.rootIds;
  if (root.zombie || !isFieldSet(root.ids, field) || !dumper || !isFieldSet(dumper, field)) {
    return undefined;
  }
  const id = root.ids[`${kind}NsId`];
  return id === dumper[`${kind}NsId`] ? undefined : id;
}

/** Zero-padded length: `n` rounded up to a multiple of `to`. */
function padded(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/**
 * The images of the root's own IPC namespace `id`: ipcns-var-ID.img (required), and the
 * segments (their bytes inline, or in pagemap-shmem-SHMID.img as criu 4.2 writes them), queues
 * and semaphore sets there are.
 */
function readIpcNs(
  dir: ImagesDir,
  id: number,
  shmem: DumpImages["shmem"],
  root: TaskImages,
): IpcNamespace {
  const p = (name: string) => dir.file(name);
  const varPath = p(`ipcns-var-${id}.img`);
  needNsImage(varPath, root, "an IPC");
  const vars = one(varPath, readImage(varPath, "IPC_VAR", ipc_var_entrySchema));
  const shm: IpcNamespace["shm"] = [];
  const shmPath = p(`ipcns-shm-${id}.img`);
  if (exists(shmPath)) {
    for (
      const x of readImage(shmPath, "IPCNS_SHM", ipc_shm_entrySchema, {
        payloadSize: (m) => m.inPagemaps ? 0 : padded(Number(m.size), 4),
      })
    ) {
      const size = Number(x.message.size);
      let data = (x.payload ?? new Uint8Array()).subarray(0, size);
      if (x.message.inPagemaps) {
        data = new Uint8Array(size);
        const pages = shmem.get(BigInt(x.message.desc!.id));
        // The last run is whole pages; the segment may end inside it.
        if (pages) {
          readShmemRuns(
            pages,
            (off, bytes) =>
              data.set(bytes.subarray(0, Math.max(0, size - Number(off))), Number(off)),
          );
        }
      }
      shm.push({ entry: x.message, data });
    }
  }
  const msg: IpcNamespace["msg"] = [];
  const msgPath = p(`ipcns-msg-${id}.img`);
  if (exists(msgPath)) {
    const bytes = readImageBytes(msgPath);
    let off = checkHeader(msgPath, bytes, "IPCNS_MSG");
    while (off < bytes.length) {
      const q = readHeadEntry(msgPath, bytes, off, ipc_msg_entrySchema);
      off = q.next;
      const messages: IpcNamespace["msg"][number]["messages"] = [];
      for (let i = 0; i < q.message.qnum; i++) {
        const m = readHeadEntry(msgPath, bytes, off, ipc_msgSchema);
        const end = m.next + padded(m.message.msize, 8);
        if (end > bytes.length) throw new ImageError(`Image ${msgPath} is truncated at ${m.next}`);
        messages.push({
          mtype: m.message.mtype,
          text: bytes.slice(m.next, m.next + m.message.msize),
        });
        off = end;
      }
      msg.push({ entry: q.message, messages });
    }
  }
  const sem: IpcNamespace["sem"] = [];
  const semPath = p(`ipcns-sem-${id}.img`);
  if (exists(semPath)) {
    for (
      const x of readImage(semPath, "IPCNS_SEM", ipc_sem_entrySchema, {
        payloadSize: (m) => padded(m.nsems * 2, 8),
      })
    ) {
      const raw = x.payload!.slice(0, x.message.nsems * 2);
      sem.push({ entry: x.message, values: new Uint16Array(raw.buffer, 0, x.message.nsems) });
    }
  }
  return { vars, shm, msg, sem };
}

/** The images of the root's own network namespace `id`, if it had one. */
function readNetnsImages(
  dir: ImagesDir,
  id: number | undefined,
  root: TaskImages,
  empty: boolean,
): NetnsState | undefined {
  if (id === undefined) return undefined;
  const p = (name: string) => dir.file(`${name}-${id}.img`);
  // External (the dump named it so): joined again, nothing of it made (runc asks for an empty
  // one too: the one it gives is).
  const given = exists(p("netns"))
    ? one(p("netns"), readImage(p("netns"), "NETNS", netns_entrySchema))
    : undefined;
  if (given?.extKey) {
    return { id, devices: [], netns: given, saved: new Map(), external: given.extKey };
  }
  // --empty-ns net: made empty, for the setup-namespaces script to fill.
  if (empty) return { id, devices: [], netns: create(netns_entrySchema, {}), saved: new Map() };
  for (const name of ["netdev", "netns"]) needNsImage(p(name), root, "a network");
  const netns = given!;
  const saved = new Map<string, Uint8Array>();
  for (const name of NETNS_RAW_IMAGES) {
    if (exists(p(name))) saved.set(name, readImageBytes(p(name)));
  }
  return {
    id,
    devices: readImage(p("netdev"), "NETDEV", net_device_entrySchema).map((e) => e.message),
    netns,
    saved,
  };
}

/**
 * The images of each network namespace nested in the tree's (a task's other than the root's
 * and criu's), by id.
 */
function readNestedNets(
  dir: ImagesDir,
  inventory: inventory_entry,
  tasks: TaskImages[],
): Map<number, NetnsState> {
  const out = new Map<number, NetnsState>();
  const root = tasks[0];
  const field = task_kobj_ids_entrySchema.field.netNsId;
  if (root.zombie || !isFieldSet(root.ids, field)) return out;
  for (const t of tasks) {
    if (t.zombie || !isFieldSet(t.ids, field)) continue;
    const id = t.ids.netNsId;
    if (id === root.ids.netNsId || id === inventory.rootIds?.netNsId || out.has(id)) continue;
    out.set(id, readNetnsImages(dir, id, t, false)!);
  }
  return out;
}

/** mountpoints-ID.img of the root's own mount namespace `id`, if it had one. */
function readMntNs(
  dir: ImagesDir,
  id: number | undefined,
  root: TaskImages,
): DumpImages["mntNs"] {
  if (id === undefined) return undefined;
  const path = dir.file(`mountpoints-${id}.img`);
  needNsImage(path, root, "a mount");
  // Written children first (as criu writes them): mountinfo's order is the other way round.
  return {
    id,
    entries: readImage(path, "MNTS", mnt_entrySchema).map((e) => e.message).reverse(),
  };
}

/**
 * mountpoints-ID.img of each mount namespace nested in the root's own (a task's other than
 * the root's and criu's), by id.
 */
function readNestedMnts(
  dir: ImagesDir,
  inventory: inventory_entry,
  tasks: TaskImages[],
): Map<number, mnt_entry[]> {
  const out = new Map<number, mnt_entry[]>();
  const root = tasks[0];
  const field = task_kobj_ids_entrySchema.field.mntNsId;
  if (root.zombie || !isFieldSet(root.ids, field)) return out;
  for (const t of tasks) {
    if (t.zombie || !isFieldSet(t.ids, field)) continue;
    const id = t.ids.mntNsId;
    if (id === root.ids.mntNsId || id === inventory.rootIds?.mntNsId || out.has(id)) continue;
    const path = dir.file(`mountpoints-${id}.img`);
    if (!exists(path)) continue; // refused by the restore's namespace check
    out.set(id, readImage(path, "MNTS", mnt_entrySchema).map((e) => e.message).reverse());
  }
  return out;
}

/** utsns-ID.img of the root's UTS namespace, when it is not the dumper's (else undefined). */
function readUts(
  dir: ImagesDir,
  inventory: inventory_entry,
  root: TaskImages,
): utsns_entry | undefined {
  const own = ownNamespaceId(inventory, root, "uts");
  if (own === undefined) return undefined;
  const path = dir.file(`utsns-${own}.img`);
  needNsImage(path, root, "a uts");
  return one(path, readImage(path, "UTSNS", utsns_entrySchema));
}

/** userns-ID.img of the root's own user namespace, when it had one. */
function readUserns(
  dir: ImagesDir,
  inventory: inventory_entry,
  root: TaskImages,
): UserNamespace | undefined {
  const own = ownNamespaceId(inventory, root, "user");
  if (own === undefined) return undefined;
  const path = dir.file(`userns-${own}.img`);
  needNsImage(path, root, "a user");
  const e = one(path, readImage(path, "USERNS", userns_entrySchema));
  const map = (extents: typeof e.uidMap, kind: string) => {
    if (!extents.length) throw new ImageError(`Image ${path} has no ${kind} map`);
    return new IdMap(extents.map(({ first, lowerFirst, count }) => ({ first, lowerFirst, count })));
  };
  return { uid: map(e.uidMap, "uid"), gid: map(e.gidMap, "gid") };
}

/**
 * Uid `id` of the tree as criu sees it (the identity without a user namespace of the tree's
 * own); a restore error names `what` when the namespace does not map it.
 */
export function outsideUid(dump: DumpImages, id: number, what: string): number {
  return outside(dump.userns?.uid, id, "uid", what);
}

/** Gid `id` of the tree as criu sees it (see {@link outsideUid}). */
export function outsideGid(dump: DumpImages, id: number, what: string): number {
  return outside(dump.userns?.gid, id, "gid", what);
}

function outside(map: IdMap | undefined, id: number, kind: string, what: string): number {
  const out = throughMap(map, id, "outside");
  if (out !== undefined) return out;
  throw new ImageError(
    `Cannot restore ${what}: ${kind} ${id} is not mapped in the tree's user namespace`,
  );
}

/**
 * seccomp.img's filters, checked against the threads that use them: every chain is in the
 * image and runs back to its first filter (each filter's `prev` comes before it).
 */
function readSeccomp(path: string, tasks: TaskImages[]): seccomp_filter[] {
  const filters = exists(path)
    ? readImage(path, "SECCOMP", seccomp_entrySchema).flatMap((e) => e.message.seccompFilters)
    : [];
  filters.forEach((f, i) => {
    if (isFieldSet(f, seccomp_filterSchema.field.prev) && f.prev >= i) {
      throw new ImageError(
        `Image ${path}: filter ${i} follows filter ${f.prev}, not one before it`,
      );
    }
    if (f.filter.length === 0 || f.filter.length % 8) {
      throw new ImageError(`Image ${path}: filter ${i} is not a BPF program`);
    }
  });
  for (const t of tasks) {
    for (const [tid, core] of [[t.pstree.pid, t.core] as const, ...t.threadCores]) {
      const tc = core.threadCore;
      if (tc?.seccompMode !== seccomp_mode.filter) continue;
      if (tc.seccompFilter >= filters.length) {
        throw new ImageError(
          `Image ${path} has no seccomp filter ${tc.seccompFilter}, which thread ${tid} uses`,
        );
      }
    }
  }
  return filters;
}

/** A deleted file, to be made again: its attributes and its data segments. */
export interface GhostImage {
  /** Its remap id: file entries with the same one are descriptions of one inode. */
  id: number;
  entry: ghost_file_entry;
  size: bigint;
  chunks: { off: bigint; data: Uint8Array }[];
}

/** ghost-file-N.img, plain (the bytes after the entry) or in chunks (holes kept). */
function readGhost(path: string, id: number): GhostImage {
  const bytes = readImageBytes(path);
  const g = readHeadEntry(
    path,
    bytes,
    checkHeader(path, bytes, "GHOST_FILE"),
    ghost_file_entrySchema,
  );
  const hasSize = isFieldSet(g.message, ghost_file_entrySchema.field.size);
  if (!g.message.chunks) {
    const data = bytes.subarray(g.next);
    if (hasSize && BigInt(data.length) !== g.message.size) {
      throw new ImageError(
        `Image ${path} holds ${data.length} bytes of a ${g.message.size}-byte file`,
      );
    }
    return { id, entry: g.message, size: BigInt(data.length), chunks: [{ off: 0n, data }] };
  }
  if (!hasSize) {
    throw new ImageError(`Image ${path} is chunked but has no size`);
  }
  const size = g.message.size;
  const chunks = decodeEntries(path, bytes, g.next, ghost_chunk_entrySchema, {
    payloadSize: (m) => Number(m.len),
  }).map((e) => {
    if (e.message.off + e.message.len > size) {
      throw new ImageError(`Image ${path} has a chunk past the file's end (${size} bytes)`);
    }
    return { off: e.message.off, data: e.payload ?? new Uint8Array() };
  });
  return { id, entry: g.message, size, chunks };
}

/** A pagemap entry, its page count read whichever way it was written. */
export interface PagemapRun {
  vaddr: bigint;
  nrPages: number;
  /** PE_* flags; an old entry's in_parent is PE_PARENT here. */
  flags: number;
}

/** One level of a chain of images: a pagemap's entries, where each one's pages start, its pages file. */
export interface PagesLevel {
  /** The pagemap image. */
  path: string;
  entries: PagemapRun[];
  /** Offset in the pages file of each entry's first page (present entries only). */
  offsets: number[];
  /** The pages-N.img beside it that its head names, checked to hold exactly its pages. */
  pages: string;
}

/** Reads the pagemap at `path` with what its pages file holds (PagesLevel). */
export function readPagesLevel(path: string): PagesLevel {
  const { head, entries } = readPagemap(path);
  const pages = join(dirname(path), `pages-${head}.img`);
  const offsets: number[] = [];
  let off = 0;
  for (const e of entries) {
    offsets.push(off);
    if (e.flags & PE_PRESENT) off += e.nrPages * 4096;
  }
  checkPagesSize(pages, path, off);
  return { path, entries, offsets, pages };
}

/** The pages of process `pid` in images `dir`, through the chain of parents. */
function readPages(
  dir: ImagesDir,
  pid: number,
): Pick<
  TaskImages,
  "pagemap" | "pageLevel" | "pagesPath" | "pagesPaths" | "pageFile" | "pageOffsets"
> {
  const levels: (PagesLevel | undefined)[] = [];
  const level = (depth: number): PagesLevel | undefined => {
    if (depth in levels) return levels[depth];
    const path = dir.ancestor(depth).file(pagemapName({ kind: "pid", id: pid }));
    if (depth > 0 && !exists(path)) return (levels[depth] = undefined);
    return (levels[depth] = readPagesLevel(path));
  };
  const own = level(0)!;
  const out: { run: PagemapRun; file: number; offset: number }[] = [];
  // Pages [vaddr, vaddr + n) from the images `depth` parents up, as runs of those holding them.
  const fromParent = (vaddr: bigint, n: number, depth: number, asked: string): void => {
    const l = level(depth);
    const end = vaddr + BigInt(n) * 4096n;
    if (!l) {
      throw new ImageError(
        `Image ${asked}: pages at ${vaddr.toString(16)} are in the parent images, which have ` +
          `none of task ${pid}`,
      );
    }
    let at = vaddr;
    for (let j = 0; j < l.entries.length && at < end; j++) {
      const e = l.entries[j];
      const eEnd = e.vaddr + BigInt(e.nrPages) * 4096n;
      if (eEnd <= at || e.vaddr >= end) continue;
      if (e.vaddr > at) break;
      const stop = eEnd < end ? eEnd : end;
      const pages = Number((stop - at) / 4096n);
      if (e.flags & PE_PRESENT) {
        out.push({
          run: { vaddr: at, nrPages: pages, flags: e.flags & ~PE_PARENT },
          file: depth,
          offset: l.offsets[j] + Number(at - e.vaddr),
        });
      } else if (e.flags & PE_PARENT) {
        fromParent(at, pages, depth + 1, l.path);
      } else break;
      at = stop;
    }
    if (at < end) {
      throw new ImageError(
        `Image ${asked}: pages at ${at.toString(16)} are in the parent images, which lack them ` +
          `(${l.path})`,
      );
    }
  };
  own.entries.forEach((e, i) => {
    if (e.flags & PE_PARENT && !(e.flags & PE_PRESENT)) fromParent(e.vaddr, e.nrPages, 1, own.path);
    else out.push({ run: e, file: 0, offset: own.offsets[i] });
  });
  const used = [...new Set(out.map((o) => o.file))].sort((a, b) => a - b);
  const index = new Map(used.map((d, i) => [d, i]));
  return {
    pagemap: out.map((o) => o.run),
    pageLevel: out.map((o) => o.file),
    pagesPath: own.pages,
    pagesPaths: used.length ? used.map((d) => levels[d]!.pages) : [own.pages],
    pageFile: out.map((o) => index.get(o.file)!),
    pageOffsets: out.map((o) => o.offset),
  };
}

/** What `criu lazy-pages` reads of one task: its mappings and its pages (TaskImages'). */
export type LazyTaskImages =
  & Pick<TaskImages, "pagemap" | "pageLevel" | "pagesPaths" | "pageFile" | "pageOffsets">
  & { pid: number; vmas: vma_entry[] };

/**
 * The tasks of the images in `dir` as `criu lazy-pages` needs them: every pstree entry (the
 * restore reports each), with the mappings and pages of those alive (undefined for a zombie).
 */
export function readLazyImages(dir: ImagesDir): { pid: number; task?: LazyTaskImages }[] {
  if (!exists(dir.path)) throw new ImageError(`Images directory ${dir.path} does not exist`);
  const p = (f: string) => dir.file(f);
  one(p("inventory.img"), readImage(p("inventory.img"), "INVENTORY", inventory_entrySchema));
  const pstree = readImage(p("pstree.img"), "PSTREE", pstree_entrySchema).map((e) => e.message);
  if (!pstree.length) throw new ImageError(`Image ${p("pstree.img")} lists no task`);
  return pstree.map(({ pid }) => {
    // A zombie has no memory (criu writes no mm image of it).
    if (!exists(p(`mm-${pid}.img`))) return { pid };
    const mm = one(p(`mm-${pid}.img`), readImage(p(`mm-${pid}.img`), "MM", mm_entrySchema));
    return { pid, task: { pid, vmas: mm.vmas, ...readPages(dir, pid) } };
  });
}

/** A pagemap image: the pages-N.img id of its head, and its entries. */
function readPagemap(path: string): { head: number; entries: PagemapRun[] } {
  const bytes = readImageBytes(path);
  const head = readHeadEntry(path, bytes, checkHeader(path, bytes, "PAGEMAP"), pagemap_headSchema);
  const entries = decodeEntries(path, bytes, head.next, pagemap_entrySchema).map((e) => ({
    vaddr: e.message.vaddr,
    nrPages: entryPages(e.message),
    flags: entryFlags(e.message),
  }));
  return { head: head.message.pagesId, entries };
}

function checkPagesSize(pagesPath: string, pagemapPath: string, need: number): void {
  if (!exists(pagesPath)) throw new ImageError(`Missing image ${pagesPath}`);
  const size = Deno.statSync(pagesPath).size;
  // Exactly: a pagemap cut at an entry boundary still decodes, but leaves pages unclaimed.
  if (size !== need) {
    throw new ImageError(
      `Image ${pagesPath} does not match ${pagemapPath}: ${size} bytes, the pagemap says ${need}`,
    );
  }
}
