/**
 * io_uring instances: carried when idle (no request in flight), refused by name otherwise.
 *
 * The kernel shows little of an instance (fdinfo: heads, tails, registered files), and nothing
 * of how it was set up: its state is read with BPF (syscalls/io_uring.ts), its rings through a
 * mapping of it here. Carried: its setup flags (those of `CARRIED_SETUP`), sizes, clock, the
 * kernel's counters and both regions' bytes (heads, tails, unsubmitted SQEs and unreaped CQEs
 * with them), its registered files (by the task's descriptors of them) and buffers (by where
 * they lie), its eventfd; its mappings are mapped again through it (mm.ts, `ringMappings`).
 * One held by several processes (inherited through fork) is made again by the first found (its
 * `holder`), the others taking it from there; one its maker's main thread registered as a ring
 * descriptor (IORING_REGISTER_RING_FDS) is registered again there; one set up on its maker's
 * own memory (IORING_SETUP_NO_MMAP) has its regions found there by their pages.
 * Refused: any request in flight, other registrations (personalities...), tagged resources, a
 * registered buffer whose pages are no longer those the task maps there, an SQPOLL thread, a
 * single issuer, a thread's io-wq bound to CPUs of its own, and ring descriptors registered by
 * other threads or processes.
 *
 * @module
 */
import type { KernelBtf } from "../syscalls/btf.ts";
import { fileObjects, mainThreadKey, openFiles } from "../syscalls/bpf.ts";
import { kernelReader } from "./kernel_reader.ts";
import {
  IORING_SETUP,
  ioWqCpus,
  pageStructs,
  possibleCpus,
  readRingMemory,
  readUserRings,
  regionPages,
  registeredRingFds,
  ringHeads,
  ringKernelState,
  type RingSlot,
} from "../syscalls/io_uring.ts";
import { pageFrames, sleep, withTaskFd } from "../syscalls/mod.ts";
import { listFds, parseFdinfo, parseMaps, readProcText } from "../tree/proc.ts";
import type { DumpContext } from "./context.ts";
import { type FileKind, type OpenFile, UnsupportedError } from "./file_types.ts";
import { create } from "../images/protobuf.ts";
import {
  fd_types,
  type file_entry,
  file_entrySchema,
  io_uring_file_entrySchema,
  io_uring_slotSchema,
} from "../../proto/gen/files_pb.ts";

/** Setup flags an instance is made again with (the others are refused). */
export const CARRIED_SETUP = IORING_SETUP.CQSIZE | IORING_SETUP.CLAMP | IORING_SETUP.R_DISABLED |
  IORING_SETUP.SUBMIT_ALL | IORING_SETUP.COOP_TASKRUN | IORING_SETUP.TASKRUN_FLAG |
  IORING_SETUP.SQE128 | IORING_SETUP.CQE32 | IORING_SETUP.NO_SQARRAY | IORING_SETUP.NO_MMAP;

/** An io_uring instance as the images carry it. */
export interface RingImage {
  /** Its inode (its mappings show it). */
  ino: number;
  setupFlags: number;
  sqEntries: number;
  cqEntries: number;
  sqHead: number;
  cqTail: number;
  clockid: number;
  /** IOSQE_CQE_SKIP_SUCCESS was used (drains are refused since). */
  drainDisabled: boolean;
  /** The user its pinned memory is charged to (as the tree sees it), if any. */
  chargedUid?: number;
  /** Its registered eventfd (a descriptor of the task), signalled for async completions only. */
  eventfd?: { fd: number; async: boolean };
  /** Registered files (by a descriptor of the task), in a table of `filesNr` slots. */
  files: { index: number; fd: number }[];
  filesNr: number;
  /** Registered buffers (where they lie in the task), in a table of `buffersNr` slots. */
  buffers: { index: number; address: bigint; length: number }[];
  buffersNr: number;
  rings: Uint8Array;
  sqes: Uint8Array;
  /** The process that makes it again (the first found holding it; others take it there). */
  holder: number;
  /** The ring descriptor its maker's main thread registered it as (IORING_REGISTER_RING_FDS). */
  registeredAs?: number;
  /** Where its regions lie in its maker's memory (IORING_SETUP_NO_MMAP). */
  user?: { rings: bigint; sqes: bigint };
}

