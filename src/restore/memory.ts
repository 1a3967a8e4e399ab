/**
 * Planning the address space of a restored task: where the restorer blob goes, and the list of
 * operations it executes (parasite/restorer.c) to turn the helper's address space into the
 * dumped one.
 *
 * ```
 * helper task now                      after the restorer's ops
 *   helper code/stack/...  --munmap-->   (gone)
 *   [vvar][vvar_vclock][vdso] --mremap--> temp slots in the gap --mremap--> dumped addresses
 *   restorer area (in a gap free in     (unmapped by the restorer side at the very end)
 *     both layouts)
 *                                        every dumped VMA mmapped MAP_FIXED, its dumped pages
 *                                        pread from pages-N.img, final protections applied
 * ```
 *
 * A child is made by its parent once the parent's memory is back, so it starts with the
 * parent's address space: a private mapping that both had at the same place is kept
 * (inherited), and only the pages that differ from the parent's are written, the others
 * staying shared copy-on-write as they were before the dump (CRIU's VMA inheritance).
 *
 * @module
 */
import { isFieldSet } from "../images/protobuf.ts";
import { type mm_entry, type vma_entry, vma_entrySchema } from "../../proto/gen/mm_pb.ts";
import { MAP, PROT, sysvAttachments, VMA, vmaAt } from "../pagemap/vma.ts";
import { PE_PRESENT } from "../pagemap/pagemap.ts";
import { leftLazy } from "./lazy.ts";
import type { ProcMap } from "../tree/proc.ts";
import type { TaskImages } from "./images.ts";

/** Restorer operation codes (parasite/restorer.c). */
export const OP = {
  MUNMAP: 1,
  MREMAP: 2,
  MMAP: 3,
  PREAD: 4,
  MPROTECT: 5,
  MADVISE: 6,
  SHMAT: 7,
  PREAD_CMP: 8,
  SPAWN: 9,
  JOIN: 10,
  CALLS: 11,
  SOURCE_OPEN: 12,
  COPY: 13,
  SOURCE_CLOSE: 14,
} as const;

/**
 * Below this many bytes of pages a task's memory is filled by the restorer alone; from it on,
 * half by a thread of its own beside it (OP.SPAWN): starting one costs about 0.1 ms, filling a
 * MiB about 0.4. (A tree of 20 processes of 8 MiB each came back some 100 ms sooner with 2 MiB
 * here than with 16.)
 */
export const SPLIT_FILL_BYTES = 2n << 20n;

/**
 * From this many bytes on, a range of fresh anonymous memory is filled by UFFDIO_COPY from a
 * mapping of its pages file (OP.COPY) rather than read into: each page is made with its
 * contents instead of zeroed first (a 1 GiB task's memory came back in 200-220 ms against
 * 240-260 ms read by two threads). Below it, registering the range costs more than it saves.
 */
export const COPY_FILL_BYTES = 256n << 10n;

/** One restorer operation: code and up to six arguments. */
export interface Op {
  code: number;
  args: bigint[];
  /** What it is for, for error messages. */
  what: string;
}

/** Size of one encoded op. */
export const OP_SIZE = 56;

/** Encodes ops as the blob reads them. */
export function encodeOps(ops: Op[]): Uint8Array {
  const words = new BigUint64Array(ops.length * 7);
  ops.forEach((op, i) => {
    words[i * 7] = BigInt(op.code);
    op.args.forEach((a, j) => (words[i * 7 + 1 + j] = BigInt.asUintN(64, a)));
  });
  return new Uint8Array(words.buffer);
}

const MADV_DONTNEED = 4n;
const MADV_POPULATE_WRITE = 23n;
const MADV_DONTFORK = 10n;
const MAP_HUGETLB = 0x40000;
/** Mappings neither kept from a parent nor filled by a userfaultfd. */
const ODD_VMAS = VMA.AREA_VDSO | VMA.AREA_VVAR | VMA.AREA_SYSVIPC | VMA.AREA_SOCKET |
  VMA.AREA_AIORING | VMA.AREA_IO_URING | VMA.AREA_UNSUPP;
const PAGE = 4096n;
const hex = (x: bigint) => `0x${x.toString(16)}`;

