/**
 * The dump's page copiers: worker threads (copy_worker.ts) that fill pages files from stopped
 * tasks while the dumper goes on, and the dumper itself once it has nothing else to do.
 *
 * ```
 *  dumper        post job 1 (process A) -> collect B -> post job 2 -> ... help() -> sync
 *  copier(s)     | chunks of job 1 ......... | chunks of job 2 ... |
 *  dumper, help                                            | chunks left of job 2 |
 * ```
 * Each job (copy_job.ts) is posted to every copier; whoever comes takes the next chunk, so a
 * copier still starting, or busy with an earlier job, leaves its share to the others. A job is
 * done when every copier has answered and no chunk is left: then its file is synced and
 * closed. On a machine of one core there are no copiers, and {@link PageCopiers.help} does it
 * all. The tasks stay stopped until the dump has waited for every job (the dump's
 * pagesFilesDone).
 *
 * @module
 */
import { IMAGE_MODE } from "../images/image.ts";
import { close, fsync, O, open } from "../syscalls/mod.ts";
import { workerUrl } from "../util/load.ts";
import {
  CHUNK,
  chunksLeft,
  copyChunks,
  type CopyJob,
  copyJob,
  jobBytes,
  stopJob,
} from "./copy_job.ts";
import type { PageRun } from "./pagemap.ts";
import type { XferStats } from "./page_xfer.ts";

/** A job posted and not yet done. */
interface Pending {
  job: CopyJob;
  total: number;
  /** The copiers that have not answered yet. */
  waiting: Set<Worker>;
  bytes: number;
  error?: Error;
  /** The dumper is taking its chunks (help). */
  helping: boolean;
  started: number;
  resolve: (stats: XferStats) => void;
  reject: (e: Error) => void;
}

/** Copiers for a machine of `cores` cores: one core is the dumper's; at most three. */
export function copierCount(cores = navigator.hardwareConcurrency): number {
  return Math.max(0, Math.min(3, cores - 1));
}

/** The dump's page copiers; none started before the first job. */
export class PageCopiers implements Disposable {
  readonly #count: number;
  #workers?: Worker[];
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #buf?: Uint8Array;

  constructor(count = copierCount()) {
    this.#count = count;
  }

  #start(): Worker[] {
    if (this.#workers) return this.#workers;
    this.#workers = [];
    for (let i = 0; i < this.#count; i++) {
      const w = new Worker(workerUrl("pagemap/copy_worker.ts"), { type: "module" });
      w.onmessage = (e: MessageEvent) => this.#answer(w, e.data);
      w.onerror = (e: ErrorEvent) => {
        // A copier that cannot run leaves its share to the others and the dumper.
        e.preventDefault();
        this.#workers = this.#workers!.filter((x) => x !== w);
        w.terminate();
        for (const p of this.#pending.values()) {
          if (p.waiting.delete(w)) this.#check(p);
        }
      };
      this.#workers.push(w);
    }
    return this.#workers;
  }

  /**
   * Writes the pages of `runs` of task `pid` (stopped, or with `lenient` running) back to back
   * into a new file at `path`, then syncs it. The copiers start on it now; it is done once
   * they and {@link help} have taken every chunk.
   */
  write(pid: number, runs: readonly PageRun[], path: string, lenient: boolean): Promise<XferStats> {
    const fd = open(path, O.WRONLY | O.CREAT | O.TRUNC | O.CLOEXEC, IMAGE_MODE);
    let job: CopyJob;
    try {
      Deno.chmodSync(path, IMAGE_MODE);
      job = copyJob(pid, runs, fd, path, lenient);
    } catch (e) {
      close(fd);
      throw e;
    }
    const id = this.#nextId++;
    const workers = this.#start();
    return new Promise<XferStats>((resolve, reject) => {
      const p: Pending = {
        job,
        total: jobBytes(job),
        waiting: new Set(workers),
        bytes: 0,
        helping: false,
        started: performance.now(),
        resolve,
        reject,
      };
      this.#pending.set(id, p);
      for (const w of workers) w.postMessage({ id, job });
      this.#check(p);
    });
  }

  /** Takes the chunks left of every job, on this thread, oldest job first. */
  help(): void {
    for (const p of [...this.#pending.values()]) {
      if (p.error) continue;
      this.#buf ??= new Uint8Array(CHUNK);
      p.helping = true;
      try {
        p.bytes += copyChunks(p.job, this.#buf);
      } catch (e) {
        p.error ??= e as Error;
      } finally {
        p.helping = false;
        this.#check(p);
      }
    }
  }

  /** Stops every job; each fails once its copiers have let go of it. */
  stop(): void {
    for (const p of this.#pending.values()) {
      p.error ??= new Error(`The dump ended before ${p.job.path} was written`);
      stopJob(p.job);
      this.#check(p);
    }
  }

  #answer(w: Worker, m: { id: number; bytes?: number; error?: string }): void {
    const p = this.#pending.get(m.id);
    if (!p || !p.waiting.delete(w)) return;
    if (m.error !== undefined) p.error ??= new Error(m.error);
    else p.bytes += m.bytes!;
    this.#check(p);
  }

  /** Ends job `p` if no copier holds it any more and its chunks are all written (or failed). */
  #check(p: Pending): void {
    if (p.waiting.size || p.helping) return;
    // The copiers are done (or gone) with chunks left: help() takes them.
    if (!p.error && p.bytes < p.total && chunksLeft(p.job)) return;
    for (const [id, q] of this.#pending) if (q === p) this.#pending.delete(id);
    const { fd, path } = p.job;
    try {
      if (p.error) throw p.error;
      if (p.bytes !== p.total) {
        throw new Error(`Pages of task ${p.job.pid}: ${p.bytes} of ${p.total} bytes written`);
      }
      fsync(fd, path);
      p.resolve({
        pages: p.total / 4096,
        readUs: 0,
        writeUs: (performance.now() - p.started) * 1e3,
      });
    } catch (e) {
      p.reject(e as Error);
    } finally {
      close(fd);
    }
  }

  /**
   * Stops the copiers; jobs not done fail. The file of a job a copier still held stays open:
   * the copier may be between reading a chunk and writing it, and its descriptor's number,
   * closed, could be another file's by then.
   */
  [Symbol.dispose](): void {
    this.stop();
    for (const w of this.#workers ?? []) w.terminate();
    this.#workers = [];
    const left = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of left) p.reject(p.error!);
  }
}
