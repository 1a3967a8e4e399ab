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
import { create, isFieldSet } from "@bufbuild/protobuf";
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

/** pagemap_entry flag PE_PRESENT: the entry's pages are in pages-N.img. */
export const PE_PRESENT = 1 << 2;

/**
 * A pagemap image entry for `nrPages` pages at `vaddr`, present. criu 4 reads the count from
 * nr_pages (and writes 0 in compat_nr_pages); criu 3 and its crit know only compat_nr_pages:
 * both hold it, so that either reads it.
 */
export function pagemapEntry(vaddr: bigint, nrPages: number, lazy = false): pagemap_entry {
  return create(pagemap_entrySchema, {
    vaddr,
    compatNrPages: nrPages <= 0xffffffff ? nrPages : 0,
    nrPages: BigInt(nrPages),
    flags: PE_PRESENT | (lazy ? PE_LAZY : 0),
  });
}

/** A pagemap image entry for `nrPages` pages at `vaddr` whose data are the parent images'. */
export function parentEntry(vaddr: bigint, nrPages: number): pagemap_entry {
  return create(pagemap_entrySchema, {
    vaddr,
    compatNrPages: nrPages <= 0xffffffff ? nrPages : 0,
    nrPages: BigInt(nrPages),
    flags: PE_PARENT,
  });
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
 * The frames the parent images recorded, as written beside them: pairs of page address and
 * frame, in address order.
 */
export class FrameTable {
  /** Address, frame, address, frame... */
  readonly pairs: Float64Array;

  constructor(pairs: Float64Array) {
    this.pairs = pairs;
  }

  /** How many pages it holds. */
  get size(): number {
    return this.pairs.length >> 1;
  }

  /** Where in `pairs` the first page at or above `addr` is. */
  seek(addr: number): number {
    let lo = 0, hi = this.pairs.length >> 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.pairs[2 * mid] < addr) lo = mid + 1;
      else hi = mid;
    }
    return 2 * lo;
  }
}

/** Frames recorded by a scan: pairs of page address and frame, growing. */
export class FrameList {
  #buf = new Float64Array(1 << 16);
  /** Numbers used (twice the pages). */
  length = 0;

  /** Room for `pages` more pages; the buffer to write them into (from `length`). */
  reserve(pages: number): Float64Array {
    if (this.length + 2 * pages > this.#buf.length) {
      const bigger = new Float64Array(Math.max(this.#buf.length * 2, this.length + 2 * pages));
      bigger.set(this.#buf.subarray(0, this.length));
      this.#buf = bigger;
    }
    return this.#buf;
  }

  /** The pairs recorded. */
  get pairs(): Float64Array {
    return this.#buf.subarray(0, this.length);
  }
}

/** Which pages of a mapping are private data. */
export interface ScanPolicy {
  /** Pages with the FILE bit are page cache, not private data (private file mappings). */
  skipFilePages: boolean;
  /** PFN of the shared zero page (read but never written), or -1 when unknown. */
  zeroPfn: number;
  /**
   * Memory tracking (dump/track.ts): the frame the parent images hold for each page number
   * (address / 4096); a page still write-protected and on that frame is left to them.
   */
  parent?: FrameTable;
  /** With tracking: each page taken, its address and frame. */
  frames?: FrameList;
}

/** Ranges larger than this are walked by the kernel first (PAGEMAP_SCAN). */
const SCAN_FIRST = 64n << 20n;

/** Open /proc/PID/pagemap for the life of a dump. */
export class Pagemap implements Disposable {
  readonly pid: number;
  readonly #fd: number;
  readonly #buf = new Uint32Array(2 * 65536);
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
    if (end - start > SCAN_FIRST) {
      const found = pagemapScan(this.#fd, start, end, PAGE_IS.PRESENT | PAGE_IS.SWAPPED, true);
      if (typeof found !== "number") {
        // Adjacent regions are one (a run may go on across them).
        const merged: { start: bigint; end: bigint }[] = [];
        for (const r of found) {
          const last = merged.at(-1);
          if (last && last.end === r.start) last.end = r.end;
          else merged.push({ ...r });
        }
        const before = this.scanned;
        for (const r of merged) this.#scan(r.start, r.end, policy, out);
        // Scanned still means every page of the range (criu's pages_scanned).
        this.scanned = before + Number((end - start) / 4096n);
        return;
      }
    }
    this.#scan(start, end, policy, out);
  }

  #scan(start: bigint, end: bigint, policy: ScanPolicy, out: PageRun[]): void {
    const bytes = new Uint8Array(this.#buf.buffer);
    const zeroLo = policy.zeroPfn >= 0 ? policy.zeroPfn % 0x100000000 : -1;
    const zeroHi = policy.zeroPfn >= 0 ? Math.floor(policy.zeroPfn / 0x100000000) : -1;
    let runStart = -1n;
    let runLen = 0;
    let runParent = false;
    const { parent, frames } = policy;
    // The parent's frames, walked along with the scan.
    const pairs = parent?.pairs ?? new Float64Array(0);
    let pi = parent ? parent.seek(Number(start)) : 0;
    for (let page = start; page < end;) {
      const count = Math.min(Number((end - page) / 4096n), this.#buf.length / 2);
      const got = pread(
        this.#fd,
        bytes.subarray(0, count * 8),
        (page / 4096n) * 8n,
        `/proc/${this.pid}/pagemap`,
      ) / 8;
      if (got <= 0) break;
      const e = this.#buf;
      const firstPage = Number(page / 4096n);
      const fb = frames?.reserve(got);
      let fn = frames?.length ?? 0;
      for (let i = 0; i < got; i++) {
        const lo = e[2 * i] >>> 0, hi = e[2 * i + 1] >>> 0;
        let take = false;
        if (hi & PM_HI.GUARD) take = false;
        else if (hi & PM_HI.SWAP) take = true;
        else if (hi & PM_HI.PRESENT) {
          take = !(policy.skipFilePages && (hi & PM_HI.FILE)) &&
            !(lo === zeroLo && (hi & PM_HI.PFN_MASK) === zeroHi);
        }
        let inParent = false;
        if (take && fb) {
          // The frame (a swap slot counted apart); 0 where the kernel hides frames.
          const n = (hi & PM_HI.PFN_MASK) * 0x100000000 + lo;
          const frame = hi & PM_HI.SWAP ? -(n + 1) : n;
          const addr = (firstPage + i) * 4096;
          while (pi < pairs.length && pairs[pi] < addr) pi += 2;
          inParent = frame !== 0 && (hi & PM_HI_UFFD_WP) !== 0 && pi < pairs.length &&
            pairs[pi] === addr && pairs[pi + 1] === frame;
          fb[fn++] = addr;
          fb[fn++] = frame;
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
      if (frames) frames.length = fn;
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