/** A different kernel's vDSO cannot be moved into place. */
export class VdsoMismatchError extends Error {
  constructor(detail: string) {
    super(
      `Cannot restore: the vDSO layout differs from the dumped one (${detail}); the images ` +
        `come from another kernel, and a vDSO proxy is not implemented yet`,
    );
    this.name = "VdsoMismatchError";
  }
}

interface Range {
  start: bigint;
  end: bigint;
}

/** The first gap of `size` bytes at or above `from` that no range covers. */
export function findGap(ranges: Range[], size: bigint, from = 0x100000000n): bigint {
  const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  let at = from;
  for (const r of sorted) {
    if (r.end <= at) continue;
    if (r.start >= at + size) break;
    at = (r.end + PAGE - 1n) & ~(PAGE - 1n);
  }
  if (at + size > 0x7ffffffff000n) throw new Error("No free address range for the restorer");
  return at;
}

function specials(maps: ProcMap[]): { vdso?: ProcMap; vvars: ProcMap[] } {
  return {
    vdso: maps.find((m) => m.path === "[vdso]"),
    vvars: maps.filter((m) => m.path === "[vvar]" || m.path === "[vvar_vclock]"),
  };
}

/**
 * Which descriptor a file mapping is made through: its file, opened with the access the
 * mapping's descriptor had when criu writes it (`fdflags`; a read-only descriptor makes a
 * shared mapping that can never be made writable), else with the file entry's flags.
 */
export function mapKey(v: vma_entry): string {
  return isFieldSet(v, vma_entrySchema.field.fdflags)
    ? `${v.shmid}:${v.fdflags & 3}`
    : `${v.shmid}`;
}

/** Adjacent ranges joined: the vvar block as one range, however many VMAs show it. */
function joined(ranges: Range[]): Range[] {
  const out: Range[] = [];
  for (const r of [...ranges].sort((a, b) => (a.start < b.start ? -1 : 1))) {
    const last = out.at(-1);
    if (last && last.end === r.start) last.end = r.end;
    else out.push({ start: r.start, end: r.end });
  }
  return out;
}

/**
 * The helper's current special mappings, each paired with where it goes. The vvar pages are
 * one block in criu's images and one or two VMAs here ([vvar], [vvar_vclock]): each VMA moves
 * to its offset in the dumped block.
 */
export function pairSpecials(dumped: vma_entry[], maps: ProcMap[]): { from: Range; to: Range }[] {
  const cur = specials(maps);
  const dVdso = dumped.filter((v) => v.status & VMA.AREA_VDSO);
  const dVvar = joined(dumped.filter((v) => v.status & VMA.AREA_VVAR));
  const cVvar = joined(cur.vvars);
  const pairs: { from: Range; to: Range }[] = [];
  // A task that unmapped its vDSO gets none (the helper's goes with its other mappings).
  if (dVdso.length === 0 && dVvar.length === 0) return pairs;
  if (dVdso.length !== (cur.vdso ? 1 : 0)) {
    throw new VdsoMismatchError(`${dVdso.length} vdso mappings dumped, ${cur.vdso ? 1 : 0} here`);
  }
  if (dVvar.length !== cVvar.length) {
    throw new VdsoMismatchError(`${dVvar.length} vvar blocks dumped, ${cVvar.length} here`);
  }
  const size = (r: Range) => (r.end - r.start) / PAGE;
  cVvar.forEach((block, i) => {
    const d = dVvar[i];
    if (size(block) !== size(d)) {
      throw new VdsoMismatchError(`vvar is ${size(block)} pages here, ${size(d)} in the dump`);
    }
    for (const m of cur.vvars.filter((x) => x.start >= block.start && x.end <= block.end)) {
      const to = d.start + (m.start - block.start);
      pairs.push({
        from: { start: m.start, end: m.end },
        to: { start: to, end: to + m.end - m.start },
      });
    }
  });
  if (cur.vdso) {
    const d = dVdso[0], m = cur.vdso;
    if (size(m) !== size(d)) {
      throw new VdsoMismatchError(`[vdso] is ${size(m)} pages here, ${size(d)} in the dump`);
    }
    pairs.push({ from: { start: m.start, end: m.end }, to: { start: d.start, end: d.end } });
  }
  // The vDSO code reaches its data pages at fixed offsets: the block must move as one.
  if (pairs.length > 1) {
    const base = pairs[0];
    for (const p of pairs.slice(1)) {
      if (p.from.start - base.from.start !== p.to.start - base.to.start) {
        throw new VdsoMismatchError("the vdso and vvar pages sit at other distances");
      }
    }
  }
  return pairs;
}

