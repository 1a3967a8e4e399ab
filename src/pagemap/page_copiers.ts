/**
 * The dump's page copiers: threads that fill pages files from stopped tasks while the dumper
 * goes on, and the dumper itself once it has nothing else to do.
 *
 * ```
 *  dumper        post job 1 (process A) -> collect B -> post job 2 -> ... help() -> done
 *  copier(s)     | chunks of job 1 ......... | chunks of job 2 ... |
 *  dumper, help                                            | chunks left of job 2 |
 * ```
 * The jobs (copy_job.ts) go into one queue; each copier takes them in order, and whoever comes
 * takes the next chunk of a job, so a copier busy with an earlier job leaves its share to the
 * others. A copier is the copier blob running on a thread of Deno's blocking pool
 * (syscalls/page_copy.ts): no JavaScript runs there, so it copies from the moment it is
 * started, which the first job posted does (or once the jobs hold `startBytes`). On a machine
 * of one core {@link PageCopiers.help} does it all. A job is done when no chunk is left and
 * none is being copied: then its file is cut to size and closed, in the order the jobs came,
 * unsynced (the dump syncs its images directory's files together). The tasks stay stopped
 * until the dump has waited for every job (the dump's pagesFilesDone).
 *
 * @module
 */
import { IMAGE_MODE } from "../images/image.ts";
import { close, ftruncate, inMemoryFs, O, open } from "../syscalls/mod.ts";
import { copyError, type CopyJobMemory, CopyQueue } from "../syscalls/page_copy.ts";
import { chunkBuffer, copyJob } from "./copy_job.ts";
import type { PageRun } from "./pagemap.ts";
import type { XferStats } from "./page_xfer.ts";

/** A job posted and not yet done. */
interface Pending {
  job: CopyJobMemory;
  pid: number;
  fd: number;
  path: string;
  total: number;
  error?: Error;
  /** Rejected already (the copiers disposed of): only its file is left to close. */
  settled: boolean;
  started: number;
  resolve: (stats: XferStats) => void;
  reject: (e: Error) => void;
}

const PAGE = 4096;
/**
 * The least a job holds for the copiers to take it rather than the dump's worker (--track-mem),
 * which writes small files beside the dump already.
 */
export const LARGE_JOB_BYTES = 32 << 20;

/** Copiers for a machine of `cores` cores: one core is the dumper's; at most three. */
export function copierCount(cores = navigator.hardwareConcurrency): number {
  return Math.max(0, Math.min(3, cores - 1));
}

/** The dump's page copiers; none started before a job is posted. */
export class PageCopiers implements Disposable {
  readonly #count: number;
  readonly #startBytes: number;
  readonly #queue = new CopyQueue();
  #started = false;
  #posted = 0;
  /** Jobs not done yet, in the order they came. */
  readonly #pending: Pending[] = [];
  /** Finishes the jobs in order as they are done (one wait at a time). */
  #watching = false;
  #buf?: Uint8Array;
  /**
   * A pages file made before the freeze (the dump worker's spare: pagemap/pages_file.ts), for
   * the first job to take if it still can: its pages are written over rather than made, which
   * costs a fraction (a dump after pre-dumps writes a few thousand pages while frozen).
   */
  spare?: string;

  /** `count` copiers, started once the jobs posted hold `startBytes`. */
  constructor(count = copierCount(), startBytes = 0) {
    this.#count = count;
    this.#startBytes = startBytes;
  }

