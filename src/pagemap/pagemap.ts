/**
 * /proc/PID/pagemap: which pages of a mapping hold private data worth dumping.
 *
 * ```
 * one u64 per virtual page
 *   63 present   62 swapped   61 file page or shared anon   57 uffd-wp   56 exclusive
 *   55 soft-dirty   0..54 page frame number (visible to CAP_SYS_ADMIN)
 * ```
 * Entries are read as pairs of u32 (low, high) so that the per-page test stays in small
 * integers instead of BigInt arithmetic.
 *
 * @module
 */
import { create, isFieldSet } from "../images/protobuf.ts";
import { type pagemap_entry, pagemap_entrySchema } from "../../proto/gen/mm_pb.ts";
import { close, O, open, PAGE_IS, pagemapScan, pread } from "../syscalls/mod.ts";
import { PM_HI_UFFD_WP } from "../syscalls/uffd.ts";

/** High-word bits of a pagemap entry. */
export const PM_HI = {
  PRESENT: 0x80000000,
  SWAP: 0x40000000,
  FILE: 0x20000000,
  /** Bit 58: a guard region's page (MADV_GUARD_INSTALL), shown as swapped: no page at all. */
  GUARD: 0x04000000,
  PFN_MASK: 0x007fffff,
} as const;

/** An object whose pages images hold: a process (its id in the images) or a shmem object. */
export type PageObject = { kind: "pid"; id: number } | { kind: "shmem"; id: bigint };

/** The name of the pagemap image of `obj`. */
export function pagemapName(obj: PageObject): string {
  return obj.kind === "pid" ? `pagemap-${obj.id}.img` : `pagemap-shmem-${obj.id}.img`;
}

/** pagemap_entry flag PE_PRESENT: the entry's pages are in pages-N.img. */
export const PE_PRESENT = 1 << 2;

/**
 * A pagemap image entry for `nrPages` pages at `vaddr` with `flags` (PE_*). criu 4 reads the
 * count from nr_pages (and writes 0 in compat_nr_pages); criu 3 and its crit know only
 * compat_nr_pages: both hold it, so that either reads it.
 */
export function flaggedEntry(vaddr: bigint, nrPages: number, flags: number): pagemap_entry {
  return create(pagemap_entrySchema, {
    vaddr,
    compatNrPages: nrPages <= 0xffffffff ? nrPages : 0,
    nrPages: BigInt(nrPages),
    flags,
  });
}

/** A pagemap image entry for `nrPages` pages at `vaddr`, present (lazy if `lazy`). */
export function pagemapEntry(vaddr: bigint, nrPages: number, lazy = false): pagemap_entry {
  return flaggedEntry(vaddr, nrPages, PE_PRESENT | (lazy ? PE_LAZY : 0));
}

/** A pagemap image entry for `nrPages` pages at `vaddr` whose data are the parent images'. */
export function parentEntry(vaddr: bigint, nrPages: number): pagemap_entry {
  return flaggedEntry(vaddr, nrPages, PE_PARENT);
}

/** pagemap_entry flag PE_LAZY: the pages may come later (criu's lazy restore). */
export const PE_LAZY = 1 << 1;

/** The page count of a pagemap image entry, old (compat_nr_pages) or new (nr_pages). */
export function entryPages(e: pagemap_entry): number {
  return isFieldSet(e, pagemap_entrySchema.field.nrPages) ? Number(e.nrPages) : e.compatNrPages;
}

/** pagemap_entry flag PE_PARENT: the entry's pages are in the parent images. */
export const PE_PARENT = 1 << 0;

/** The flags of a pagemap image entry; old ones without flags: in_parent, else present. */
export function entryFlags(e: pagemap_entry): number {
  if (isFieldSet(e, pagemap_entrySchema.field.flags)) return e.flags;
  return e.inParent ? PE_PARENT : PE_PRESENT;
}

/** A run of pages to dump. */
export interface PageRun {
  /** First page address. */
  vaddr: bigint;
  /** Number of pages. */
  nrPages: number;
  /** Their data are the parent images' (not written since, the same frames): PE_PARENT. */
  inParent?: boolean;
}

/**
 * The pagemap words of the pages a scan walked, kept for the next dump to compare frames with:
 * segments of consecutive pages, each its first page number and the raw words (low, high) of
 * its pages. Serialized as, per segment: first page and page count (two f64), then the words
 * (u32 pairs, padded to 8 bytes).
 */
export class FrameList {
  readonly #segments: { first: number; words: Uint32Array }[] = [];