/** Inputs of {@link planMemory}. */
export interface MemoryPlanInput {
  task: TaskImages;
  /** The helper task's current mappings. */
  maps: ProcMap[];
  /** The restorer area, to be left alone. */
  area: Range;
  /** Where the vdso block waits while the helper's mappings go (inside the gap). */
  tempBase: bigint;
  /** Descriptor in the task of each mapped file, by {@link mapKey}. */
  mapFds: Map<string, number>;
  /** Descriptors in the task of the pages files (TaskImages.pagesPaths). */
  pagesFds: number[];
  /** Descriptors in the task of shared anonymous memory made by an earlier task, by inode. */
  shmemFds: Map<bigint, number>;
  /** Mappings kept from the parent (see {@link inheritedVmas}); none when absent. */
  inherited?: Set<vma_entry>;
  /** Scratch memory the restorer reads pages through to compare them with inherited ones. */
  buffer?: Range;
  /**
   * The lazy pages (PE_LAZY) are left out: `criu lazy-pages` brings them in (those of the
   * parent images too with `parents`).
   */
  lazy?: { parents: boolean };
  /**
   * Room for a second thread to fill half the pages (OP.SPAWN): the top of its stack and its
   * state (struct helper, 40 bytes), both in the restorer area. Absent: one thread fills all.
   */
  helper?: { stackTop: bigint; state: bigint };
  /**
   * Where the restorer keeps the userfaultfd of the source its large anonymous fills are
   * copied from (a u64 in the restorer area, OP.SOURCE_OPEN), and the end of the room the area
   * and the parked vDSO block take from `area.start`. Absent: every fill is read.
   */
  source?: { slot: bigint; reservedEnd: bigint };
}

/**
 * The mappings of `child` that it may keep as it inherited them from `parent` (whose memory is
 * back, and which made it): private mappings, anonymous or of the same file at the same offset,
 * with the same range, flags and advice in both, present in the child's `maps` now. A locked
 * or hugetlb mapping is made anew (fork does not pass locks on).
 */
export function inheritedVmas(
  child: TaskImages,
  parent: TaskImages,
  maps: ProcMap[],
): Set<vma_entry> {
  const out = new Set<vma_entry>();
  const PRIVATE = VMA.ANON_PRIVATE | VMA.FILE_PRIVATE;
  const sorted = [...maps].sort((a, b) => (a.start < b.start ? -1 : 1));
  for (const v of child.mm.vmas) {
    if (!(v.status & VMA.AREA_REGULAR) || !(v.status & PRIVATE) || v.status & ODD_VMAS) continue;
    if (v.flags & (MAP.LOCKED | MAP_HUGETLB)) continue;
    const p = parent.mm.vmas.find((x) => x.start === v.start && x.end === v.end);
    if (
      !p || p.status !== v.status || p.flags !== v.flags || p.pgoff !== v.pgoff ||
      p.shmid !== v.shmid || (p.madv ?? 0n) !== (v.madv ?? 0n) ||
      (p.madv ?? 0n) & (1n << MADV_DONTFORK)
    ) continue;
    // Present, private, nothing missing: fork copied it.
    let at = v.start;
    for (const m of sorted) {
      if (m.end <= at || m.start > at || !m.perms.endsWith("p")) continue;
      at = m.end;
      if (at >= v.end) break;
    }
    if (at >= v.end) out.add(v);
  }
  return out;
}

/**
 * `r` cut by `sorted` (ranges in address order, not overlapping): the parts inside one of
 * them and the parts outside every one, in order.
 */