/** What the reading of the kernel needs once per dump. */
interface KernelView {
  btf: KernelBtf;
  perCpu: Map<number, bigint>;
  /** Each process's descriptors' objects (private_data), and struct files once needed. */
  objects: Map<number, Map<number, bigint>>;
  files: Map<number, Map<number, bigint>>;
  /** The first process found holding each instance, and its state (by its object). */
  holders: Map<bigint, { pid: number; kind: FileKind & { type: "io_uring" } }>;
  /** The ring descriptors each process's main thread registered (index, struct file). */
  ringFds: Map<number, { index: number; file: bigint }[]>;
  /** Where the struct page of each page frame lies (null: frames hidden); once needed. */
  pages?: { base: bigint; size: number } | null;
}

const views = new WeakMap<DumpContext, KernelView>();

function kernelView(ctx: DumpContext, what: string): KernelView {
  let view = views.get(ctx);
  if (!view) {
    const { btf, perCpu } = kernelReader(ctx, what, "io_uring instance");
    view = {
      btf,
      perCpu,
      objects: new Map(),
      files: new Map(),
      holders: new Map(),
      ringFds: new Map(),
    };
    views.set(ctx, view);
  }
  return view;
}

const CLOCK_MONOTONIC = 1;

/**
 * The objects behind the descriptors of process `pid`, its threads' io_uring state checked
 * once (refused: ring descriptors registered by another thread than the main one, or of an
 * instance it holds no descriptor of; io-wq CPUs of their own).
 */
function objectsOf(view: KernelView, pid: number, what: string): Map<number, bigint> {
  let objects = view.objects.get(pid);
  if (!objects) {
    objects = fileObjects(view.btf, pid);
    view.objects.set(pid, objects);
    // Ring descriptors the main thread registered (IORING_REGISTER_RING_FDS), each of an
    // instance the process holds a descriptor of: registered again by it (ioUringKind).
    const rings = registeredRingFds(view.btf, pid);
    const main = rings.size ? mainThreadKey(view.btf, pid) : 0;
    for (const [tid, slots] of rings) {
      if (tid !== main) {
        throw new UnsupportedError(
          `Cannot dump ${what}: thread ${tid} registered ${slots.length} io_uring ` +
            `descriptor(s) (IORING_REGISTER_RING_FDS); only the main thread's are supported`,
        );
      }
      const held = new Set(filesOf(view, pid).values());
      const stray = slots.find((s) => !held.has(s.file));
      if (stray) {
        throw new UnsupportedError(
          `Cannot dump ${what}: its registered io_uring descriptor ${stray.index} ` +
            `(IORING_REGISTER_RING_FDS) is of an instance it holds no descriptor of`,
        );
      }
      view.ringFds.set(pid, slots);
    }
    // A thread's io-wq is made again at its first submission, bound to the CPUs its cpuset
    // allows then (older kernels: every possible CPU): other CPUs are refused.
    const possible = possibleCpus().join();
    for (const [tid, wq] of ioWqCpus(view.btf, pid)) {
      if (wq.cpus.join() !== possible && wq.cpus.join() !== wq.cpuset?.join()) {
        throw new UnsupportedError(
          `Cannot dump ${what}: thread ${tid} bound its io_uring workers to CPUs ` +
            `${wq.cpus.join(",")} (IORING_REGISTER_IOWQ_AFF), which is not supported yet`,
        );
      }
    }
  }
  return objects;
}

/** The struct file behind each descriptor of process `pid`, read once. */
function filesOf(view: KernelView, pid: number): Map<number, bigint> {
  let files = view.files.get(pid);
  if (!files) {
    files = openFiles(view.btf, pid);
    view.files.set(pid, files);
  }
  return files;
}

/**
 * Why registered buffer `slot` of task `pid` cannot be registered again from the task's
 * memory, if it cannot: the pages the instance holds of it must be those the task maps at its
 * address (which a mapping over it, munmap, mremap or MADV_DONTNEED since the registration
 * changes: the instance keeps the old ones).
 */
function bufferDiffers(view: KernelView, pid: number, slot: RingSlot): string | undefined {
  const buffer = slot.buffer!;
  if (view.pages === undefined) view.pages = pageStructs(view.btf) ?? null;
  if (!view.pages) return "cannot be checked against the task's memory (page frames are hidden)";
  const { base, size } = view.pages;
  const first = buffer.address & ~4095n;
  const end = buffer.address + BigInt(buffer.length);
  const frames = pageFrames(pid, first, Number((end - first + 4095n) / 4096n));
  const differs = `holds other pages than the task maps at ${hex(buffer.address)}, ` +
    `${buffer.length} bytes (remapped, unmapped or discarded since it was registered)`;
  let user = buffer.address;
  for (const seg of buffer.segments) {
    const delta = seg.page - base;
    if (delta < 0n || delta % BigInt(size)) return differs;
    const start = (delta / BigInt(size)) * 4096n + BigInt(seg.offset);
    const segEnd = user + BigInt(seg.length);
    for (let a = user; a < segEnd; a = (a & ~4095n) + 4096n) {
      if (frames[Number(((a & ~4095n) - first) / 4096n)] !== (start + a - user) >> 12n) {
        return differs;
      }
    }
    user = segEnd;
  }
  return user === end ? undefined : differs;
}

