/**
 * The worker thread of dump/scan_ahead.ts: reads the parents' frames it is given ahead of the
 * freeze, then walks each task's pagemap it is asked to (scanTask), beside the dumper's own work.
 *
 * Messages in: `{ frames: [vpid, path][] }` (answered `{ ready: true }` once read), then
 * `{ id, pid, vpid, ranges, zeroPfn, parent, record }` (answered `{ id, scan }` or `{ id, error }`).
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { FrameTable, type ScanRange, scanTask } from "./pagemap.ts";

/** A scan asked of the worker. */
export interface ScanRequest {
  id: number;
  pid: number;
  vpid: number;
  ranges: ScanRange[];
  zeroPfn: number;
  /** Compare with the parent's frames of `vpid`. */
  parent: boolean;
  record: boolean;
}

const tables = new Map<number, FrameTable>();

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
    self.postMessage({ ready: true });
    return;
  }
  const r = m as ScanRequest;
  try {
    const parent = r.parent ? tables.get(r.vpid) : undefined;
    if (r.parent && !parent) throw new Error(`no frames of ${r.vpid}`);
    const scan = scanTask(r.pid, r.ranges, r.zeroPfn, parent, r.record);
    self.postMessage(
      { id: r.id, scan },
      scan.frames ? { transfer: [scan.frames.buffer as ArrayBuffer] } : undefined,
    );
  } catch (err) {
    self.postMessage({ id: r.id, error: (err as Error).message });
  }
};
