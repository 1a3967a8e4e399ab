/**
 * The pages of one process that a lazy restore has not brought in yet: ranges of its address
 * space now, each with the address its first page had in the images (which tells where its
 * data are). The process moves its memory (mremap), drops it (munmap, madvise), and forks
 * (its child lacks what it lacks); the ranges follow.
 *
 * @module
 */

/** Pages not brought in yet: [start, end) now, whose first page was at `img` when dumped. */
export interface LazyRange {
  start: bigint;
  end: bigint;
  img: bigint;
}

/** A part taken out of the set, to be brought in. */
export interface LazyPart {
  /** Where the pages are now. */
  start: bigint;
  /** Their length in bytes. */
  len: bigint;
  /** Where the first was when dumped. */
  img: bigint;
}

/** The ranges of one process, in address order, never overlapping. */
export class LazyRanges {
  #ranges: LazyRange[];

  constructor(ranges: LazyRange[] = []) {
    this.#ranges = ranges.map((r) => ({ ...r })).sort((a, b) => (a.start < b.start ? -1 : 1));
  }

  /** None left. */
  get empty(): boolean {
    return this.#ranges.length === 0;
  }

  /** Bytes left. */
  get bytes(): bigint {
    return this.#ranges.reduce((n, r) => n + r.end - r.start, 0n);
  }

  /** A copy (a forked child's, which lacks what its parent lacks). */
  clone(): LazyRanges {
    return new LazyRanges(this.#ranges);
  }

  /** The ranges (copies). */
  list(): LazyRange[] {
    return this.#ranges.map((r) => ({ ...r }));
  }

  /** Index of the first range ending after `addr`. */
  #after(addr: bigint): number {
    let lo = 0, hi = this.#ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#ranges[mid].end <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Whether the page at `addr` is still to come. */
  has(addr: bigint): boolean {
    const r = this.#ranges[this.#after(addr)];
    return r !== undefined && r.start <= addr;
  }

  /**
   * Takes out up to `max` bytes from `addr` on, within the range holding it (undefined when no
   * range holds it).
   */
  take(addr: bigint, max: bigint): LazyPart | undefined {
    const i = this.#after(addr);
    const r = this.#ranges[i];
    if (!r || r.start > addr) return undefined;
    const end = r.end - addr < max ? r.end : addr + max;
    const part = { start: addr, len: end - addr, img: r.img + (addr - r.start) };
    const pieces: LazyRange[] = [];
    if (r.start < addr) pieces.push({ start: r.start, end: addr, img: r.img });
    if (end < r.end) pieces.push({ start: end, end: r.end, img: r.img + (end - r.start) });
    this.#ranges.splice(i, 1, ...pieces);
    return part;
  }

  /** Takes out up to `max` bytes from the lowest range (undefined when none is left). */
  takeFirst(max: bigint): LazyPart | undefined {
    const r = this.#ranges[0];
    return r && this.take(r.start, max);
  }

  /** Puts back a part (what a copy did not bring in). */
  putBack(part: LazyPart): void {
    if (part.len <= 0n) return;
    const i = this.#after(part.start);
    this.#ranges.splice(i, 0, { start: part.start, end: part.start + part.len, img: part.img });
  }

  /** Drops [start, end): the process unmapped it or threw its pages away. */
  drop(start: bigint, end: bigint): void {
    const out: LazyRange[] = [];
    for (const r of this.#ranges) {
      if (r.end <= start || r.start >= end) {
        out.push(r);
        continue;
      }
      if (r.start < start) out.push({ start: r.start, end: start, img: r.img });
      if (r.end > end) out.push({ start: end, end: r.end, img: r.img + (end - r.start) });
    }
    this.#ranges = out;
  }

  /** [from, from + len) moved to `to` (mremap): what lay there follows. */
  remap(from: bigint, to: bigint, len: bigint): void {
    const end = from + len;
    const moved: LazyRange[] = [];
    for (const r of this.#ranges) {
      if (r.end <= from || r.start >= end) continue;
      const s = r.start > from ? r.start : from;
      const e = r.end < end ? r.end : end;
      moved.push({ start: s - from + to, end: e - from + to, img: r.img + (s - r.start) });
    }
    this.drop(from, end);
    // Whatever was at the target is gone (mremap unmapped it).
    this.drop(to, to + len);
    this.#ranges.push(...moved);
    this.#ranges.sort((a, b) => (a.start < b.start ? -1 : 1));
  }
}