  /** Keeps the words of `count` pages from page `first` on (copied). */
  add(first: number, words: Uint32Array): void {
    this.#segments.push({ first, words: words.slice() });
  }

  /** The record as bytes. */
  bytes(): Uint8Array {
    const size = this.#segments.reduce((n, s) => n + 16 + s.words.byteLength, 0);
    const out = new Uint8Array(size);
    const v = new DataView(out.buffer);
    let at = 0;
    for (const s of this.#segments) {
      v.setFloat64(at, s.first, true);
      v.setFloat64(at + 8, s.words.length / 2, true);
      out.set(new Uint8Array(s.words.buffer, s.words.byteOffset, s.words.byteLength), at + 16);
      at += 16 + s.words.byteLength;
    }
    return out;
  }
}

/** What a parent's dump recorded of the pages it walked (FrameList's bytes), looked up by page. */
export class FrameTable {
  readonly #first: number[] = [];
  readonly #words: Uint32Array[] = [];
  /** Pages recorded. */
  readonly size: number = 0;

  constructor(bytes: Uint8Array) {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let at = 0; at + 16 <= bytes.length;) {
      const first = v.getFloat64(at, true), count = v.getFloat64(at + 8, true);
      const len = count * 8;
      if (!Number.isInteger(count) || at + 16 + len > bytes.length) break;
      // Copied: aligned for u32 reads whatever the file's offset.
      this.#words.push(new Uint32Array(bytes.slice(at + 16, at + 16 + len).buffer));
      this.#first.push(first);
      this.size += count;
      at += 16 + len;
    }
  }

  /** The segment holding page `pageNo`, or -1. */
  segment(pageNo: number): number {
    let lo = 0, hi = this.#first.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#first[mid] <= pageNo) lo = mid + 1;
      else hi = mid;
    }
    const i = lo - 1;
    return i >= 0 && pageNo < this.#first[i] + this.#words[i].length / 2 ? i : -1;
  }

  /** Segment `i`'s first page and words. */
  at(i: number): { first: number; words: Uint32Array } {
    return { first: this.#first[i], words: this.#words[i] };
  }
}

/** Which pages of a mapping are private data. */
export interface ScanPolicy {
  /** Pages with the FILE bit are page cache, not private data (private file mappings). */
  skipFilePages: boolean;
  /**
   * PFN of the shared zero page (read but never written), -1 when frames are hidden, or a frame
   * no page has where the kernel has no zero page (syscalls/process.ts zeroPagePfn).
   */
  zeroPfn: number;
  /**
   * Memory tracking (dump/track.ts): what the parent's dump recorded of each page; a page still
   * write-protected and on the frame recorded is left to the parent images.
   */
  parent?: FrameTable;
  /** With tracking: the pagemap words of every page walked, kept for the next dump. */
  frames?: FrameList;
}

/** A range of a task's memory a page scan walks, and how. */
export interface ScanRange {
  start: bigint;
  end: bigint;
  /** Every page is taken, present or not (the vDSO: dumped whole, as criu dumps it). */
  whole: boolean;
  /** Pages with the FILE bit are page cache, not private data. */
  skipFilePages: boolean;
}

/** Whether two walks take the same ranges the same way (so find the same pages of a stopped task). */
export function sameRanges(a: readonly ScanRange[], b: readonly ScanRange[]): boolean {
  return a.length === b.length &&
    a.every((r, i) =>
      r.start === b[i].start && r.end === b[i].end && r.whole === b[i].whole &&
      r.skipFilePages === b[i].skipFilePages
    );
}

/** What a scan of a task's memory found. */
export interface TaskScan {
  runs: PageRun[];
  /** Pages walked (criu's pages_scanned). */
  scanned: number;
  /** With recording: the pagemap words of every page walked (a FrameList's bytes). */
  frames?: Uint8Array;
  /** Microseconds it took. */
  us: number;
}

/**
 * The private pages of the stopped task `pid` in `ranges`: runs in address order, those the
 * `parent` recorded still unwritten on the same frame marked in the parent; with `record`, the
 * frames walked kept for the next dump.
 */
export function scanTask(
  pid: number,
  ranges: readonly ScanRange[],
  zeroPfn: number,
  parent?: FrameTable,
  record = false,
): TaskScan {
  const t0 = performance.now();
  const runs: PageRun[] = [];
  const frames = record ? new FrameList() : undefined;
  using pm = new Pagemap(pid);
  for (const r of ranges) {
    if (r.whole) {
      runs.push({ vaddr: r.start, nrPages: Number((r.end - r.start) / 4096n) });
      continue;
    }
    pm.scan(r.start, r.end, { skipFilePages: r.skipFilePages, zeroPfn, parent, frames }, runs);
  }
  return {
    runs,
    scanned: pm.scanned,
    frames: frames?.bytes(),
    us: (performance.now() - t0) * 1000,
  };
}

