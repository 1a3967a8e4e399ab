/**
 * io_uring instances made again inside their task (the kernel will not pass one over a unix
 * socket): set up there with the dumped flags and sizes, then, from here through a copy of its
 * descriptor, brought to the dumped counters and given back its rings' bytes
 * (syscalls/io_uring.ts). The task's descriptors get it; its rings are mapped through it once
 * the task's memory is back (`mapRings`). One held by several processes (inherited through
 * fork) is made by one (`holder`); the others take it from there (`takeRing`, pidfd_getfd).
 * One set up on the task's own memory (IORING_SETUP_NO_MMAP) is made once that memory is back,
 * on its regions there (`makeRingsInMemory`); criu reaches them through /proc/PID/mem.
 *
 * @module
 */
import { isFieldSet } from "../images/protobuf.ts";
import {
  fd_types,
  type file_entry,
  io_uring_file_entrySchema,
  io_uring_slotSchema,
} from "../../proto/gen/files_pb.ts";
import type { vma_entry } from "../../proto/gen/mm_pb.ts";
import {
  advanceRing,
  IORING_REGISTER_RING_FDS,
  IORING_SETUP,
  registerRingClock,
  registerRingEventfd,
  registerRingFiles,
  RING_PARAMS,
  ringFdUpdate,
  ringOffsets,
  ringParams,
} from "../syscalls/io_uring.ts";
import {
  close,
  errnoName,
  NR,
  O,
  open,
  pidfdGetfd,
  pidfdOpen,
  pwriteAll,
  readRemote,
} from "../syscalls/mod.ts";
import { parseMaps, readProcText } from "../tree/proc.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { VMA } from "../pagemap/vma.ts";
import { CARRIED_SETUP } from "../dump/io_uring.ts";
import { ImageError } from "../images/image.ts";
import type { RemoteArena } from "./arena.ts";
import type { DumpImages, TaskImages } from "./images.ts";
import { RestoreError, SETFL_MASK } from "./files.ts";
import { type TaskSyscall, taskSyscall } from "./task_syscall.ts";

/** Whether file entry `f` is an io_uring instance (ours: type UND with its entry). */
export function isRingFile(f: file_entry | undefined): boolean {
  return f?.type === fd_types.UND && f.ioUring !== undefined;
}

/** Checks an instance's entry before anything is made. */
export function checkRingEntry(f: file_entry, path: string): void {
  const e = f.ioUring!;
  const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
  const bad = !pow2(e.sqEntries) || !pow2(e.cqEntries) || e.sqEntries > 32768 ||
    e.cqEntries > 65536 || e.rings.length % 4096 || e.sqes.length % 4096 ||
    !e.rings.length || e.setupFlags & ~CARRIED_SETUP ||
    e.files.some((x) => x.index >= e.filesNr || !isFieldSet(x, io_uring_slotSchema.field.fd)) ||
    e.buffers.some((x) => x.index >= e.buffersNr) ||
    (isFieldSet(e, io_uring_file_entrySchema.field.registeredIndex) && e.registeredIndex >= 16) ||
    (e.setupFlags & IORING_SETUP.NO_MMAP &&
      (!isFieldSet(e, io_uring_file_entrySchema.field.ringsAddress) ||
        !isFieldSet(e, io_uring_file_entrySchema.field.sqesAddress) ||
        e.ringsAddress % 4096n || e.sqesAddress % 4096n));
  if (bad) throw new ImageError(`Image ${path}: io_uring instance ${f.id} is malformed`);
}

/**
 * Makes instance `f` in the task (`sys` runs a syscall there), puts it at the task's
 * descriptors of it, and returns a descriptor of it at or above `high` for the restorer's
 * mappings.
 */
