/**
 * The worker thread of dump/dump_worker.ts: reads the parents' frames it is given ahead of the
 * freeze, then walks each task's pagemap it is asked to (scanTask) and writes the pages files it
 * is asked to (process_vm_readv into the file), beside the dumper's own work.
 *
 * Messages in: `{ frames: [vpid, path][], spare?: { path, bytes } }` (answered `{ ready: true }`
 * once read, and the spare pages file made: the first pages file written takes it), then
 * `{ id, scan: ScanRequest }` (answered `{ id, scan: TaskScan }`) and `{ id, write: WriteRequest }`
 * (answered `{ id, stats: XferStats }`); a failure is answered `{ id, error }`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { FrameTable, type PageRun, type ScanRange, scanTask } from "./pagemap.ts";
import { writePages } from "./task_pages.ts";
import { makeSpare } from "./pages_file.ts";

/** A walk asked of the worker. */
export interface ScanRequest {
  pid: number;
  vpid: number;
  ranges: ScanRange[];
  zeroPfn: number;
  /** Compare with the parent's frames of `vpid`. */
  parent: boolean;
  record: boolean;
}

/** A pages file asked of the worker: the pages of `runs` of task `pid` into `path`. */
export interface WriteRequest {
  pid: number;
  runs: PageRun[];
  path: string;
  lenient: boolean;
}

const tables = new Map<number, FrameTable>();
/** A pages file allocated ahead, for the first pages file written. */
let spare: string | undefined;

self.onmessage = (e: MessageEvent) => {
  const m = e.data;
  if (m.frames) {
    for (const [vpid, path] of m.frames as [number, string][]) {
      try {
        tables.set(vpid, new FrameTable(Deno.readFileSync(path)));
      } catch {
        // None: the dump compares with nothing, as it would without the worker.
      }
    }
    if (m.spare) {
      try {
        makeSpare(m.spare.path, m.spare.bytes);
        spare = m.spare.path;
      } catch {
        // Each pages file made as it is written.
      }
    }
    self.postMessage({ ready: true });
    return;
  }
  try {
    if (m.write) {
      const w = m.write as WriteRequest;
      const take = spare;
      spare = undefined;
      self.postMessage({ id: m.id, stats: writePages(w.pid, w.runs, w.path, w.lenient, take) });
      return;
    }
    const r = m.scan as ScanRequest;
    const parent = r.parent ? tables.get(r.vpid) : undefined;
    if (r.parent && !parent) throw new Error(`no frames of ${r.vpid}`);
    const scan = scanTask(r.pid, r.ranges, r.zeroPfn, parent, r.record);
    self.postMessage(
      { id: m.id, scan },
      scan.frames ? { transfer: [scan.frames.buffer as ArrayBuffer] } : undefined,
    );
  } catch (err) {
    self.postMessage({ id: m.id, error: (err as Error).message });
  }
};
