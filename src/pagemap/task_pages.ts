/**
 * A task's pages, read for a dump (a PageReader of page_xfer.ts): by the dump_pages parasite
 * (page_pipe.ts, zero copy) when the task may read them all itself and they are many, else as
 * below.
 *
 * ```
 * runs:  [vaddr, n] [vaddr, n] ...     (from the pagemap scan, in address order)
 *          |  gathered by one process_vm_readv per 1024 runs
 *          v
 * pages-N.img, sized and mapped shared   (pages back to back, no header)
 * ```
 * A page server takes them through a batch buffer instead (8 MiB, reused), batch by batch.
 * Pages of mappings the task itself cannot read (PROT_NONE) are read through /proc/PID/mem,
 * which may look past protections.
 *
 * @module
 */
import { close, Errno, O, open, pread, readRemoteVec } from "../syscalls/mod.ts";
import { fillPagesFile } from "./pages_file.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import type { PageRun } from "./pagemap.ts";
import { writePagesViaParasite } from "./page_pipe.ts";
import type { PageReader, XferStats } from "./page_xfer.ts";

const BATCH_BYTES = 8 << 20;
const MAX_IOV = 1024;
const PAGE = 4096;

/**
 * Fewer pages than this (16 MiB) are read with process_vm_readv rather than by the parasite,
 * whose pipes cost more to set up than they save: the last dump after pre-dumps (some 2600
 * pages) was frozen 5 ms longer through them.
 */
const FEW_PAGES = 4096;
/**
 * The same where the parasite's pages go into their file while the next process of a tree is
 * collected (2 MiB): a tree of 20 processes of 8 MiB each was dumped some 200 ms sooner than
 * with 16 MiB here.
 */
const FEW_PAGES_OVERLAPPED = 512;

/** Writes the pages of `runs` of task `pid` into a new file at `path` elsewhere (a worker). */
export type PagesWriter = (
  pid: number,
  runs: PageRun[],
  path: string,
  lenient: boolean,
) => Promise<XferStats>;

/**
 * The pages of task `pid`: through the parasite `rs` when given and `viaParasite` (every page
 * readable by the task, no other transfer asked for) and they are many, else read with
 * process_vm_readv (by `writer` when given); with `lenient` (the task runs meanwhile: a
 * pre-dump's pages) a page it no longer has reads as zeros.
 */
export class TaskPages implements PageReader {
  readonly #pid: number;
  readonly #rs?: RemoteSyscalls;
  readonly #viaParasite: boolean;
  readonly #lenient: boolean;
  readonly #signal?: AbortSignal;
  readonly #writer?: PagesWriter;
  readonly #overlapped: boolean;

  constructor(
    pid: number,
    how: {
      rs?: RemoteSyscalls;
      viaParasite?: boolean;
      /** The parasite's pages would move while the next process of a tree is collected. */
      overlapped?: boolean;
      lenient?: boolean;
      signal?: AbortSignal;
      writer?: PagesWriter;
    },
  ) {
    this.#pid = pid;
    this.#rs = how.rs;
    this.#viaParasite = how.viaParasite ?? false;
    this.#overlapped = how.overlapped ?? false;
    this.#lenient = how.lenient ?? false;
    this.#signal = how.signal;
    this.#writer = how.writer;
  }

  /** Whether the parasite copies the pages of `runs` (then it must stay until they are in). */
  #byParasite(runs: PageRun[]): boolean {
    // A few pages (what a dump after pre-dumps writes) are read from here at once: the
    // parasite's pipes cost more to set up than they save.
    const few = runs.reduce((n, r) => n + r.nrPages, 0) <
      (this.#overlapped ? FEW_PAGES_OVERLAPPED : FEW_PAGES);
    return this.#rs !== undefined && this.#viaParasite && !few;
  }

  /**
   * Whether a file of the pages of `runs` is written elsewhere, needing nothing of the caller
   * meanwhile (it may go on, the task stopped, and wait for the file later).
   */
  detached(runs: PageRun[]): boolean {
    return this.#writer !== undefined && !this.#byParasite(runs);
  }

  async toFile(runs: PageRun[], path: string): Promise<XferStats> {
    if (this.#byParasite(runs)) {
      return await writePagesViaParasite(this.#rs!, runs, path, this.#signal);
    }
    if (this.#writer) return await this.#writer(this.#pid, runs, path, this.#lenient);
    return writePages(this.#pid, runs, path, this.#lenient);
  }

  toSink(runs: PageRun[], sink: (bytes: Uint8Array) => void): Promise<XferStats> {
    return Promise.resolve(readPages(this.#pid, runs, sink, this.#lenient));
  }
}

/**
 * Writes the pages of `runs` of task `pid` to a new image file at `path` and syncs it (with
 * `lenient`, pages it no longer has as zeros: see {@link readPages}), read straight into the
 * file's mapping (fillPagesFile; with `spare`, into that file made beforehand).
 */
export function writePages(
  pid: number,
  runs: PageRun[],
  path: string,
  lenient = false,
  spare?: string,
): XferStats {
  const total = runs.reduce((n, r) => n + r.nrPages, 0) * PAGE;
  return fillPagesFile(path, total, (file) => {
    const iov = new BigUint64Array(MAX_IOV * 2);
    let nIov = 0, from = 0, to = 0;
    const flush = () => {
      readInto(pid, iov.subarray(0, nIov * 2), file.subarray(from, to), lenient);
      nIov = 0;
      from = to;
    };
    for (const r of runs) {
      if (nIov === MAX_IOV) flush();
      iov[nIov * 2] = r.vaddr;
      iov[nIov * 2 + 1] = BigInt(r.nrPages * PAGE);
      nIov++;
      to += r.nrPages * PAGE;
    }
    if (nIov) flush();
  }, spare);
}

/**
 * Reads the pages of `runs` of task `pid` in batches (one process_vm_readv each), handing each
 * batch to `sink` in order before the next is read. `sink`'s time counts as writing. With
 * `lenient` (the task runs meanwhile), a page it no longer has reads as zeros.
 */
function readPages(
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
    readInto(pid, iov.subarray(0, nIov * 2), buf.subarray(0, filled), lenient);
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
 * Fills `dst` from `ranges` of task `pid`: process_vm_readv, and what it cannot read through
 * /proc/PID/mem (see readViaProcMem).
 */
function readInto(pid: number, ranges: BigUint64Array, dst: Uint8Array, lenient: boolean): void {
  let got: number;
  try {
    got = readRemoteVec(pid, ranges, dst);
  } catch (e) {
    if (!(e instanceof Errno)) throw e;
    got = 0;
  }
  if (got !== dst.length) readViaProcMem(pid, ranges, dst, lenient);
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
