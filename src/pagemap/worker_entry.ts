/**
 * The worker thread of dump/dump_worker.ts: reads the parents' frames it is given and the
 * processes' smaps ahead of the freeze, then walks each task's pagemap it is asked to (scanTask)
 * and writes the pages files it is asked to (process_vm_readv into the file), beside the
 * dumper's own work.
 *
 * Messages in: `{ frames: [vpid, path][], spare?: { path, bytes }, smaps?: pid[] }` (answered
 * `{ ready: true }` once read, the spare pages file made: the first pages file written takes it,
 * and the processes' smaps read ahead: dump/smaps_ahead.ts), then `{ id, verify: pid }` (answered
 * `{ id, smaps? }`: the text read ahead, if the process's mappings are still those), then
 * `{ id, scan: ScanRequest }` (answered `{ id, scan: TaskScan }`) and `{ id, write: WriteRequest }`
 * (answered `{ id, stats: XferStats }`); a failure is answered `{ id, error }`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { FrameTable, type PageRun, type ScanRange, scanTask } from "./pagemap.ts";
import { writePages } from "./task_pages.ts";
import { makeSpare } from "./pages_file.ts";
import { KernelBtf } from "../syscalls/btf.ts";
import { readSmapsAhead, type SmapsAhead, smapsStill } from "../dump/smaps_ahead.ts";

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
/** The kernel's BTF, when smaps is read ahead. */
let btf: KernelBtf | undefined;
/** Each process's smaps read ahead of the freeze (dump/smaps_ahead.ts). */
const smaps = new Map<number, SmapsAhead>();
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
    readAhead(m.smaps ?? []);
    self.postMessage({ ready: true });
    return;
  }
  try {
    if (m.verify !== undefined) {
      const ahead = smaps.get(m.verify);
      smaps.delete(m.verify);
      self.postMessage({ id: m.id, smaps: ahead && btf && smapsStill(btf, m.verify, ahead) });
      return;
    }
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

/** The smaps of `pids`, read now (before the freeze) where their memory maps can be versioned. */
function readAhead(pids: number[]): void {
  if (!pids.length) return;
  try {
    btf = KernelBtf.load();
  } catch {
    return; // no BTF: smaps is read once frozen
  }
  for (const pid of pids) {
    const ahead = readSmapsAhead(btf, pid);
    if (ahead) smaps.set(pid, ahead);
  }
}