export function makeRing(
  sys: TaskSyscall,
  arena: RemoteArena,
  pid: number,
  task: TaskImages,
  f: file_entry,
  high: number,
): number {
  const e = f.ioUring!;
  const mine = task.fds.filter((x) => x.id === f.id);
  const what = `the io_uring instance of fd ${mine[0]?.fd ?? "?"} of task ${pid}`;
  // Set up on the task's own memory (IORING_SETUP_NO_MMAP, once that is back): its regions
  // zeroed there first, as new ones are (their bytes go back once its counters are there).
  const user = ringsInMemory(f) ? { pid, rings: e.ringsAddress, sqes: e.sqesAddress } : undefined;
  const params = ringParams(e.setupFlags, e.sqEntries, e.cqEntries);
  if (user) {
    const path = `/proc/${pid}/mem`;
    const mem = open(path, O.RDWR | O.CLOEXEC);
    try {
      pwriteAll(mem, new Uint8Array(e.rings.length), user.rings, path);
      pwriteAll(mem, new Uint8Array(e.sqes.length), user.sqes, path);
    } finally {
      close(mem);
    }
    const v = new DataView(params.buffer);
    v.setBigUint64(RING_PARAMS.sqUserAddr, user.sqes, true);
    v.setBigUint64(RING_PARAMS.cqUserAddr, user.rings, true);
  }
  arena.reset();
  const at = arena.put(params);
  const setup = () => sys(NR.io_uring_setup, `io_uring_setup (${what})`, e.sqEntries, at);
  const fd = isFieldSet(e, io_uring_file_entrySchema.field.chargedUid)
    ? asCharged(sys, arena, pid, e.chargedUid, setup)
    : setup();
  readRemote(pid, at, params);
  const offsets = ringOffsets(params);
  if (offsets.sqEntries !== e.sqEntries || offsets.cqEntries !== e.cqEntries) {
    throw new Error(`${what}: made with ${offsets.sqEntries}/${offsets.cqEntries} entries`);
  }
  // The rest from here, through copies of the task's descriptors: of the instance, and of its
  // registered files and eventfd (the task's own open files, in place already).
  const pidfd = pidfdOpen(pid);
  const copies: number[] = [];
  const copyOf = (n: number) => {
    copies.push(pidfdGetfd(pidfd, n, pid));
    return copies.at(-1)!;
  };
  try {
    const ring = copyOf(fd);
    if (isFieldSet(e, io_uring_file_entrySchema.field.clockid)) {
      registerRingClock(ring, e.clockid, what);
    }
    const counters = { sqHead: e.sqHead, cqTail: e.cqTail, drainDisabled: e.drainDisabled };
    advanceRing(ring, e.setupFlags, offsets, counters, e, what, user);
    if (e.filesNr) {
      const table = new Int32Array(e.filesNr).fill(-1);
      for (const slot of e.files) table[slot.index] = copyOf(slot.fd);
      registerRingFiles(ring, table, what);
    }
    // Its eventfd once its counters are there (the NOPs signal none).
    if (isFieldSet(e, io_uring_file_entrySchema.field.eventfd)) {
      registerRingEventfd(ring, copyOf(e.eventfd), e.eventfdAsync, what);
    }
  } finally {
    for (const c of copies) close(c);
    close(pidfd);
  }
  const F_SETFL = 4;
  if (e.flags & SETFL_MASK) sys(NR.fcntl, "fcntl(F_SETFL)", fd, F_SETFL, e.flags & SETFL_MASK);
  const service = placeRing(sys, fd, mine, high);
  // Registered as the main thread's ring descriptor, by it (the calls run there).
  if (isFieldSet(e, io_uring_file_entrySchema.field.registeredIndex)) {
    arena.reset();
    const update = arena.put(ringFdUpdate(e.registeredIndex, service));
    const name = `io_uring_register(RING_FDS ${e.registeredIndex}) (${what})`;
    if (sys(NR.io_uring_register, name, service, IORING_REGISTER_RING_FDS, update, 1) !== 1) {
      throw new RestoreError(`Cannot restore ${what}: its ring descriptor was not registered`);
    }
  }
  return service;
}

/**
 * Makes the task's instances set up on its own memory (IORING_SETUP_NO_MMAP), now that it is
 * back: as makeRing does, their regions where they were.
 */
export function makeRingsInMemory(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  dump: DumpImages,
  task: TaskImages,
  fds: { rings: Map<number, number>; ringsLater: number[]; high: number; all: number[] },
): void {
  const pid = rs.task.pid;
  const sys = taskSyscall(rs);
  for (const id of fds.ringsLater) {
    const fd = makeRing(sys, arena, pid, task, dump.files.get(id)!, fds.high);
    fds.rings.set(id, fd);
    fds.all.push(fd);
  }
}

/**
 * Whether instance `f` was set up on its maker's own memory (IORING_SETUP_NO_MMAP): made once
 * that memory is back.
 */
export function ringsInMemory(f: file_entry): boolean {
  return (f.ioUring!.setupFlags & IORING_SETUP.NO_MMAP) !== 0;
}

/** The process that makes instance `f` again (`holder`; undefined in older images: its own). */
export function ringMaker(f: file_entry): number | undefined {
  const e = f.ioUring!;
  return isFieldSet(e, io_uring_file_entrySchema.field.holder) ? e.holder : undefined;
}