export function cut(r: Range, sorted: Range[]): { inside: Range[]; outside: Range[] } {
  let lo = 0, hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid].end <= r.start) lo = mid + 1;
    else hi = mid;
  }
  const inside: Range[] = [], outside: Range[] = [];
  let at = r.start;
  for (let i = lo; i < sorted.length && sorted[i].start < r.end; i++) {
    const s = sorted[i].start > at ? sorted[i].start : at;
    const e = sorted[i].end < r.end ? sorted[i].end : r.end;
    if (s > at) outside.push({ start: at, end: s });
    inside.push({ start: s, end: e });
    at = e;
  }
  if (at < r.end) outside.push({ start: at, end: r.end });
  return { inside, outside };
}

/** The ops that rebuild the dumped address space. */
export function planMemory(input: MemoryPlanInput): Op[] {
  const { task, maps, area, tempBase, mapFds, pagesFds, shmemFds } = input;
  const mm: mm_entry = task.mm;
  const ops: Op[] = [];
  const pairs = pairSpecials(mm.vmas, maps);
  const blockStart = pairs.length
    ? pairs.reduce((a, p) => (p.from.start < a ? p.from.start : a), pairs[0].from.start)
    : 0n;

  // 1. Park the vDSO block in the gap.
  for (const p of pairs) {
    const len = p.from.end - p.from.start;
    const temp = tempBase + (p.from.start - blockStart);
    ops.push({
      code: OP.MREMAP,
      args: [p.from.start, len, temp],
      what: `park vdso/vvar at ${hex(temp)}`,
    });
    p.from = { start: temp, end: temp + len };
  }
  // 2. Drop every other mapping of the helper (or the parent), but what the task inherits.
  const inherited = input.inherited ?? new Set<vma_entry>();
  const kept = [...inherited].map((v) => ({ start: v.start, end: v.end }))
    .sort((a, b) => (a.start < b.start ? -1 : 1));
  const isSpecial = (m: ProcMap) =>
    m.path === "[vsyscall]" ||
    pairs.length > 0 && ["[vdso]", "[vvar]", "[vvar_vclock]"].includes(m.path);
  for (const m of maps) {
    if (isSpecial(m) || (m.start >= area.start && m.end <= area.end)) continue;
    for (const r of cut(m, kept).outside) {
      ops.push({
        code: OP.MUNMAP,
        args: [r.start, r.end - r.start],
        what: `unmap helper ${m.path || "memory"}`,
      });
    }
  }
  // 3. The vDSO block to its dumped place.
  for (const p of pairs) {
    ops.push({
      code: OP.MREMAP,
      args: [p.from.start, p.from.end - p.from.start, p.to.start],
      what: `move vdso/vvar to ${hex(p.to.start)}`,
    });
  }
  // 4. Every dumped mapping, writable while its pages come in.
  const filled = new Set<vma_entry>();
  task.pagemap.forEach((e) => {
    for (let a = e.vaddr; a < e.vaddr + BigInt(e.nrPages) * PAGE;) {
      const v = vmaAt(mm.vmas, a);
      if (!v) throw new Error(`Pagemap entry at ${hex(e.vaddr)} lies outside every mapping`);
      filled.add(v);
      a = v.end;
    }
  });
  // System V segments: each attachment whole, where it was (the restorer makes or finds the
  // segment first), read-only or executable where every piece is; then each piece (mprotect
  // splits an attachment) given its own protection.
  for (const a of sysvAttachments(mm.vmas)) {
    const SHM_RDONLY = 0o10000, SHM_EXEC = 0o100000;
    const any = (bit: number) => a.pieces.some((v) => v.prot & bit);
    const flags = (any(PROT.WRITE) ? 0 : SHM_RDONLY) | (any(PROT.EXEC) ? SHM_EXEC : 0);
    const prot = PROT.READ | (any(PROT.WRITE) ? PROT.WRITE : 0) | (any(PROT.EXEC) ? PROT.EXEC : 0);
    ops.push({
      code: OP.SHMAT,
      args: [a.shmid, a.base, BigInt(flags)],
      what: `attach System V segment ${a.shmid} at ${hex(a.base)}`,
    });
    for (const v of a.pieces) {
      if (v.prot === prot) continue;
      ops.push({
        code: OP.MPROTECT,
        args: [v.start, v.end - v.start, BigInt(v.prot)],
        what: `protect System V segment ${a.shmid} at ${hex(v.start)}`,
      });
    }
  }
  for (const v of mm.vmas) {
    // An AIO ring's pages go to private memory there first; the ring made again is moved
    // over it (restore/aio.ts).
    if (v.status & VMA.AREA_AIORING) {
      ops.push({
        code: OP.MMAP,
        args: [
          v.start,
          v.end - v.start,
          BigInt(PROT.READ | PROT.WRITE),
          BigInt(MAP.PRIVATE | MAP.ANONYMOUS),
          -1n,
          0n,
        ],
        what: `map the AIO ring's pages at ${hex(v.start)}`,
      });
      continue;
    }
    if (!(v.status & VMA.AREA_REGULAR) || v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR)) continue;
    if (v.status & VMA.AREA_SYSVIPC) continue;
    // An io_uring instance's rings: the kernel places them itself, after (restore/io_uring.ts).
    if (v.status & VMA.AREA_IO_URING) continue;
    if (v.status & VMA.ANON_SHARED) {
      // Every object is made beforehand (makeShmem): mapped by descriptor, at its offset.
      const shm = shmemFds.get(v.shmid);
      if (shm === undefined) throw new Error(`Shared memory ${v.shmid} was not made`);
      ops.push({
        code: OP.MMAP,
        args: [
          v.start,
          v.end - v.start,
          // A private mapping's own pages are written in: writable until then.
          BigInt(filled.has(v) ? v.prot | PROT.WRITE : v.prot),
          BigInt(v.flags & ~MAP.ANONYMOUS),
          BigInt(shm),
          v.pgoff,
        ],
        what: `map shared memory ${v.shmid} at ${hex(v.start)}`,
      });
      continue;
    }
    // A packet socket's rings are mapped through the socket, as a file is.
    const isFile = (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED | VMA.AREA_SOCKET)) !== 0;
    const fd = isFile ? mapFds.get(mapKey(v)) : -1;
    if (fd === undefined) {
      throw new Error(`No file for the mapping at ${hex(v.start)} (file id ${v.shmid})`);
    }
    const prot = filled.has(v) ? v.prot | PROT.WRITE : v.prot;
    if (inherited.has(v)) {
      ops.push({
        code: OP.MPROTECT,
        args: [v.start, v.end - v.start, BigInt(prot)],
        what: `protect inherited ${hex(v.start)}`,
      });
      continue;
    }
    ops.push({
      code: OP.MMAP,
      args: [
        v.start,
        v.end - v.start,
        BigInt(prot),
        BigInt(v.flags),
        BigInt(fd),
        isFile ? v.pgoff : 0n,
      ],
      what: `map ${hex(v.start)}-${hex(v.end)}`,
    });
  }
  // 5. The pages: into fresh mappings whole; into inherited ones only where they differ, and
  // what the task did not have there dropped.
  const present: Range[] = [];
  const fills: Fill[] = [];
  const compares: Op[] = [];
  task.pagemap.forEach((e, i) => {
    if (!(e.flags & PE_PRESENT)) return;
    // Left out (and dropped where inherited, below: they must fault).
    if (input.lazy && leftLazy(task, i, input.lazy.parents)) return;
    // The vDSO's pages (criu dumps them) are this kernel's, moved into place above.
    if ((vmaAt(mm.vmas, e.vaddr)?.status ?? 0) & (VMA.AREA_VDSO | VMA.AREA_VVAR)) return;
    const whole = { start: e.vaddr, end: e.vaddr + BigInt(e.nrPages) * PAGE };
    present.push(whole);
    const fileAt = (a: bigint) => BigInt(task.pageOffsets[i]) + (a - e.vaddr);
    const pagesFd = pagesFds[task.pageFile[i] ?? 0];
    const { inside, outside } = cut(whole, kept);
    const v = vmaAt(mm.vmas, e.vaddr);
    const vma = v && copyableVma(v) ? { start: v.start, end: v.end } : undefined;
    for (const r of outside) fills.push({ ...r, fd: pagesFd, off: fileAt(r.start), vma });
    for (const { start, end } of inside) {
      if (!input.buffer) throw new Error("No buffer to compare inherited pages through");
      compares.push({
        code: OP.PREAD_CMP,
        args: [
          BigInt(pagesFd),
          start,
          end - start,
          fileAt(start),
          input.buffer.start,
          input.buffer.end - input.buffer.start,
        ],
        what: `compare ${(end - start) / PAGE} inherited pages at ${hex(start)}`,
      });
    }
  });
  const source = input.source && fillSource(fills, input.source.slot, [
    ...occupied(task, maps),
    { start: area.start, end: input.source.reservedEnd },
  ]);
  ops.push(...fillOps(fills, input.helper, source), ...compares);
  present.sort((a, b) => (a.start < b.start ? -1 : 1));
  for (const r of kept.flatMap((k) => cut(k, present).outside)) {
    ops.push({
      code: OP.MADVISE,
      args: [r.start, r.end - r.start, MADV_DONTNEED, 0n, 0n, 0n],
      what: `drop inherited pages at ${hex(r.start)}`,
    });
  }
  // 6. Final protections and advice.
  for (const v of filled) {
    if (v.prot & PROT.WRITE) continue;
    ops.push({
      code: OP.MPROTECT,
      args: [v.start, v.end - v.start, BigInt(v.prot)],
      what: `protect ${hex(v.start)}`,
    });
  }
  for (const v of mm.vmas) {
    const madv = v.madv ?? 0n;
    // (An io_uring instance's rings are advised once mapped: restore/io_uring.ts.)
    if (
      !madv || v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR | VMA.AREA_IO_URING | VMA.AREA_AIORING)
    ) {
      continue;
    }
    for (let advice = 0n; advice < 64n; advice++) {
      if (!(madv & (1n << advice))) continue;
      ops.push({
        code: OP.MADVISE,
        args: [v.start, v.end - v.start, advice, 0n, 0n, advice === 12n ? 1n : 0n],
        what: `madvise(${advice}) ${hex(v.start)}`,
      });
    }
  }
  return ops;
}