/** The high-word bits a page left to the parent has, of those the fast test looks at. */
const FAST_WANT = (PM_HI.PRESENT | PM_HI_UFFD_WP) >>> 0;
/** The high-word bits that must equal the parent's for the same frame. */
const SAME_FRAME = PM_HI.PRESENT | PM_HI.SWAP | PM_HI.PFN_MASK;

/** `regions` (in address order) with those that touch made one. */
function joined(
  regions: readonly { start: bigint; end: bigint }[],
): { start: bigint; end: bigint }[] {
  const out: { start: bigint; end: bigint }[] = [];
  for (const r of regions) {
    const last = out.at(-1);
    if (last && last.end === r.start) last.end = r.end;
    else out.push({ ...r });
  }
  return out;
}

/** Ranges larger than this are walked by the kernel first (PAGEMAP_SCAN). */
const SCAN_FIRST = 64n << 20n;

/**
 * The pagemap words of up to 65536 pages, read by {@link Pagemap}'s page walk: one for all
 * (the walk never runs in two at once), made on the first walk, for most scans are the
 * kernel's (PAGEMAP_SCAN) and need none; it was once 512 KiB made zeroed for every task.
 */
let walkBuf: Uint32Array | undefined;

/** Open /proc/PID/pagemap for the life of a dump. */
export class Pagemap implements Disposable {
  readonly pid: number;
  readonly #fd: number;
  /** Pages examined so far. */
  scanned = 0;

  constructor(pid: number) {
    this.pid = pid;
    this.#fd = open(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
  }