/**
 * Gives the task instance `f`, which its maker (another process of the tree, made before it)
 * holds: taken from the maker's descriptor of it through `pidfd` (the task's pidfd of the
 * maker, closed here), as a fork had passed it on (one open file). Returns a descriptor at or
 * above `high` for the restorer's mappings.
 */
export function takeRing(
  sys: (nr: number, name: string, ...args: (bigint | number)[]) => number,
  dump: DumpImages,
  task: TaskImages,
  f: file_entry,
  pidfd: number,
  high: number,
): number {
  const maker = ringMaker(f)!;
  const at = dump.tasks.find((t) => t.pstree.pid === maker)?.fds.find((x) => x.id === f.id)?.fd;
  if (at === undefined) {
    throw new RestoreError(
      `Cannot restore io_uring instance ${f.id} of task ${task.pstree.pid}: its maker ` +
        `${maker} holds no descriptor of it`,
    );
  }
  const what = `pidfd_getfd (io_uring instance ${f.id}, from task ${maker})`;
  const fd = sys(NR.pidfd_getfd, what, pidfd, at, 0);
  sys(NR.close, "close", pidfd);
  return placeRing(sys, fd, task.fds.filter((x) => x.id === f.id), high);
}

/**
 * Puts instance descriptor `fd` (of the task) at the task's descriptors of it (`mine`), and
 * returns the restorer's own descriptor of it, at or above `high`.
 */
function placeRing(
  sys: (nr: number, name: string, ...args: (bigint | number)[]) => number,
  fd: number,
  mine: readonly { fd: number; flags: number }[],
  high: number,
): number {
  const F_SETFD = 2, F_DUPFD_CLOEXEC = 1030;
  // The restorer's own descriptor of it, above the task's; then the task's (the first free
  // number it was made at may be one of them).
  const service = sys(NR.fcntl, "fcntl(F_DUPFD_CLOEXEC)", fd, F_DUPFD_CLOEXEC, high);
  for (const x of mine) {
    const cloexec = (x.flags & 1) !== 0;
    if (x.fd === fd) sys(NR.fcntl, "fcntl(F_SETFD)", fd, F_SETFD, cloexec ? 1 : 0);
    else sys(NR.dup3, "dup3", fd, x.fd, cloexec ? O.CLOEXEC : 0);
  }
  if (!mine.some((x) => x.fd === fd)) sys(NR.close, "close", fd);
  return service;
}

/**
 * Runs `make` in the task as the maker of an instance whose pinned memory is charged to `uid`
 * (as the task sees it): that real uid, and CAP_IPC_LOCK out of its effective set (the kernel
 * charges no one for a maker that has it). Both come back after.
 */
function asCharged(
  sys: (nr: number, name: string, ...args: (bigint | number)[]) => number,
  arena: RemoteArena,
  pid: number,
  uid: number,
  make: () => number,
): number {
  const CAP_VERSION_3 = 0x20080522, CAP_IPC_LOCK = 14;
  const header = new Uint32Array([CAP_VERSION_3, 0]);
  const hdr = arena.put(new Uint8Array(header.buffer));
  const caps = new Uint32Array(6); // {effective, permitted, inheritable} x 2
  const data = arena.put(new Uint8Array(caps.buffer));
  sys(NR.capget, "capget", hdr, data);
  readRemote(pid, data, new Uint8Array(caps.buffer));
  const dropped = new Uint32Array(caps);
  dropped[0] &= ~(1 << CAP_IPC_LOCK);
  const without = arena.put(new Uint8Array(dropped.buffer));
  const ruid = sys(NR.getuid, "getuid");
  sys(NR.setresuid, "setresuid", uid, -1, -1);
  try {
    sys(NR.capset, "capset", hdr, without);
    try {
      return make();
    } finally {
      sys(NR.capset, "capset", hdr, data);
    }
  } finally {
    sys(NR.setresuid, "setresuid", ruid, -1, -1);
  }
}

/**
 * Registers again the buffers of the task's io_uring instances (`rings`: the restorer's
 * descriptors of them in the task, by file id), in the task (their pages are its own), once
 * its memory is back.
 */
