/**
 * The address space: `collectVmas` reads and classifies mappings (refusing what cannot be
 * dumped), `dumpMm` writes mm-PID.img and the file entries of mapped files, `dumpPages` writes
 * pagemap-PID.img and pages-N.img.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  type aio_ring_entry,
  mm_entrySchema,
  type pagemap_entry,
  vma_entrySchema,
} from "../../proto/gen/mm_pb.ts";
import { close, O, open, PAGE_IS, pagemapScan, zeroPagePfn } from "../syscalls/mod.ts";
import {
  flaggedEntry,
  pagemapEntry,
  type PageRun,
  parentEntry,
  PE_LAZY,
  sameRanges,
  type ScanRange,
  scanTask,
  type TaskScan,
} from "../pagemap/pagemap.ts";
import { TaskPages } from "../pagemap/task_pages.ts";
import { ImagesXfer, presentRuns, type XferStats } from "../pagemap/page_xfer.ts";
import {
  classifyVma,
  isPrivateShmem,
  MAP,
  mergeVvar,
  VMA,
  type Vma,
  vmaAt,
  vmaHasPrivatePages,
} from "../pagemap/vma.ts";
import { nsLink, parseMaps, type ProcMap, readProcText } from "../tree/proc.ts";
import type { DumpContext } from "./context.ts";
import { readFrames } from "./track.ts";
import type { ImagesDir } from "../images/images_dir.ts";
import { deletedRegular, mntIdOf, regFileEntry, UnsupportedError, writeRegFile } from "./files.ts";
import { writeGhost, writeLinkRemap } from "./ghost.ts";
import type { ImageWriter } from "../images/image.ts";
import type { TaskState } from "./task.ts";
import { memfdFileEntry, registerMemfd } from "./memfd.ts";
import type { Fd } from "./file_types.ts";
import { ringUntouched } from "../net/packet.ts";
import { IORING_OFF } from "../syscalls/io_uring.ts";

/**
 * The mappings of task `pid` with their VmFlags (`maps`, else read from its smaps now), and
 * their classification; and its guard regions (madvise(MADV_GUARD_INSTALL): pages that fault on
 * any access, inside mappings).
 */
export function collectVmas(
  pid: number,
  maps = parseMaps(readProcText(pid, "smaps")),
): { maps: ProcMap[]; vmas: Vma[]; guards: { start: bigint; end: bigint }[] } {
  const vmas = mergeVvar(maps.map(classifyVma));
  for (const v of vmas) {
    if (v.unsupported) {
      throw new UnsupportedError(
        `Cannot dump mapping ${v.start.toString(16)}-${v.end.toString(16)} of task ${pid}: ` +
          `${v.unsupported} is not supported yet`,
      );
    }
  }
  return { maps, vmas, guards: guardRegions(pid, vmas) };
}

