/**
 * Scanning ahead: after pre-dumps, most of a dump's frozen time is the walk of each process's
 * pagemap (every page compared with the frame its parent images recorded). That walk runs on a
 * worker thread (pagemap/scan_worker.ts), on the other core, while this thread reads the
 * process's smaps, files and state.
 *
 * ```
 *  before the freeze     worker started, the parents' frames read into it
 *  frozen                each process posted: the ranges its /proc/PID/maps shows
 *  this thread           smaps, files, parasite, state ...          take(pid, ranges from smaps)
 *  worker                   pagemap walk of pid, then of the next ... ^ the runs
 * ```
 * A walk is taken only if the mappings smaps gives walk the same ranges the same way (they are
 * the same mappings of a stopped task, but VmFlags may classify one otherwise), with the same
 * parent and recording; else the dump walks them again itself. A worker that fails or cannot
 * start leaves every walk to the dump.
 *
 * @module
 */
import { classifyVma, mergeVvar } from "../pagemap/vma.ts";
import type { ScanRange, TaskScan } from "../pagemap/pagemap.ts";
import type { ScanRequest } from "../pagemap/scan_worker.ts";
import { parseMaps, readProcText } from "../tree/proc.ts";
import { scanRanges } from "./mm.ts";
import { framesFile, readTrackers } from "./track.ts";
import type { ImagesDir } from "../images/images_dir.ts";

/** The pagemap walks of a dump, on a worker thread. */
export class ScanAhead implements Disposable {
  readonly #worker: Worker;
  readonly #posted = new Map<number, { request: ScanRequest; result: Promise<TaskScan | null> }>();
  readonly #answers = new Map<number, (scan: TaskScan | null) => void>();
  #nextId = 1;
  #broken = false;
  #ready: () => void = () => {};

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.onmessage = (e: MessageEvent) => {
      if (e.data.ready) return this.#ready();
      const answer = this.#answers.get(e.data.id);
      this.#answers.delete(e.data.id);
      answer?.(e.data.scan ?? null);
    };
    worker.onerror = (e: ErrorEvent) => {
      // A worker that cannot run leaves its walks to the dump.
      e.preventDefault();
      this.#broken = true;
      this.#ready();
      for (const answer of this.#answers.values()) answer(null);
      this.#answers.clear();
    };
  }

  /**
   * A worker started now, ready once it has read the frames the parent images at `parentDir`
   * recorded (or after `waitMs`: walks it is not ready for then wait for it).
   */
  static async start(parentDir?: ImagesDir, waitMs = 3000): Promise<ScanAhead> {
    const worker = new Worker(new URL("../pagemap/scan_worker.ts", import.meta.url), {
      type: "module",
    });
    const ahead = new ScanAhead(worker);
    const frames = parentDir
      ? Object.keys(readTrackers(parentDir)).map((k) => {
        const vpid = Number(k);
        return [vpid, framesFile(parentDir, vpid)];
      })
      : [];
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      ahead.#ready = resolve;
      timer = setTimeout(resolve, waitMs);
      worker.postMessage({ frames });
    });
    clearTimeout(timer);
    return ahead;
  }

  /**
   * Posts the walk of the memory of the stopped task `pid` (`vpid` in the images) as its maps
   * show it now, compared with its parent's frames or not, its frames recorded or not.
   */
  post(pid: number, vpid: number, parent: boolean, record: boolean, zeroPfn: number): void {
    if (this.#broken) return;
    let ranges: ScanRange[];
    try {
      ranges = scanRanges(mergeVvar(parseMaps(readProcText(pid, "maps")).map(classifyVma)));
    } catch {
      return; // the dump reads it again, and says what is wrong
    }
    const request: ScanRequest = { id: this.#nextId++, pid, vpid, ranges, zeroPfn, parent, record };
    const result = new Promise<TaskScan | null>((resolve) => {
      this.#answers.set(request.id, resolve);
    });
    this.#posted.set(pid, { request, result });
    this.#worker.postMessage(request);
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
    return (await posted.result) ?? undefined;
  }

  /** Stops the worker; walks not taken are dropped. */
  [Symbol.dispose](): void {
    this.#worker.terminate();
    for (const answer of this.#answers.values()) answer(null);
    this.#answers.clear();
    this.#posted.clear();
  }
}

function sameRanges(a: readonly ScanRange[], b: readonly ScanRange[]): boolean {
  return a.length === b.length &&
    a.every((r, i) =>
      r.start === b[i].start && r.end === b[i].end && r.whole === b[i].whole &&
      r.skipFilePages === b[i].skipFilePages
    );
}