/**
 * Where in task `pid`'s memory each list of pages of `regions` (struct pages, in order: the
 * regions of an instance set up on the task's own memory, IORING_SETUP_NO_MMAP) is mapped one
 * page after another: its start, or why it is not known. The task's writable mappings are
 * read once for all of them.
 */
function userRegions(view: KernelView, pid: number, regions: bigint[][]): (bigint | string)[] {
  if (view.pages === undefined) view.pages = pageStructs(view.btf) ?? null;
  if (!view.pages) {
    return regions.map(() => "cannot be found in the task's memory (page frames are hidden)");
  }
  const { base, size } = view.pages;
  const wants = regions.map((pages) => pages.map((p) => (p - base) / BigInt(size)));
  const found: (bigint | string)[] = wants.map(() =>
    "is not mapped in the task's memory, page after page"
  );
  const longest = Math.max(...wants.map((w) => w.length));
  const CHUNK = 65536;
  for (const m of parseMaps(readProcText(pid, "maps"))) {
    // The kernel writes the rings: a writable mapping holds them.
    if (!m.perms.startsWith("rw")) continue;
    const count = Number((m.end - m.start) / 4096n);
    for (let at = 0; at < count; at += CHUNK) {
      const open = wants.filter((w, k) => w.length && typeof found[k] === "string");
      if (!open.length) return found;
      // Each chunk read with the longest region's length past it, so a match across two is
      // found.
      const n = Math.min(CHUNK + longest - 1, count - at);
      const frames = pageFrames(pid, m.start + BigInt(at) * 4096n, n);
      wants.forEach((want, k) => {
        if (!want.length || typeof found[k] !== "string") return;
        for (let i = 0; i + want.length <= frames.length && i < CHUNK; i++) {
          if (want.every((f, j) => frames[i + j] === f)) {
            found[k] = m.start + BigInt(at + i) * 4096n;
            return;
          }
        }
      });
    }
  }
  return found;
}

function hex(n: bigint): string {
  return `0x${n.toString(16)}`;
}

/** Requests of an instance waiting to be polled (the PollList of its fdinfo, `text`). */
function polled(text: string): number {
  const list = /^PollList:\n((?:[ \t]+.*\n)*)/m.exec(text)?.[1] ?? "";
  return list.split("\n").filter((l) => l.trim()).length;
}

/** How long the dump lets requests in flight complete. */
const SETTLE_MS = 3000;

/**
 * Lets the requests in flight of task `pid`'s io_uring instances complete, where they do so by
 * themselves (file I/O, io-wq work), before the dump reads them: within SETTLE_MS. A request
 * completes once its submitter runs (its completion is task work): `kick` lets each thread of
 * the process run once (a syscall inside it), no more. Requests that wait for an event (a
 * poll, a timeout...) are not waited for. What is left in flight, ioUringKind refuses.
 */
export async function settleRings(
  ctx: DumpContext,
  pid: number,
  kick: () => void | Promise<void>,
): Promise<void> {
  const fds = listFds(pid).filter((fd) => {
    try {
      return Deno.readLinkSync(`/proc/${pid}/fd/${fd}`) === "anon_inode:[io_uring]";
    } catch {
      return false;
    }
  });
  if (!fds.length) return;
  const view = kernelView(ctx, `the io_uring instances of task ${pid}`);
  const objects = objectsOf(view, pid, `task ${pid}`);
  const end = performance.now() + SETTLE_MS;
  for (let round = 0;; round++) {
    let busy = 0, stuck = false;
    for (const fd of fds) {
      const object = objects.get(fd);
      if (object === undefined) continue;
      const k = ringKernelState(view.btf, object, view.perCpu);
      if (k.inflight <= 0) continue;
      busy++;
      if (k.waiting.length || polled(readProcText(pid, `fdinfo/${fd}`))) stuck = true;
    }
    if (!busy || stuck || performance.now() > end) return;
    if (round === 0) {
      ctx.log.info(`Task ${pid}: io_uring requests in flight; letting them complete`);
    }
    await kick();
    await sleep(round < 10 ? 1 : 10);
  }
}

