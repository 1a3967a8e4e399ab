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
 * @module
 */
import type { mm_entry, vma_entry } from "../../proto/gen/mm_pb.ts";
import { MAP, PROT, VMA } from "../pagemap/vma.ts";
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
} as const;

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

const MADV_POPULATE_WRITE = 23n;
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

/** The dumped special mappings paired with the helper's current ones. */
export function pairSpecials(dumped: vma_entry[], maps: ProcMap[]): { from: Range; to: Range }[] {
  const cur = specials(maps);
  const dVdso = dumped.filter((v) => v.status & VMA.AREA_VDSO);
  const dVvar = dumped.filter((v) => v.status & VMA.AREA_VVAR);
  const pairs: { from: Range; to: Range }[] = [];
  if (dVdso.length !== (cur.vdso ? 1 : 0)) {
    throw new VdsoMismatchError(`${dVdso.length} vdso mappings dumped, ${cur.vdso ? 1 : 0} here`);
  }
  if (dVvar.length !== cur.vvars.length) {
    throw new VdsoMismatchError(`${dVvar.length} vvar mappings dumped, ${cur.vvars.length} here`);
  }
  const all = [...cur.vvars, ...(cur.vdso ? [cur.vdso] : [])];
  const dAll = [...dVvar, ...dVdso];
  all.forEach((m, i) => {
    const d = dAll[i];
    if (m.end - m.start !== d.end - d.start) {
      throw new VdsoMismatchError(
        `${m.path} is ${(m.end - m.start) / PAGE} pages here, ${
          (d.end - d.start) / PAGE
        } in the dump`,
      );
    }
    pairs.push({ from: { start: m.start, end: m.end }, to: { start: d.start, end: d.end } });
  });
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
  /** Descriptor in the task of each mapped file, by file id. */
  mapFds: Map<number, number>;
  /** Descriptor in the task of pages-N.img. */
  pagesFd: number;
  /** Descriptors in the task of shared anonymous memory made by an earlier task, by inode. */
  shmemFds: Map<bigint, number>;
}

/** The ops that rebuild the dumped address space. */
export function planMemory(input: MemoryPlanInput): Op[] {
  const { task, maps, area, tempBase, mapFds, pagesFd, shmemFds } = input;
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
  // 2. Drop every other mapping of the helper.
  const isSpecial = (m: ProcMap) =>
    ["[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"].includes(m.path);
  for (const m of maps) {
    if (isSpecial(m) || (m.start >= area.start && m.end <= area.end)) continue;
    ops.push({
      code: OP.MUNMAP,
      args: [m.start, m.end - m.start],
      what: `unmap helper ${m.path || "memory"}`,
    });
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
  const vmaOf = (addr: bigint) => mm.vmas.find((v) => v.start <= addr && addr < v.end);
  task.pagemap.forEach((e) => {
    for (let a = e.vaddr; a < e.vaddr + BigInt(e.nrPages) * PAGE;) {
      const v = vmaOf(a);
      if (!v) throw new Error(`Pagemap entry at ${hex(e.vaddr)} lies outside every mapping`);
      filled.add(v);
      a = v.end;
    }
  });
  for (const v of mm.vmas) {
    if (!(v.status & VMA.AREA_REGULAR) || v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR)) continue;
    if (v.status & VMA.AREA_SYSVIPC) {
      // The whole segment, attached where it was (the restorer makes or finds it first).
      const SHM_RDONLY = 0o10000, SHM_EXEC = 0o100000;
      const flags = (v.prot & PROT.WRITE ? 0 : SHM_RDONLY) | (v.prot & PROT.EXEC ? SHM_EXEC : 0);
      ops.push({
        code: OP.SHMAT,
        args: [v.shmid, v.start, BigInt(flags)],
        what: `attach System V segment ${v.shmid} at ${hex(v.start)}`,
      });
      continue;
    }
    if (v.status & VMA.ANON_SHARED) {
      // The first task makes the object; the others map the same one by descriptor.
      const shm = shmemFds.get(v.shmid);
      if (shm === undefined && v.pgoff !== 0n) {
        throw new Error(
          `Shared memory ${v.shmid} at ${
            hex(v.start)
          } starts at offset ${v.pgoff}; not supported yet`,
        );
      }
      ops.push({
        code: OP.MMAP,
        args: shm === undefined
          ? [v.start, v.end - v.start, BigInt(v.prot), BigInt(v.flags), -1n, 0n]
          : [
            v.start,
            v.end - v.start,
            BigInt(v.prot),
            BigInt(v.flags & ~MAP.ANONYMOUS),
            BigInt(shm),
            v.pgoff,
          ],
        what: `map shared memory ${v.shmid} at ${hex(v.start)}`,
      });
      continue;
    }
    const isFile = (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) !== 0;
    const fd = isFile ? mapFds.get(Number(v.shmid)) : -1;
    if (fd === undefined) {
      throw new Error(`No file for the mapping at ${hex(v.start)} (file id ${v.shmid})`);
    }
    const prot = filled.has(v) ? v.prot | PROT.WRITE : v.prot;
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
  // 5. The pages.
  task.pagemap.forEach((e, i) => {
    if (!((e.flags ?? 4) & 4)) return;
    const len = BigInt(e.nrPages) * PAGE;
    ops.push({
      code: OP.MADVISE,
      args: [e.vaddr, len, MADV_POPULATE_WRITE, 0n, 0n, 1n],
      what: `populate ${hex(e.vaddr)}`,
    });
    ops.push({
      code: OP.PREAD,
      args: [BigInt(pagesFd), e.vaddr, len, BigInt(task.pageOffsets[i])],
      what: `read ${e.nrPages} pages at ${hex(e.vaddr)}`,
    });
  });
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
    if (!madv || v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR)) continue;
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

/** Address ranges the plan must avoid: dumped mappings and the helper's current ones. */
export function occupied(task: TaskImages, maps: ProcMap[]): Range[] {
  return [
    ...task.mm.vmas.map((v) => ({ start: v.start, end: v.end })),
    ...maps.map((m) => ({ start: m.start, end: m.end })),
  ];
}

export { MAP };