/** Guard regions of task `pid` (none where the kernel cannot show them: it has none then). */
function guardRegions(pid: number, vmas: Vma[]): { start: bigint; end: bigint }[] {
  if (!vmas.length) return [];
  const fd = open(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
  try {
    // Below the top of user space ([vsyscall] lies above it, where PAGEMAP_SCAN goes not).
    const user = vmas.filter((v) => !(v.status & VMA.AREA_VSYSCALL));
    if (!user.length) return [];
    const found = pagemapScan(fd, user[0].start, user.at(-1)!.end, PAGE_IS.GUARD);
    return typeof found === "number" ? [] : found;
  } finally {
    close(fd);
  }
}

/**
 * The mappings of task `pid` (stopped) as /proc/PID/maps shows them, classified without their
 * VmFlags (smaps' walk of every page not waited for): their places, protections and kinds.
 */
export function earlyVmas(pid: number): { maps: ProcMap[]; vmas: Vma[] } {
  const maps = parseMaps(readProcText(pid, "maps"));
  return { maps, vmas: mergeVvar(maps.map(classifyVma)) };
}

/**
 * The packet socket each mapping of a socket maps (its rings), by the mapping's start: the file
 * of a descriptor of the task, as criu finds it. Refused: a socket the task holds under no
 * descriptor, rings that were used (see ringUntouched), pages the mapping copied on write.
 */
export function socketMappings(pid: number, vmas: Vma[], fds: Fd[]): Map<bigint, number> {
  const out = new Map<bigint, number>();
  const checked = new Map<number, string | undefined>();
  for (const v of vmas) {
    if (!(v.status & VMA.AREA_SOCKET)) continue;
    const what = `mapping ${v.start.toString(16)}-${v.end.toString(16)} of task ${pid} (${v.path})`;
    const held = fds.find((f) => f.file.kind.type === "packet" && f.file.kind.ino === v.map.inode);
    if (!held || held.file.kind.type !== "packet") {
      throw new UnsupportedError(
        `Cannot dump ${what}: it maps a socket that is not a packet socket the task holds`,
      );
    }
    if (v.map.anonKb > 0) {
      throw new UnsupportedError(
        `Cannot dump ${what}: it holds ${v.map.anonKb} kB copied on write, which a ring ` +
          `mapped again would not`,
      );
    }
    const ino = held.file.kind.ino;
    if (!checked.has(ino)) checked.set(ino, ringUntouched(pid, held.fd, held.file.kind.socket));
    const why = checked.get(ino);
    if (why) throw new UnsupportedError(`Cannot dump ${what}: ${why}`);
    out.set(v.start, held.file.id);
  }
  return out;
}

/**
 * The io_uring instance each mapping of one maps (its rings), by the mapping's start: the file
 * of a descriptor of the task. Refused: an instance the task holds under no descriptor, a
 * mapping of a region it has not or past its end, a private one.
 */
export function ringMappings(pid: number, vmas: Vma[], fds: Fd[]): Map<bigint, number> {
  const out = new Map<bigint, number>();
  for (const v of vmas) {
    if (!(v.status & VMA.AREA_IO_URING)) continue;
    const what = `mapping ${v.start.toString(16)}-${v.end.toString(16)} of task ${pid} (${v.path})`;
    const held = fds.find((f) =>
      f.file.kind.type === "io_uring" && f.file.kind.ring.ino === v.map.inode
    );
    if (!held || held.file.kind.type !== "io_uring") {
      throw new UnsupportedError(
        `Cannot dump ${what}: it maps an io_uring instance the task holds no descriptor of`,
      );
    }
    const ring = held.file.kind.ring;
    const region = v.pgoff === IORING_OFF.SQES
      ? ring.sqes
      : v.pgoff === IORING_OFF.SQ_RING || v.pgoff === IORING_OFF.CQ_RING
      ? ring.rings
      : undefined;
    if (!region || v.end - v.start > BigInt(region.length)) {
      throw new UnsupportedError(
        `Cannot dump ${what}: it maps what the dump does not carry of the instance ` +
          `(offset 0x${v.pgoff.toString(16)})`,
      );
    }
    if ((v.flags & MAP.TYPE) !== MAP.SHARED || v.map.anonKb > 0) {
      throw new UnsupportedError(`Cannot dump ${what}: a private mapping of its rings`);
    }
    out.set(v.start, held.file.id);
  }
  return out;
}

/**
 * Writes mm-PID.img, adding file entries for the exe link and mapped files to `files`;
 * `sockets` names the packet socket or io_uring instance of each mapping of one (socketMappings,
 * ringMappings).
 */
export function dumpMm(
  ctx: DumpContext,
  files: ReturnType<DumpContext["image"]>,
  t: TaskState,
  vmas: Vma[],
  sockets = new Map<bigint, number>(),
  guards: { start: bigint; end: bigint }[] = [],
  aios: aio_ring_entry[] = [],
): void {
  const fileIds = ctx.mappedFiles;
  // `ino`: the inode mapped, which the path must reach in the tree's own mount namespace.
  const fileId = (path: string, flags: number, ino: number, what: string, link: string) => {
    // In the tree's own mount namespaces, the mount it is on names the namespace (as criu).
    const mntId = ctx.mntNs ? mntIdOf(link) : undefined;
    // A path names one file per mount namespace (nested ones may show another there).
    const ns = ctx.nestedMnts.size ? nsLink(t.pid, "mnt") : "";
    const key = `${flags}:${ns}:${path}`;
    let id = fileIds.get(key);
    if (id === undefined) {
      id = ctx.fileId();
      fileIds.set(key, id);
      let size: bigint | undefined, mode: number | undefined, found: number | undefined;
      try {
        const st = Deno.statSync(ctx.filePath(path, t.pid, mntId));
        size = BigInt(st.size);
        mode = st.mode ?? undefined;
        found = st.ino ?? undefined;
      } catch {
        // Mapped files are reopened by path at restore; a missing one fails there by name.
      }
      if (ctx.mntNs && found !== ino) {
        throw new UnsupportedError(
          `Cannot dump task ${t.pid}: its ${what} ${path} lies on a mount its mount ` +
            `namespace does not have (the path reaches another file there)`,
        );
      }
      writeRegFile(files, regFileEntry(id, path, { flags, size, mode, mntId }));
    }
    return id;
  };
  const exeId = fileId(
    t.exe,
    O.RDONLY,
    ctx.mntNs ? Deno.statSync(`/proc/${t.pid}/exe`).ino ?? 0 : 0,
    "executable",
    `/proc/${t.pid}/exe`,
  );
  const kept = VMA.AREA_REGULAR | VMA.AREA_VSYSCALL | VMA.AREA_AIORING;
  const entries = vmas.filter((v) => v.status & kept).map((v) => {
    const socket = sockets.get(v.start);
    const isFile = (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) !== 0 ||
      socket !== undefined;
    // A shared mapping may be made writable later (mprotect) if its file was open for writing
    // (VM_MAYWRITE, "mw"), whatever its protection now. A socket is read-write (as criu says).
    const aio = (v.status & VMA.AREA_AIORING) !== 0;
    const fdflags = socket !== undefined || aio || (v.flags & MAP.SHARED) && v.map.vmFlags.has("mw")
      ? O.RDWR
      : O.RDONLY;
    const memfd = (v.status & VMA.AREA_MEMFD) !== 0;
    let fid = 0;
    if (socket !== undefined) {
      fid = socket;
    } else if (memfd) {
      const path = `/proc/${t.pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
      const ino = registerMemfd(ctx, path, v.path, `memfd mapping at ${v.start.toString(16)}`);
      fid = memfdFileEntry(ctx, files, ino, fdflags);
    } else if (isFile && v.path.endsWith(" (deleted)")) {
      fid = deletedMapping(ctx, files, t.pid, v, fdflags);
    } else if (isFile) {
      fid = fileId(
        v.path,
        fdflags,
        v.map.inode,
        `mapping at ${v.start.toString(16)}`,
        `/proc/${t.pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`,
      );
    }
    ctx.log.debug(
      `Task ${t.pid}: vma ${v.start.toString(16)}-${v.end.toString(16)} prot 0x${
        v.prot.toString(16)
      } flags 0x${v.flags.toString(16)} status 0x${(v.status >>> 0).toString(16)} pgoff 0x${
        v.pgoff.toString(16)
      }${isFile ? ` file ${fid}` : ""} ${v.path}`,
    );
    // As criu writes a System V attach: shared anonymous memory too, opened as attached.
    const sysv = (v.status & VMA.AREA_SYSVIPC) !== 0;
    return create(vma_entrySchema, {
      start: v.start,
      end: v.end,
      pgoff: v.pgoff,
      shmid: isFile ? BigInt(fid) : v.shmid,
      prot: v.prot,
      flags: sysv ? v.flags | MAP.ANONYMOUS : v.flags,
      status: (sysv ? v.status | VMA.ANON_SHARED : v.status) >>> 0,
      fd: -1n,
      madv: v.madv || undefined,
      fdflags: isFile || sysv || aio ? fdflags : undefined,
    });
  });
  // Guard regions, as criu writes them: entries of their own after the mappings.
  for (const g of guards) {
    entries.push(
      create(vma_entrySchema, {
        start: g.start,
        end: g.end,
        pgoff: 0n,
        shmid: 0n,
        prot: 0,
        flags: 0,
        status: VMA.AREA_GUARD,
        fd: -1n,
      }),
    );
  }
  const s = t.stat;
  ctx.image(`mm-${ctx.pids.virt(t.pid)}.img`, "MM").entry(
    mm_entrySchema,
    create(mm_entrySchema, {
      mmStartCode: s.startCode,
      mmEndCode: s.endCode,
      mmStartData: s.startData,
      mmEndData: s.endData,
      mmStartStack: s.startStack,
      mmStartBrk: s.startBrk,
      mmBrk: t.brk,
      mmArgStart: s.argStart,
      mmArgEnd: s.argEnd,
      mmEnvStart: s.envStart,
      mmEnvEnd: s.envEnd,
      exeFileId: exeId,
      mmSavedAuxv: t.auxv,
      vmas: entries,
      dumpable: t.dumpable,
      thpDisabled: t.thpDisabled,
      aios,
    }),
  );
}

/** Memory tracking of a dump (dump/track.ts) for one process. */
export interface PageTracking {
  /** The parent images, when their tracking of the process is still its own. */
  parentDir?: ImagesDir;
  /** Whether the frames walked are kept for the next dump. */
  record: boolean;
  /** With `record`, once walked: the pagemap words of every page (a FrameList's bytes). */
  frames?: Uint8Array;
}

/**
 * Sends the task's private pages and their pagemap where the dump's pages go (see
 * {@link writePagePlan}); task `pid` is stopped. With `ahead`, the pages found (and perhaps
 * posted) before `vmas` came, taken when `vmas` are walked the same way, else given up.
 */
export async function dumpPages(
  ctx: DumpContext,
  pid: number,
  vmas: Vma[],
  stackPointers?: bigint[],
  track?: PageTracking,
  ahead?: PagesAhead,
): Promise<void> {
  if (ahead && sameRanges(ahead.ranges, scanRanges(vmas))) {
    const { runs, scanned, us } = ahead.scan;
    ctx.stats.pagesScanned += scanned;
    const plan = { pid, vmas, runs, stackPointers, scanUs: us };
    return await writePagePlan(ctx, plan, false, ahead.posted);
  }
  if (ahead) {
    ctx.log.info(`Task ${pid}: its mappings with their VmFlags are walked otherwise`);
    if (ahead.posted) {
      ahead.posted.abort.abort(new Error(`The pages of task ${pid} found ahead were given up`));
      await ahead.posted.written.catch(() => {});
    }
  }
  const plan = await scanPages(ctx, pid, vmas, stackPointers, track);
  await writePagePlan(ctx, plan);
}

/**
 * A task's pages found before its mappings' VmFlags are in (smaps walks every page for them,
 * some 10 ms a GiB), from its mappings as /proc/PID/maps shows them, and posted to the page
 * copiers when they take them. {@link dumpPages} takes them when the mappings with their
 * VmFlags are walked the same way: the same ranges of a stopped task, the same pages, the same
 * file. VmFlags change the walk of few mappings (a MAP_DROPPABLE one is not dumped): then the
 * file is removed, and the pages found again.
 */
export interface PagesAhead {
  ranges: ScanRange[];
  scan: TaskScan;
  /** Their file being written, waiting for its pagemap entries. */
  posted?: PostedPages;
}

/** A pages file being written ahead of its pagemap entries. */
export interface PostedPages {
  written: Promise<XferStats>;
  /** Gives the pagemap entries, which must take exactly the pages posted. */
  entries: (entries: pagemap_entry[]) => void;
  /** Gives the file up (it is removed). */
  abort: AbortController;
}

/** Whether a mapping of `path` (as maps names it) maps a device (not shared memory). */
function mapsDevice(path: string): boolean {
  return path.startsWith("/dev/") && !path.startsWith("/dev/shm/") &&
    path !== "/dev/zero (deleted)";
}

/**
 * The pages of task `pid` (stopped, its pages going into the images directory, no lazy pages),
 * found from its mappings `vmas` as /proc/PID/maps shows them (earlyVmas); posted when the page
 * copiers take them. None when it maps a device.
 */
export function pagesAhead(ctx: DumpContext, pid: number, vmas: Vma[]): PagesAhead | undefined {
  // A device's mapping may be one the dump refuses (VM_IO, VM_PFNMAP: smaps says) and whose
  // memory must not be read: none is read before its VmFlags are in.
  if (vmas.some((v) => mapsDevice(v.map.path))) return undefined;
  const ranges = scanRanges(vmas);
  const scan = scanTask(pid, ranges, Number(zeroPagePfn()));
  const xfer = ctx.pageXfer;
  const reader = new TaskPages(pid, { copiers: ctx.copiers });
  if (!(xfer instanceof ImagesXfer) || ctx.treePages || !reader.detached(scan.runs)) {
    return { ranges, scan };
  }
  xfer.open({ kind: "pid", id: ctx.pids.virt(pid) });
  const abort = new AbortController();
  const entries = Promise.withResolvers<pagemap_entry[]>();
  entries.promise.catch(() => {}); // refused when given up, perhaps before it is waited for
  abort.signal.addEventListener("abort", () => entries.reject(abort.signal.reason), {
    once: true,
  });
  const written = xfer.writeAhead(scan.runs, reader, entries.promise, abort.signal);
  // Waited for by the dump once taken (writePagePlan), and a failed dump gives it up: only a
  // failure of a file not given up is the dump's.
  ctx.deferWrite(
    written.then(() => {}, (e) => {
      if (!abort.signal.aborted) throw e;
    }),
    abort,
  );
  return { ranges, scan, posted: { written, entries: entries.resolve, abort } };
}

/** The pages of a task to dump, found: its runs (some perhaps in the parent images). */
export interface PagePlan {
  pid: number;
  vmas: Vma[];
  runs: PageRun[];
  stackPointers?: bigint[];
  scanUs: number;
  track?: PageTracking;
}

/**
 * The ranges of `vmas` whose private pages a dump walks: the vDSO whole (a restore compares it
 * with its kernel's, as criu's does); of private file mappings and private mappings of shared
 * memory only the pages copied on write.
 */
export function scanRanges(vmas: readonly Vma[]): ScanRange[] {
  const out: ScanRange[] = [];
  for (const v of vmas) {
    if (v.status & VMA.AREA_VDSO) {
      out.push({ start: v.start, end: v.end, whole: true, skipFilePages: false });
    } else if (vmaHasPrivatePages(v)) {
      const skipFilePages = (v.status & VMA.FILE_PRIVATE) !== 0 || isPrivateShmem(v);
      out.push({ start: v.start, end: v.end, whole: false, skipFilePages });
    }
  }
  return out;
}

/**
 * Finds the private pages of task `pid` (stopped), which pages of them the parent holds: the
 * walk the dump's worker made ahead (dump/dump_worker.ts) when it walked the same, else here.
 */
export async function scanPages(
  ctx: DumpContext,
  pid: number,
  vmas: Vma[],
  stackPointers?: bigint[],
  track?: PageTracking,
): Promise<PagePlan> {
  const ranges = scanRanges(vmas);
  const parentDir = track?.parentDir;
  const record = track?.record ?? false;
  let scan = await ctx.worker?.take(pid, ranges, parentDir !== undefined, record);
  if (scan) {
    ctx.log.info(`Task ${pid}: pages found by the worker in ${(scan.us / 1000).toFixed(1)} ms`);
  } else {
    const parent = parentDir ? readFrames(parentDir, ctx.pids.virt(pid)) : undefined;
    scan = scanTask(pid, ranges, Number(zeroPagePfn()), parent, record);
  }
  if (track) track.frames = scan.frames;
  ctx.stats.pagesScanned += scan.scanned;
  return { pid, vmas, runs: scan.runs, stackPointers, scanUs: scan.us, track };
}

/**
 * Sends the pages `plan` found, with their pagemap, where the dump's pages go (ctx.pageXfer:
 * the images directory or a page server), read from here (process_vm_readv, /proc/PID/mem).
 * Pages going into files are written beside the dump when they may be (by the page copiers, or
 * the dump's worker): the dump waits for them before its images are complete
 * (DumpContext.pagesFilesDone), the task stopped until then. With `running` the task runs
 * again meanwhile (a pre-dump's pages, read once the tree goes on): a page it unmapped since is
 * written as zeros (tracking dumps it again, should it come back).
 */
export async function writePagePlan(
  ctx: DumpContext,
  plan: PagePlan,
  running = false,
  posted?: PostedPages,
): Promise<void> {
  const { pid, runs, vmas, track } = plan;
  const xfer = ctx.pageXfer;
  // Without parent images of the task, every page goes (a page server may have none).
  if (
    !posted && !xfer.open({ kind: "pid", id: ctx.pids.virt(pid) }) &&
    runs.some((r) => r.inParent)
  ) {
    for (const r of runs) delete r.inParent;
  }
  // A lazy dump leaves its lazy pages in the tree (PE_LAZY alone), to serve them from there.
  const treePages = ctx.treePages;
  const entries = pagemapEntries(runs, vmas, plan.stackPointers).map((e) => {
    if (e.parent) return parentEntry(e.vaddr, e.pages);
    if (treePages && e.lazy) {
      treePages.add(ctx.pids.virt(pid), pid, e.vaddr, e.pages);
      return flaggedEntry(e.vaddr, e.pages, PE_LAZY);
    }
    return pagemapEntry(e.vaddr, e.pages, e.lazy);
  });
  const worker = ctx.worker;
  const reader = new TaskPages(pid, {
    copiers: ctx.copiers,
    lenient: running,
    writer: worker && ((...args) => worker.writePages(...args)),
  });
  if (track) {
    const inParent = runs.reduce((n, r) => n + (r.inParent ? r.nrPages : 0), 0);
    ctx.stats.pagesSkippedParent += inParent;
    ctx.log.info(`task ${pid}: ${inParent} pages left to the parent images`);
  }
  posted?.entries(entries);
  const written = (posted?.written ?? xfer.write(entries, reader)).then((xferred) => {
    ctx.stats.memdumpUs += plan.scanUs + xferred.readUs;
    ctx.stats.memwriteUs += xferred.writeUs;
    ctx.stats.pagesWritten += xferred.pages;
    const ms = (us: number) => `${(us / 1000).toFixed(1)} ms`;
    const took = `read in ${ms(xferred.readUs)}, written in ${ms(xferred.writeUs)}`;
    ctx.log.info(`task ${pid}: ${xferred.pages} pages in ${runs.length} runs (${took})`);
  });
  // A page server's stream or a lazy dump's pages take one task at a time.
  if (posted || xfer.toFiles && reader.detached(presentRuns(entries))) ctx.deferWrite(written);
  else await written;
}

/**
 * The file entry of a mapping of a deleted file: its contents carried as a ghost, or the file
 * linked again (--link-remap), shared with the descriptors of the same inode; one entry per
 * inode and access.
 */
function deletedMapping(
  ctx: DumpContext,
  files: ImageWriter,
  pid: number,
  v: Vma,
  fdflags: number,
): number {
  const link = `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
  const what = `mapping ${v.start.toString(16)}-${v.end.toString(16)} of task ${pid}`;
  const st = Deno.statSync(link);
  const key = `${fdflags}:${st.dev}:${st.ino}:deleted`;
  let id = ctx.mappedFiles.get(key);
  if (id !== undefined) return id;
  id = ctx.fileId();
  ctx.mappedFiles.set(key, id);
  const kind = deletedRegular(ctx, link, v.path.slice(0, -10), st, what);
  if (kind.type !== "reg") throw new Error(`Not a regular file: ${what}`);
  if (kind.ghost) writeGhost(ctx, id, kind.ghost);
  if (kind.linkRemap) writeLinkRemap(ctx, files, id, kind.linkRemap);
  writeRegFile(
    files,
    regFileEntry(id, kind.path, { flags: fdflags, size: kind.size, mode: kind.mode }),
  );
  return id;
}

/** A pagemap entry to be: pages at an address, lazy or not, or in the parent images. */
export interface Entry {
  vaddr: bigint;
  pages: number;
  lazy: boolean;
  parent?: boolean;
}

/**
 * The pagemap entries of `runs`, as criu marks them: private anonymous pages may come lazily,
 * but a page some thread's stack pointer is in, and the special mappings' and locked ones'.
 * Runs that touch (across mappings) with the same flags are one entry, as criu writes them.
 */
export function pagemapEntries(
  runs: PageRun[],
  vmas: Vma[],
  stackPointers?: bigint[],
): Entry[] {
  // The stack pointers' pages, in order: a run is cut at each of them, not walked page by page.
  const stackPages = [...new Set((stackPointers ?? []).map((sp) => sp & ~0xfffn))]
    .sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
  const entries: Entry[] = [];
  const add = (vaddr: bigint, pages: number, lazy: boolean, parent?: boolean) => {
    const last = entries.at(-1);
    if (
      last && last.lazy === lazy && last.parent === parent &&
      last.vaddr + BigInt(last.pages) * 4096n === vaddr
    ) {
      last.pages += pages;
    } else {
      entries.push({ vaddr, pages, lazy, parent });
    }
  };
  for (const r of runs) {
    if (r.inParent) {
      add(r.vaddr, r.nrPages, false, true);
      continue;
    }
    const v = vmaAt(vmas, r.vaddr);
    if (!v || !canBeLazy(v)) {
      add(r.vaddr, r.nrPages, false);
      continue;
    }
    let start = r.vaddr;
    const end = r.vaddr + BigInt(r.nrPages) * 4096n;
    for (const a of stackPages) {
      if (a < start || a >= end) continue;
      if (a > start) add(start, Number((a - start) / 4096n), true);
      add(a, 1, false);
      start = a + 4096n;
    }
    if (end > start) add(start, Number((end - start) / 4096n), true);
  }
  return entries;
}

/** Whether criu would mark the dumped pages of `v` lazy (vma_entry_can_be_lazy). */
function canBeLazy(v: Vma): boolean {
  const MAP_HUGETLB = 0x40000;
  return (v.flags & MAP.ANONYMOUS) !== 0 && (v.flags & MAP.TYPE) === MAP.PRIVATE &&
    !(v.flags & (MAP.LOCKED | MAP_HUGETLB)) &&
    !(v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR | VMA.AREA_VSYSCALL));
}