/** Descriptor `fd` of task `pid`, an io_uring instance: its state, or refused by name. */
export function ioUringKind(ctx: DumpContext, pid: number, fd: number, what: string): FileKind {
  const refuse = (why: string) =>
    new UnsupportedError(`Cannot dump ${what}: its io_uring instance ${why}`);
  const view = kernelView(ctx, what);
  const objects = objectsOf(view, pid, what);
  const object = objects.get(fd);
  if (object === undefined) throw refuse("was not found by the kernel's iterator");
  // The main thread's registered ring descriptors of it (made again by its maker only).
  const registeredAs = () => {
    const slots = view.ringFds.get(pid) ?? [];
    const file = slots.length ? filesOf(view, pid).get(fd) : undefined;
    return slots.filter((s) => s.file === file).map((s) => s.index);
  };
  // One held by more than one process (inherited through fork) is made again by the first,
  // the others taking it from there: as that one saw it.
  const first = view.holders.get(object);
  if (first) {
    if (first.pid !== pid && registeredAs().length) {
      throw refuse(
        `is registered as a ring descriptor (IORING_REGISTER_RING_FDS) by task ${pid}, ` +
          `which did not make it; not supported yet`,
      );
    }
    return first.kind;
  }

  const k = ringKernelState(view.btf, object, view.perCpu);
  const fdinfo = readProcText(pid, `fdinfo/${fd}`);
  const info = parseFdinfo(fdinfo);
  const polls = polled(fdinfo);
  if (polls) k.waiting.push(`${polls} polled`);
  if (k.inflight > 0 || k.waiting.length) {
    const kinds = k.waiting.length ? ` (${k.waiting.join(", ")})` : "";
    throw refuse(
      `has ${k.inflight || "some"} request(s) in flight${kinds}: only an idle one is carried; ` +
        `dump again once they have completed`,
    );
  }
  const other = k.flags & ~CARRIED_SETUP;
  if (other) {
    const names = Object.entries(IORING_SETUP).filter(([, bit]) => other & bit).map(([n]) => n);
    throw refuse(`was set up with ${names.join(", ")}, which is not supported yet`);
  }
  // Registered files: each the open file of a descriptor the task holds (found by its struct
  // file), registered again through it.
  const files = k.fileSlots.map((slot) => {
    if (slot.tag) throw refuse(`has a tagged registered file (slot ${slot.index})`);
    const fd = [...filesOf(view, pid)].find(([, file]) => file === slot.file)?.[0];
    if (fd === undefined) {
      throw refuse(
        `has a registered file (slot ${slot.index}) the task holds no descriptor of, which ` +
          `is not supported yet`,
      );
    }
    return { index: slot.index, fd };
  });
  // A registered eventfd: one the task holds (its eventfd_ctx is its file's), signalled last
  // at the last completion (else a signal is owed, which a new registration would not give).
  let eventfd: RingImage["eventfd"];
  if (k.eventfd) {
    const efd = [...objects].find(([, o]) => o === k.eventfd!.ctx)?.[0];
    if (efd === undefined) {
      throw refuse("has a registered eventfd the task holds no descriptor of; not supported yet");
    }
    if (k.eventfd.lastCqTail !== k.cqTail) throw refuse("owes its eventfd a signal: dump again");
    eventfd = { fd: efd, async: k.eventfd.async };
  }
  // Registered buffers: their place in the task's memory, registered again there.
  const buffers = k.bufferSlots.map((slot) => {
    if (slot.tag || slot.buffer!.kernel) {
      throw refuse(
        `has a ${slot.tag ? "tagged" : "kernel"} registered buffer (slot ${slot.index})`,
      );
    }
    const differs = bufferDiffers(view, pid, slot);
    if (differs) throw refuse(`has a registered buffer (slot ${slot.index}) that ${differs}`);
    return { index: slot.index, address: slot.buffer!.address, length: slot.buffer!.length };
  });
  if (k.registered.length) throw refuse(`has ${k.registered.join(", ")}: not supported yet`);
  const napi = info.extra.get("NAPI");
  if (napi !== undefined && napi.trim() !== "disabled") {
    throw refuse("busy-polls the network (NAPI), which is not supported yet");
  }
  // Each SQE taken posted a CQE, or none (IOSQE_CQE_SKIP_SUCCESS, or dropped): more CQEs
  // than SQEs (multishot requests) cannot be counted up to again, nor can SQEs without a CQE
  // be where there was no skipping and no SQ array to drop them by, nor can drains be
  // disabled where no SQE went without a CQE.
  const skip = (k.sqHead - k.cqTail) >>> 0;
  if (skip > k.sqHead) {
    throw refuse(
      `posted more completions (${k.cqTail}) than it took submissions (${k.sqHead}), ` +
        `which cannot be made again`,
    );
  }
  if (
    (k.drainDisabled && !skip) ||
    (!k.drainDisabled && skip && k.flags & IORING_SETUP.NO_SQARRAY)
  ) {
    throw refuse(
      `took ${k.sqHead} submissions for ${k.cqTail} completions in a way that ` +
        `cannot be made again`,
    );
  }
  if (k.countedTimeouts) {
    throw refuse("has used a timeout that counts completions, which is not supported yet");
  }
  // Its maker had CAP_IPC_LOCK (nothing is charged): so must the restore's, which no task of
  // a user namespace of the tree's own has.
  if (k.chargedUid === undefined && ctx.userns) {
    throw refuse("was made by a task with CAP_IPC_LOCK outside the tree's user namespace");
  }
  const chargedUid = k.chargedUid === undefined ? undefined : ctx.uid(k.chargedUid, what);
  const registered = registeredAs();
  if (registered.length > 1) {
    throw refuse(`is registered as ring descriptors ${registered.join(", ")}: not supported yet`);
  }
  // Regions set up on the task's own memory (IORING_SETUP_NO_MMAP): found there by their
  // pages, read from there.
  let user: RingImage["user"];
  if (k.flags & IORING_SETUP.NO_MMAP) {
    const pages = regionPages(view.btf, object);
    const [rings, sqes] = userRegions(view, pid, [pages.rings, pages.sqes]);
    for (const [name, at] of [["rings", rings], ["SQEs", sqes]] as const) {
      if (typeof at === "string") {
        throw refuse(`set up on its task's memory has its ${name} that ${at}`);
      }
    }
    user = { rings: rings as bigint, sqes: sqes as bigint };
  }
  const memory = user
    ? readUserRings(pid, user, k.ringPages, k.sqePages)
    : withTaskFd(pid, fd, (copy) => readRingMemory(copy, k.ringPages, k.sqePages));
  const heads = ringHeads(view.btf, memory.rings);
  if (heads.sqHead !== k.sqHead || heads.cqTail !== k.cqTail) {
    throw refuse("is between taking a submission and posting it: dump again");
  }
  const kind = {
    type: "io_uring" as const,
    ring: {
      ino: info.ino,
      setupFlags: k.flags,
      sqEntries: k.sqEntries,
      cqEntries: k.cqEntries,
      sqHead: k.sqHead,
      cqTail: k.cqTail,
      clockid: k.clockid,
      drainDisabled: k.drainDisabled,
      chargedUid,
      eventfd,
      files,
      filesNr: k.files,
      buffers,
      buffersNr: k.buffers,
      rings: memory.rings,
      sqes: memory.sqes,
      holder: ctx.pids.virt(pid, what),
      registeredAs: registered[0],
      user,
    },
  };
  view.holders.set(object, { pid, kind });
  return kind;
}

