/**
 * A task's pages, read for a dump (a PageReader of page_xfer.ts): many of them by the page
 * copiers (page_copiers.ts: every core, while the dump goes on), else read here or on the dump's
 * worker as below.
 *
 * ```
 * runs:  [vaddr, n] [vaddr, n] ...     (from the pagemap scan, in address order)
 *          |  gathered by one process_vm_readv per 1024 runs
 *          v
 * pages-N.img, sized and mapped shared   (pages back to back, no header)
 * ```
 * A page server takes them through a batch buffer instead (8 MiB, reused), batch by batch.
 * Pages of mappings the task itself cannot read (PROT_NONE) are read through /proc/PID/mem,
 * which may look past protections (remote_read.ts).
 *
 * @module
 */
import { LARGE_JOB_BYTES, type PageCopiers } from "./page_copiers.ts";
import { fillPagesFile } from "./pages_file.ts";
import type { PageRun } from "./pagemap.ts";
import type { PageReader, XferStats } from "./page_xfer.ts";
import { readInto } from "./remote_read.ts";

const BATCH_BYTES = 8 << 20;
const MAX_IOV = 1024;
const PAGE = 4096;

/**
 * From this many pages (2 MiB) the copiers write them: fewer are read into their file here at
 * once, cheaper than a job the dumper takes up later.
 */
const COPIED_PAGES = 512;

/** Writes the pages of `runs` of task `pid` into a new file at `path` elsewhere (a worker). */
export type PagesWriter = (
  pid: number,
  runs: PageRun[],
  path: string,
  lenient: boolean,
) => Promise<XferStats>;

/**
 * The pages of task `pid`: many by `copiers` when given, else read with process_vm_readv (by
 * `writer` when given, else here); with `lenient` (the task runs meanwhile: a pre-dump's pages)
 * a page it no longer has reads as zeros.
 */
export class TaskPages implements PageReader {
  readonly #pid: number;
  readonly #copiers?: PageCopiers;
  readonly #lenient: boolean;
  readonly #writer?: PagesWriter;

  constructor(
    pid: number,
    how: { copiers?: PageCopiers; lenient?: boolean; writer?: PagesWriter },
  ) {
    this.#pid = pid;
    this.#copiers = how.copiers;
    this.#lenient = how.lenient ?? false;
    this.#writer = how.writer;
  }

  /**
   * Whether the copiers write the pages of `runs`: many of them, and when the dump's worker is
   * at hand (--track-mem), more than the copiers start for (it runs already, beside the dump).
   */
  #copied(runs: PageRun[]): boolean {
    const pages = runs.reduce((n, r) => n + r.nrPages, 0);
    const least = this.#writer ? LARGE_JOB_BYTES / PAGE : COPIED_PAGES;
    return this.#copiers !== undefined && pages >= least;
  }

  /**
   * Whether a file of the pages of `runs` is written elsewhere, needing nothing of the caller
   * meanwhile but that the task stays stopped (it may go on and wait for the file later: the
   * copiers' then need their help, PageCopiers.help).
   */
  detached(runs: PageRun[]): boolean {
    return this.#copied(runs) || this.#writer !== undefined;
  }

  async toFile(runs: PageRun[], path: string, signal?: AbortSignal): Promise<XferStats> {
    if (this.#copied(runs)) {
      return await this.#copiers!.write(this.#pid, runs, path, this.#lenient, signal);
    }
    if (this.#writer) return await this.#writer(this.#pid, runs, path, this.#lenient);
    return writePages(this.#pid, runs, path, this.#lenient);
  }

  toSink(runs: PageRun[], sink: (bytes: Uint8Array) => void): Promise<XferStats> {
    return Promise.resolve(readPages(this.#pid, runs, sink, this.#lenient));
  }
}

/**
 * Writes the pages of `runs` of task `pid` to a new image file at `path`, unsynced (with
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