/**
 * Pages to read into a fresh range: `start` to `end`, from offset `off` of pages file `fd`;
 * `vma`, the mapping it is in, when that is private anonymous memory a userfaultfd may fill.
 */
interface Fill extends Range {
  fd: number;
  off: bigint;
  vma?: Range;
}

/** The mapping of pages file `fd` large fills are copied from, at `base`, `len` bytes. */
export interface FillSource {
  fd: number;
  base: bigint;
  len: bigint;
  /** The restorer's slot for its userfaultfd. */
  slot: bigint;
}

/**
 * Whether pages of `v` may be filled by UFFDIO_COPY: private anonymous memory (a userfaultfd
 * fills no other in MISSING mode), not locked (its pages are made at mmap) and not special.
 */
function copyableVma(v: vma_entry | undefined): boolean {
  if (!v || !(v.status & VMA.ANON_PRIVATE) || v.flags & (MAP.LOCKED | MAP_HUGETLB)) return false;
  return !(v.status & ODD_VMAS);
}

/**
 * The source for the large copyable fills of `fills` (from {@link COPY_FILL_BYTES} on): their
 * pages file with the most such bytes, mapped from its start to the end of the last page any
 * fill takes from it, in a gap away from `taken`; undefined when there are none.
 */
export function fillSource(fills: Fill[], slot: bigint, taken: Range[]): FillSource | undefined {
  const bytes = new Map<number, bigint>();
  for (const f of fills.filter(copyable)) {
    bytes.set(f.fd, (bytes.get(f.fd) ?? 0n) + f.end - f.start);
  }
  let fd = -1, most = 0n;
  for (const [k, n] of bytes) if (n > most) [fd, most] = [k, n];
  if (fd < 0) return undefined;
  let len = 0n;
  for (const f of fills) {
    if (f.fd === fd && f.off + f.end - f.start > len) len = f.off + f.end - f.start;
  }
  return { fd, base: findGap(taken, len), len, slot };
}