/** The files.img entry of an instance (type UND, which criu refuses: it has no io_uring). */
export function ioUringEntry(file: OpenFile, ring: RingImage): file_entry {
  return create(file_entrySchema, {
    type: fd_types.UND,
    id: file.id,
    ioUring: create(io_uring_file_entrySchema, {
      id: file.id,
      flags: file.flags,
      fown: file.fown,
      setupFlags: ring.setupFlags,
      sqEntries: ring.sqEntries,
      cqEntries: ring.cqEntries,
      sqHead: ring.sqHead,
      cqTail: ring.cqTail,
      clockid: ring.clockid === CLOCK_MONOTONIC ? undefined : ring.clockid,
      drainDisabled: ring.drainDisabled || undefined,
      files: ring.files.map((f) => create(io_uring_slotSchema, f)),
      filesNr: ring.filesNr || undefined,
      buffers: ring.buffers.map((b) => create(io_uring_slotSchema, b)),
      buffersNr: ring.buffersNr || undefined,
      chargedUid: ring.chargedUid,
      eventfd: ring.eventfd?.fd,
      eventfdAsync: ring.eventfd?.async || undefined,
      holder: ring.holder,
      registeredIndex: ring.registeredAs,
      ringsAddress: ring.user?.rings,
      sqesAddress: ring.user?.sqes,
      rings: ring.rings,
      sqes: ring.sqes,
    }),
  });
}
