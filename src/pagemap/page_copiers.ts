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
 * closed. The copiers start once the jobs posted hold 32 MiB (a thread costs the dumper some
 * 9 ms to start, and is ready 15 ms later: more than a few MiB take to copy), and take the
 * jobs still waiting too; until then, and on a machine of one core, {@link PageCopiers.help}
 * does it all. The tasks stay stopped until the dump has waited for every job (the dump's
 * pagesFilesDone).
 *
 * @module
 */
import { IMAGE_MODE } from "../images/image.ts";
import { close, fsync, ftruncate, O, open } from "../syscalls/mod.ts";
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
  id: number;
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

const PAGE = 4096;
/** Bytes posted before the copiers start. */
export const START_BYTES = 32 << 20;

/** Copiers for a machine of `cores` cores: one core is the dumper's; at most three. */
export function copierCount(cores = navigator.hardwareConcurrency): number {
  return Math.max(0, Math.min(3, cores - 1));
}

/** The dump's page copiers; none started before the jobs hold enough to pay for them. */
export class PageCopiers implements Disposable {
  readonly #count: number;
  readonly #startBytes: number;
  #workers?: Worker[];
  #posted = 0;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #buf?: Uint8Array;
  /**
   * A pages file made before the freeze (the dump worker's spare: pagemap/pages_file.ts), for
   * the first job to take if it still can: its pages are written over rather than made, which
   * costs a fraction (a dump after pre-dumps writes a few thousand pages while frozen).
   */
  spare?: string;

  /** `count` copiers, started once the jobs posted hold `startBytes`. */
  constructor(count = copierCount(), startBytes = START_BYTES) {
    this.#count = count;
    this.#startBytes = startBytes;
  }

  /** Starts the copiers, each given the jobs still waiting. */
  #start(): void {
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
      for (const [id, p] of this.#pending) {
        p.waiting.add(w);
        w.postMessage({ id, job: p.job });
      }
    }
  }

  /**
   * Writes the pages of `runs` of task `pid` (stopped, or with `lenient` running) back to back
   * into a new file at `path`, then syncs it. The copiers take it up (once started); it is
   * done once they and {@link help} have taken every chunk.
   */
  write(pid: number, runs: readonly PageRun[], path: string, lenient: boolean): Promise<XferStats> {
    const fd = this.#open(path);
    let job: CopyJob;
    try {
      Deno.chmodSync(path, IMAGE_MODE);
      job = copyJob(pid, runs, fd, path, lenient);
    } catch (e) {
      close(fd);
      throw e;
    }
    const id = this.#nextId++;
    const workers = this.#workers ?? [];
    const total = jobBytes(job);
    return new Promise<XferStats>((resolve, reject) => {
      const p: Pending = {
        id,
        job,
        total,
        waiting: new Set(workers),
        bytes: 0,
        helping: false,
        started: performance.now(),
        resolve,
        reject,
      };
      this.#pending.set(id, p);
      for (const w of workers) w.postMessage({ id, job });
      this.#posted += total;
      if (!this.#workers && this.#posted >= this.#startBytes) this.#start();
      this.#check(p);
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
    this.#pending.delete(p.id);
    const { fd, path } = p.job;
    try {
      if (p.error) throw p.error;
      if (p.bytes !== p.total) {
        throw new Error(`Pages of task ${p.job.pid}: ${p.bytes} of ${p.total} bytes written`);
      }
      ftruncate(fd, p.total, path); // a spare may have been larger
      fsync(fd, path);
      p.resolve({
        pages: p.total / PAGE,
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