  /**
   * Writes the pages of `runs` of task `pid` (stopped, or with `lenient` running) back to back
   * into a new file at `path` (left unsynced). The copiers take it up (once started); it is
   * done once they and {@link help} have taken every chunk. When `signal` aborts, no chunk of
   * it is taken any more, and it fails once those being copied are in.
   */
  write(
    pid: number,
    runs: readonly PageRun[],
    path: string,
    lenient: boolean,
    signal?: AbortSignal,
  ): Promise<XferStats> {
    const fd = this.#open(path);
    let job: CopyJobMemory;
    try {
      Deno.chmodSync(path, IMAGE_MODE);
      // On a disk, the disk takes each chunk as it is written (copier.c writeback).
      job = copyJob(pid, runs, fd, lenient, !inMemoryFs(fd, path));
    } catch (e) {
      close(fd);
      throw e;
    }
    const total = runs.reduce((n, r) => n + r.nrPages * PAGE, 0);
    return new Promise<XferStats>((resolve, reject) => {
      const p: Pending = {
        job,
        pid,
        fd,
        path,
        total,
        settled: false,
        started: performance.now(),
        resolve,
        reject,
      };
      this.#pending.push(p);
      signal?.addEventListener("abort", () => {
        p.error ??= new Error(`The writing of ${path} was given up`);
        job.stop();
      }, { once: true });
      this.#queue.post(job);
      this.#posted += total;
      if (!this.#started && this.#posted >= this.#startBytes) {
        this.#started = true;
        for (let i = 0; i < this.#count; i++) this.#queue.startCopier(chunkBuffer());
      }
      this.#watch();
    });
  }

  /** A new pages file at `path`: the spare when it can be taken, else made now. */
  #open(path: string): number {
    const spare = this.spare;
    this.spare = undefined;
    if (spare) {
      try {
        Deno.renameSync(spare, path);
        return open(path, O.WRONLY | O.CLOEXEC, IMAGE_MODE);
      } catch {
        // taken by the dump worker, or never made
      }
    }
    return open(path, O.WRONLY | O.CREAT | O.TRUNC | O.CLOEXEC, IMAGE_MODE);
  }

  /** Takes the chunks left of every job, on this thread, oldest job first. */
  help(): void {
    for (const p of this.#pending) {
      if (!p.job.left) continue;
      this.#buf ??= chunkBuffer();
      p.job.help(this.#buf);
    }
  }

  /** Stops every job; each fails once no one copies a chunk of it any more. */
  stop(): void {
    for (const p of this.#pending) {
      p.error ??= new Error(`The dump ended before ${p.path} was written`);
      p.job.stop();
    }
  }

  /** Waits for the oldest job to be done, finishes it, and so on while jobs are left. */
  async #watch(): Promise<void> {
    if (this.#watching) return;
    this.#watching = true;
    try {
      while (this.#pending.length) {
        const p = this.#pending[0];
        await p.job.done();
        this.#pending.shift();
        this.#finish(p);
      }
    } finally {
      this.#watching = false;
    }
  }

  /** Ends job `p`, done: its file cut to size, or its error. Closes the file. */
  #finish(p: Pending): void {
    try {
      if (p.settled) return;
      const failure = p.job.failure;
      if (failure) throw copyError(failure, p.pid, p.path);
      if (p.error) throw p.error;
      const written = p.job.written;
      if (written !== p.total) {
        throw new Error(`Pages of task ${p.pid}: ${written} of ${p.total} bytes written`);
      }
      // Unsynced: the dump syncs its images directory's files together (ImagesDir.sync); on a
      // disk, each chunk's writeback was started as it was written (copier.c).
      ftruncate(p.fd, p.total, p.path); // a spare may have been larger
      p.resolve({
        pages: p.total / PAGE,
        readUs: 0,
        writeUs: (performance.now() - p.started) * 1e3,
      });
    } catch (e) {
      p.reject(e as Error);
    } finally {
      close(p.fd);
    }
  }

  /**
   * Stops the copiers; jobs not done fail now. The file of a job still being copied stays open
   * until its last chunk is written (its descriptor's number, closed, could be another file's
   * by then).
   */
  [Symbol.dispose](): void {
    this.stop();
    void this.#queue.close();
    for (const p of this.#pending) {
      if (p.settled) continue;
      p.settled = true;
      p.reject(p.error!);
    }
  }
}