/** Whether fill `f` may be copied: in a mapping a userfaultfd fills, and large enough. */
function copyable(f: Fill): boolean {
  return f.vma !== undefined && f.end - f.start >= COPY_FILL_BYTES;
}

/** Whether fill `f` is copied from `source`. */
function copied(f: Fill, source?: FillSource): source is FillSource {
  return source !== undefined && f.fd === source.fd && copyable(f);
}

/** Filling a range: copied from `source` where it may be, else read into. */
function fillPair(f: Fill, source?: FillSource): Op[] {
  const len = f.end - f.start;
  if (copied(f, source)) {
    return [{
      code: OP.COPY,
      args: [BigInt(f.fd), f.start, len, f.off, source.base + f.off, source.slot],
      what: `copy ${len / PAGE} pages to ${hex(f.start)}`,
    }];
  }
  return [{
    code: OP.PREAD,
    args: [BigInt(f.fd), f.start, len, f.off],
    what: `read ${len / PAGE} pages at ${hex(f.start)}`,
  }];
}

/**
 * The ops that fill `fills`: in turn, or, from {@link SPLIT_FILL_BYTES} on with room for a
 * helper thread, split in two halves of about the same size (a range cut where the halves
 * meet), the first run by the thread (OP.SPAWN) while the restorer runs the second, then
 * waited for (OP.JOIN).
 */
