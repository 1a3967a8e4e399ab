/**
 * Copies a task's private pages into pages-N.img.
 *
 * ```
 * runs:  [vaddr, n] [vaddr, n] ...     (from the pagemap scan, in address order)
 *          |  gathered by one process_vm_readv per batch (up to 1024 iovecs, 8 MiB)
 *          v
 * batch buffer (8 MiB, reused) --write--> pages-N.img  (pages back to back, no header)
 * ```
 * Pages of mappings the task itself cannot read (PROT_NONE) are read through /proc/PID/mem,
 * which may look past protections.
 *
 * @module
 */
import { close, Errno, O, open, pread, readRemoteVec } from "../syscalls/mod.ts";
import { IMAGE_MODE } from "../images/image.ts";
import type { PageRun } from "./pagemap.ts";

const BATCH_BYTES = 8 << 20;
const MAX_IOV = 1024;
const PAGE = 4096;

/** Timings and counts of one page copy. */
export interface XferStats {
  /** Pages written. */
  pages: number;
  /** Microseconds spent reading the task's memory. */
  readUs: number;
  /** Microseconds spent writing the image. */
  writeUs: number;
}

/**
 * Writes the pages of `runs` of task `pid` to a new image file at `path` and syncs it (with
 * `lenient`, pages it no longer has as zeros: see {@link readPages}).
 */
export function writePages(pid: number, runs: PageRun[], path: string, lenient = false): XferStats {
  using file = Deno.openSync(path, { write: true, create: true, truncate: true, mode: IMAGE_MODE });
  Deno.chmodSync(path, IMAGE_MODE);
  const stats = readPages(pid, runs, (bytes) => {
    let off = 0;
    while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
  }, lenient);
  const t = performance.now();
  file.syncSync();
  stats.writeUs += (performance.now() - t) * 1000;
  return stats;
}

/**
 * Reads the pages of `runs` of task `pid` in batches (one process_vm_readv each), handing each
 * batch to `sink` in order before the next is read. `sink`'s time counts as writing. With
 * `lenient` (the task runs meanwhile), a page it no longer has reads as zeros.
 */
export function readPages(
  pid: number,
  runs: PageRun[],
  sink: (bytes: Uint8Array) => void,
  lenient = false,
): XferStats {
  const stats: XferStats = { pages: 0, readUs: 0, writeUs: 0 };
  const buf = new Uint8Array(BATCH_BYTES);
  const iov = new BigUint64Array(MAX_IOV * 2);
  let nIov = 0;
  let filled = 0;

  const flush = () => {
    if (!filled) return;
    let t = performance.now();
    const ranges = iov.subarray(0, nIov * 2);
    let got: number;
    try {
      got = readRemoteVec(pid, ranges, buf);
    } catch (e) {
      if (!(e instanceof Errno)) throw e;
      got = 0;
    }
    if (got !== filled) readViaProcMem(pid, ranges, buf, lenient);
    stats.readUs += (performance.now() - t) * 1000;
    t = performance.now();
    sink(buf.subarray(0, filled));
    stats.writeUs += (performance.now() - t) * 1000;
    stats.pages += filled / PAGE;
    nIov = 0;
    filled = 0;
  };

  for (const run of runs) {
    let addr = run.vaddr;
    let left = run.nrPages * PAGE;
    while (left > 0) {
      if (nIov === MAX_IOV || filled === BATCH_BYTES) flush();
      const len = Math.min(left, BATCH_BYTES - filled);
      iov[nIov * 2] = addr;
      iov[nIov * 2 + 1] = BigInt(len);
      nIov++;
      filled += len;
      addr += BigInt(len);
      left -= len;
    }
  }
  flush();
  return stats;
}

/**
 * Fills `buf` from `ranges` through /proc/PID/mem (reads past PROT_NONE); with `lenient`, what
 * cannot be read (unmapped since) is zeros.
 */
function readViaProcMem(
  pid: number,
  ranges: BigUint64Array,
  buf: Uint8Array,
  lenient: boolean,
): void {
  const what = `/proc/${pid}/mem`;
  const fd = open(what, O.RDONLY | O.CLOEXEC);
  try {
    let off = 0;
    for (let i = 0; i < ranges.length; i += 2) {
      const len = Number(ranges[i + 1]);
      let n: number;
      try {
        n = pread(fd, buf.subarray(off, off + len), ranges[i], what);
      } catch (e) {
        if (!lenient) throw e;
        n = 0;
      }
      if (n !== len && lenient) {
        // Page by page: what is still there, and zeros for the rest.
        for (let p = Math.floor(n / PAGE) * PAGE; p < len; p += PAGE) {
          const page = buf.subarray(off + p, off + p + PAGE);
          let got = 0;
          try {
            got = pread(fd, page, ranges[i] + BigInt(p), what);
          } catch {
            // unmapped since
          }
          if (got !== PAGE) page.fill(0);
        }
      } else if (n !== len) {
        throw new Errno("read", 5, `${what} at 0x${ranges[i].toString(16)} (${n} of ${len} bytes)`);
      }
      off += len;
    }
  } finally {
    close(fd);
  }
}