export function registerRingBuffers(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  dump: DumpImages,
  task: TaskImages,
  rings: Map<number, number>,
): void {
  const IORING_REGISTER_BUFFERS = 0;
  for (const [id, fd] of rings) {
    const f = dump.files.get(id);
    const e = f?.ioUring;
    if (!e?.buffersNr) continue;
    // In its maker's memory (which the others' copies of it are not, since the fork).
    const maker = ringMaker(f!);
    if (maker !== undefined && maker !== task.pstree.pid) continue;
    const iovecs = new BigUint64Array(e.buffersNr * 2);
    for (const b of e.buffers) {
      iovecs[b.index * 2] = b.address;
      iovecs[b.index * 2 + 1] = BigInt(b.length);
    }
    arena.reset();
    const at = arena.put(new Uint8Array(iovecs.buffer));
    const ret = rs.call(NR.io_uring_register, fd, IORING_REGISTER_BUFFERS, at, e.buffersNr);
    if (ret < 0n) {
      throw new RestoreError(
        `Cannot restore the registered buffers of an io_uring instance of task ` +
          `${rs.task.pid}: ${errnoName(Number(-ret))}`,
      );
    }
  }
}

/** Whether mapping `v` maps an io_uring instance's rings. */
export function isRingMapping(v: vma_entry): boolean {
  return (v.status & VMA.AREA_IO_URING) !== 0;
}

/** The top of a 47-bit user address space (what the kernel places mappings below). */
const TASK_SIZE = 0x7ffffffff000n;

/**
 * Maps the rings of the task's io_uring instances where they were (`rings`: the restorer's
 * descriptors of them, by file id), once its memory is back.
 *
 * The kernel lets no one choose where an instance's rings go (its get_unmapped_area refuses
 * any address, for mmap and mremap alike), so it is made to choose the dumped place: every
 * other hole of the address space is filled for the time of the mmap (PROT_NONE, reserving
 * nothing), which leaves the dumped place the only one it can take, whichever way it searches.
 */
export function mapRings(rs: RemoteSyscalls, task: TaskImages, rings: Map<number, number>): void {
  const pid = rs.task.pid;
  const PROT_NONE = 0, MAP_PRIVATE = 2, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;
  const MAP_FIXED_NOREPLACE = 0x100000;
  const low = BigInt(Deno.readTextFileSync("/proc/sys/vm/mmap_min_addr").trim());
  for (const v of task.mm.vmas.filter(isRingMapping)) {
    const what = `the io_uring rings at ${v.start.toString(16)} of task ${pid}`;
    const fd = rings.get(Number(v.shmid));
    if (fd === undefined) {
      throw new RestoreError(
        `Cannot restore ${what}: file ${v.shmid} is not an io_uring instance the task holds`,
      );
    }
    const taken = parseMaps(readProcText(pid, "maps"))
      .filter((m) => m.start < TASK_SIZE)
      .map((m) => ({ start: m.start, end: m.end }));
    taken.push({ start: v.start, end: v.end });
    taken.sort((a, b) => (a.start < b.start ? -1 : 1));
    const holes: { start: bigint; end: bigint }[] = [];
    let at = low;
    for (const t of taken) {
      if (t.start > at) holes.push({ start: at, end: t.start });
      if (t.end > at) at = t.end;
    }
    if (at < TASK_SIZE) holes.push({ start: at, end: TASK_SIZE });
    const filled: { start: bigint; end: bigint }[] = [];
    let placed: bigint;
    try {
      for (const h of holes) {
        const ret = rs.call(
          NR.mmap,
          h.start,
          h.end - h.start,
          PROT_NONE,
          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
          -1,
          0,
        );
        if (ret !== h.start) {
          if (ret > 0n && ret < TASK_SIZE) rs.call(NR.munmap, ret, h.end - h.start);
          throw new RestoreError(`Cannot restore ${what}: its address space could not be filled`);
        }
        filled.push(h);
      }
      placed = rs.call(NR.mmap, 0, v.end - v.start, v.prot, v.flags, fd, v.pgoff);
    } finally {
      for (const h of filled) rs.call(NR.munmap, h.start, h.end - h.start);
    }
    if (placed !== v.start) {
      if (placed > 0n && placed < TASK_SIZE) rs.call(NR.munmap, placed, v.end - v.start);
      throw new RestoreError(
        `Cannot restore ${what}: the kernel ${
          placed < 0n
            ? `refused to map them (${errnoName(Number(-placed))})`
            : "placed them elsewhere"
        }`,
      );
    }
    // Their advice (MADV_DONTFORK, as liburing gives them), as the restorer gives others'.
    const MADV_MERGEABLE = 12n;
    for (let advice = 0n; advice < 64n; advice++) {
      if (!((v.madv ?? 0n) & (1n << advice))) continue;
      const ret = rs.call(NR.madvise, v.start, v.end - v.start, advice);
      if (ret < 0n && advice !== MADV_MERGEABLE) {
        throw new RestoreError(
          `Cannot restore ${what}: madvise(${advice}) failed (${errnoName(Number(-ret))})`,
        );
      }
    }
  }
}