export function fillOps(
  fills: Fill[],
  helper?: MemoryPlanInput["helper"],
  source?: FillSource,
): Op[] {
  const pair = (f: Fill) => fillPair(f, source);
  const into = fills.filter((f) => copied(f, source)).map((f) => f.vma!.start);
  const total = fills.reduce((n, f) => n + f.end - f.start, 0n);
  if (!helper || total < SPLIT_FILL_BYTES) return withSource(fills.flatMap(pair), into, source);
  let left = total / 2n / PAGE * PAGE;
  const first: Fill[] = [], second: Fill[] = [];
  for (const f of fills) {
    const len = f.end - f.start;
    if (left <= 0n) second.push(f);
    else if (len <= left) {
      first.push(f);
      left -= len;
    } else {
      first.push({ ...f, end: f.start + left });
      second.push({ ...f, start: f.start + left, off: f.off + left });
      left = 0n;
    }
  }
  const theirs = first.flatMap(pair);
  return withSource(
    [
      {
        code: OP.SPAWN,
        args: [BigInt(theirs.length), helper.stackTop, helper.state],
        what: `start a thread to fill ${(total / 2n) >> 20n} MiB`,
      },
      ...theirs,
      ...second.flatMap(pair),
      { code: OP.JOIN, args: [helper.state], what: "wait for the thread filling memory" },
    ],
    into,
    source,
  );
}

/**
 * `ops` between the opening and closing of `source`, when some copy from it into the mappings
 * starting at `into`. Each of those is given its anon_vma first (a page made and dropped): a
 * copy registers its range, splitting the mapping, and pieces that made anon_vmas of their own
 * (two threads copying at once) could never be merged again, one mapping left as several.
 */
function withSource(ops: Op[], into: bigint[], source?: FillSource): Op[] {
  if (!source || !into.length) return ops;
  const { slot, fd, base, len } = source;
  const starts = [...new Set(into)];
  return [
    {
      code: OP.SOURCE_OPEN,
      args: [slot, BigInt(fd), base, len],
      what: `map pages to copy from at ${hex(base)}`,
    },
    ...starts.flatMap((at) => [{
      code: OP.MADVISE,
      args: [at, PAGE, MADV_POPULATE_WRITE, 0n, 0n, 0n],
      what: `give the mapping at ${hex(at)} its anon_vma`,
    }, {
      code: OP.MADVISE,
      args: [at, PAGE, MADV_DONTNEED, 0n, 0n, 0n],
      what: `drop the page made at ${hex(at)}`,
    }]),
    ...ops,
    { code: OP.SOURCE_CLOSE, args: [slot, base, len], what: `unmap pages at ${hex(base)}` },
  ];
}

/** Address ranges the plan must avoid: dumped mappings and the helper's current ones. */
export function occupied(task: TaskImages, maps: ProcMap[]): Range[] {
  return [
    ...task.mm.vmas.map((v) => ({ start: v.start, end: v.end })),
    ...maps.map((m) => ({ start: m.start, end: m.end })),
  ];
}

export { MAP };
