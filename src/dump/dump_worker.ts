/**
 * The dump's worker thread (pagemap/worker_entry.ts), on the other core. After pre-dumps, most of
 * a dump's frozen time went to three things it takes off the dumper's hands:
 * - each process's smaps (a kernel walk of every page), read before the freeze and taken if its
 *   mappings did not change since (dump/smaps_ahead.ts);
 * - the walk of each process's pagemap (every page compared with the frame its parent images
 *   recorded), posted as soon as the tree is frozen from the mappings /proc/PID/maps shows, and
 *   run while this thread reads the process's smaps, files and state;
 * - the few pages such a dump writes (read with process_vm_readv into the pages file), written
 *   while this thread goes on with the process's other images.
 *
 * ```
 *  before the freeze     worker started, the parents' frames and the processes' smaps read
 *  frozen                each process posted: its smaps checked, and the ranges its
 *                        /proc/PID/maps shows walked (readAhead)
 *  this thread           files, parasite, state ... take(pid) -> runs ... core, mm ... flush
 *  worker                smaps still? pagemap walk of pid ... ^           pages-N.img ^
 * ```
 * A walk is taken only if the mappings smaps gives walk the same ranges the same way (they are
 * the same mappings of a stopped task, but VmFlags may classify one otherwise), with the same
 * parent and recording; else the dump walks them again itself. A worker that fails or cannot
 * start leaves every walk to the dump, and a pages file it fails to write fails the dump.
 *
 * @module
 */
import { workerUrl } from "../util/load.ts";
import { type PageRun, sameRanges, type ScanRange, type TaskScan } from "../pagemap/pagemap.ts";
import type { XferStats } from "../pagemap/page_xfer.ts";
import type { ScanRequest, WriteRequest } from "../pagemap/worker_entry.ts";
import { framesFile, readTrackers } from "./track.ts";
import type { ImagesDir } from "../images/images_dir.ts";

/** An answer of the worker: a walk, a pages file's figures, smaps read ahead, or why it failed. */
type Answer = { scan?: TaskScan; stats?: XferStats; smaps?: string; error?: string };

/** The dump's worker thread. */
export class DumpWorker implements Disposable {
  readonly #worker: Worker;
  readonly #posted = new Map<number, { request: ScanRequest; result: Promise<Answer> }>();
  readonly #answers = new Map<number, (answer: Answer) => void>();
  #nextId = 1;
  #broken = false;
  #ready: () => void = () => {};
  #spare?: string;
  #readyNow = false;

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.onmessage = (e: MessageEvent) => {
      if (e.data.ready) {
        this.#readyNow = true;
        return this.#ready();
      }
      const answer = this.#answers.get(e.data.id);
      this.#answers.delete(e.data.id);
      answer?.(e.data);
    };
    worker.onerror = (e: ErrorEvent) => {
      // A worker that cannot run leaves its walks to the dump.
      e.preventDefault();
      this.#broken = true;
      this.#ready();
      this.#failAll("The dump's worker failed");
    };
  }

  /**
   * A worker started now, ready once it has read the frames the parent images at `parentDir`
   * recorded, allocated a `spare` pages file, if asked, and read the smaps of the processes
   * `smaps` ahead (dump/smaps_ahead.ts), or after `waitMs`: what it is not ready for then waits
   * for it.
   */
  static async start(
    parentDir?: ImagesDir,
    spare?: { path: string; bytes: number },
    smaps: number[] = [],
    waitMs = 3000,
  ): Promise<DumpWorker> {
    const worker = new Worker(workerUrl("pagemap/worker_entry.ts"), { type: "module" });
    const dw = new DumpWorker(worker);
    dw.#spare = spare?.path;
    const frames = parentDir
      ? Object.keys(readTrackers(parentDir)).map((k) => {
        const vpid = Number(k);
        return [vpid, framesFile(parentDir, vpid)];
      })
      : [];
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      dw.#ready = resolve;
      timer = setTimeout(resolve, waitMs);
      worker.postMessage({ frames, spare, smaps });
    });
    clearTimeout(timer);
    return dw;
  }

  /** The spare pages file, once made (not while the worker may still be making it). */
  get spare(): string | undefined {
    return this.#readyNow && !this.#broken ? this.#spare : undefined;
  }

  #ask(message: { scan?: ScanRequest; write?: WriteRequest; verify?: number }): Promise<Answer> {
    const id = this.#nextId++;
    const answer = new Promise<Answer>((resolve) => this.#answers.set(id, resolve));
    this.#worker.postMessage({ id, ...message });
    return answer;
  }

  #failAll(error: string): void {
    for (const answer of this.#answers.values()) answer({ error });
    this.#answers.clear();
  }

  /**
   * The smaps of process `pid` (stopped) read before the freeze, if its mappings have not
   * changed since (dump/smaps_ahead.ts); undefined when they may have, or it was not read.
   */
  async smapsAhead(pid: number): Promise<string | undefined> {
    if (this.#broken) return undefined;
    return (await this.#ask({ verify: pid })).smaps;
  }

  /**
   * Posts the walk of `ranges` of the stopped task `pid` (`vpid` in the images), compared with
   * its parent's frames or not, its frames recorded or not.
   */
  post(
    pid: number,
    vpid: number,
    ranges: ScanRange[],
    parent: boolean,
    record: boolean,
    zeroPfn: number,
  ): void {
    if (this.#broken) return;
    const request: ScanRequest = { pid, vpid, ranges, zeroPfn, parent, record };
    this.#posted.set(pid, { request, result: this.#ask({ scan: request }) });
  }

  /**
   * The walk posted for `pid`, if it walked `ranges` the same way with the same parent and
   * recording; else (or when it failed) undefined.
   */
  async take(
    pid: number,
    ranges: readonly ScanRange[],
    parent: boolean,
    record: boolean,
  ): Promise<TaskScan | undefined> {
    const posted = this.#posted.get(pid);
    if (!posted) return undefined;
    this.#posted.delete(pid);
    const { request } = posted;
    if (request.parent !== parent || request.record !== record) return undefined;
    if (!sameRanges(request.ranges, ranges)) return undefined;
    return (await posted.result).scan;
  }

  /**
   * Writes the pages of `runs` of task `pid` (stopped, or with `lenient` running) into a new
   * pages file at `path`, synced, on the worker.
   */
  async writePages(
    pid: number,
    runs: PageRun[],
    path: string,
    lenient: boolean,
  ): Promise<XferStats> {
    if (this.#broken) throw new Error("The dump's worker failed");
    const answer = await this.#ask({ write: { pid, runs, path, lenient } });
    if (!answer.stats) throw new Error(answer.error ?? `Cannot write ${path}`);
    return answer.stats;
  }

  /** Stops the worker; walks not taken are dropped, pages files not written fail. */
  [Symbol.dispose](): void {
    this.#worker.terminate();
    this.#failAll("The dump ended before its worker was done");
    this.#posted.clear();
    // The spare pages file, if no pages file took it.
    if (this.#spare) {
      try {
        Deno.removeSync(this.#spare);
      } catch {
        // taken
      }
    }
  }
}