  /**
   * Appends to `out` the runs of private pages in [start, end). A large range is first walked
   * by the kernel for its present or swapped pages (PAGEMAP_SCAN), so that a vast reservation
   * (mariadb keeps 8 TiB of PROT_NONE) costs nothing where it holds no page.
   */
  scan(start: bigint, end: bigint, policy: ScanPolicy, out: PageRun[]): void {
    if (!policy.parent && !policy.frames && this.#kernelScan(start, end, policy, out)) return;
    if (end - start > SCAN_FIRST) {
      const found = pagemapScan(this.#fd, start, end, PAGE_IS.PRESENT | PAGE_IS.SWAPPED, true);
      if (typeof found !== "number") {
        // Adjacent regions are one (a run may go on across them).
        const before = this.scanned;
        for (const r of joined(found)) this.#scan(r.start, r.end, policy, out);
        // Scanned still means every page of the range (criu's pages_scanned).
        this.scanned = before + Number((end - start) / 4096n);
        return;
      }
    }
    this.#scan(start, end, policy, out);
  }

  /**
   * The pages to take, found by the kernel (PAGEMAP_SCAN), when nothing is asked of each page's
   * frame (no parent images, no frames kept): present or swapped, neither the zero page nor a
   * guard, nor page cache with `skipFilePages`, as {@link #scan} takes them page by page. False
   * when this kernel cannot say (before 6.7, or without guard regions), and nothing is found.
   */
  #kernelScan(start: bigint, end: bigint, policy: ScanPolicy, out: PageRun[]): boolean {
    if (policy.zeroPfn < 0) return false;
    const none = PAGE_IS.PFNZERO | PAGE_IS.GUARD | (policy.skipFilePages ? PAGE_IS.FILE : 0);
    const found = pagemapScan(this.#fd, start, end, PAGE_IS.PRESENT | PAGE_IS.SWAPPED, true, none);
    if (typeof found === "number") return false;
    // Regions that touch are one run (present pages, then swapped ones, say).
    for (const r of joined(found)) {
      out.push({ vaddr: r.start, nrPages: Number((r.end - r.start) / 4096n) });
    }
    this.scanned += Number((end - start) / 4096n);
    return true;
  }

  #scan(start: bigint, end: bigint, policy: ScanPolicy, out: PageRun[]): void {
    const e = walkBuf ??= new Uint32Array(2 * 65536);
    const bytes = new Uint8Array(e.buffer);
    const zeroLo = policy.zeroPfn >= 0 ? policy.zeroPfn % 0x100000000 : -1;
    const zeroHi = policy.zeroPfn >= 0 ? Math.floor(policy.zeroPfn / 0x100000000) : -1;
    let runStart = -1n;
    let runLen = 0;
    let runParent = false;
    const { parent, frames } = policy;
    // What a page left to the parent shows: present and protected, neither swapped nor a guard
    // (nor page cache, where those are not the task's).
    const fastMask = PM_HI.PRESENT | PM_HI.SWAP | PM_HI.GUARD | PM_HI_UFFD_WP |
      (policy.skipFilePages ? PM_HI.FILE : 0);
    // The parent's segment in use, and where it starts.
    let seg = -1, segFirst = 0, segEnd = 0;
    let segWords: Uint32Array = new Uint32Array(0);
    for (let page = start; page < end;) {
      const count = Math.min(Number((end - page) / 4096n), e.length / 2);
      const got = pread(
        this.#fd,
        bytes.subarray(0, count * 8),
        (page / 4096n) * 8n,
        `/proc/${this.pid}/pagemap`,
      ) / 8;
      if (got <= 0) break;
      const firstPage = Number(page / 4096n);
      frames?.add(firstPage, e.subarray(0, 2 * got));
      for (let i = 0; i < got; i++) {
        if (runParent && runLen && seg >= 0) {
          // Within a run left to the parent, the common case: the pages that follow are still
          // present, protected and on the frames the parent recorded (the full test below,
          // for those alone, in a loop the compiler keeps tight).
          let k = 2 * (firstPage + i - segFirst);
          while (i < got && k < segWords.length) {
            const lo = e[2 * i], hi = e[2 * i + 1];
            if (
              ((hi & fastMask) >>> 0) !== FAST_WANT || lo !== segWords[k] ||
              ((segWords[k + 1] ^ hi) & SAME_FRAME) !== 0 || (lo | (hi & PM_HI.PFN_MASK)) === 0 ||
              (lo === zeroLo && (hi & PM_HI.PFN_MASK) === zeroHi)
            ) break;
            runLen++;
            i++;
            k += 2;
          }
          if (i >= got) break;
        }
        const lo = e[2 * i] >>> 0, hi = e[2 * i + 1] >>> 0;
        let take = false;
        if (hi & PM_HI.GUARD) take = false;
        else if (hi & PM_HI.SWAP) take = true;
        else if (hi & PM_HI.PRESENT) {
          take = !(policy.skipFilePages && (hi & PM_HI.FILE)) &&
            !(lo === zeroLo && (hi & PM_HI.PFN_MASK) === zeroHi);
        }
        let inParent = false;
        // Left to the parent: still write-protected, and the same frame (or swap slot) as
        // the parent recorded there; never where the kernel hides frames (all zero).
        if (take && parent && (hi & PM_HI_UFFD_WP) !== 0 && (lo | (hi & PM_HI.PFN_MASK)) !== 0) {
          const pageNo = firstPage + i;
          if (pageNo < segFirst || pageNo >= segEnd) {
            seg = parent.segment(pageNo);
            if (seg >= 0) {
              const at = parent.at(seg);
              segFirst = at.first;
              segWords = at.words;
              segEnd = segFirst + segWords.length / 2;
            } else {
              segFirst = segEnd = 0;
            }
          }
          if (seg >= 0 && pageNo >= segFirst && pageNo < segEnd) {
            const k = 2 * (pageNo - segFirst);
            const same = PM_HI.PRESENT | PM_HI.SWAP | PM_HI.PFN_MASK;
            inParent = segWords[k] === lo && ((segWords[k + 1] ^ hi) & same) === 0;
          }
        }
        if (take && runLen && inParent !== runParent) {
          out.push({ vaddr: runStart, nrPages: runLen, ...(runParent ? { inParent: true } : {}) });
          runLen = 0;
        }
        if (take) {
          if (runLen === 0) {
            runStart = page + BigInt(i) * 4096n;
            runParent = inParent;
          }
          runLen++;
        } else if (runLen) {
          out.push({ vaddr: runStart, nrPages: runLen, ...(runParent ? { inParent: true } : {}) });
          runLen = 0;
        }
      }
      this.scanned += got;
      page += BigInt(got) * 4096n;
    }
    if (runLen) {
      out.push({ vaddr: runStart, nrPages: runLen, ...(runParent ? { inParent: true } : {}) });
    }
  }

  /** The descriptor of /proc/PID/pagemap (PAGEMAP_SCAN, while open). */
  get fd(): number {
    return this.#fd;
  }

  /** Closes the pagemap file. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    close(this.#fd);
  }
  #closed = false;

  [Symbol.dispose](): void {
    this.close();
  }
}
