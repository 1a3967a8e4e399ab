/**
 * A pages file to fill from a stopped task, cut into chunks that any thread may take: the
 * dumper and its copier workers (page_copiers.ts, copy_worker.ts) each take the next chunk not
 * taken, read it from the task into a buffer of their own (process_vm_readv) and write it at
 * its place in the file (pwrite). The reads, the larger part, run on every core at once; the
 * writes take the file's lock in turn, each from a buffer still in the cache.
 *
 * ```
 * runs     [vaddr, n] [vaddr, n] ...            (pagemap scan, address order)
 * chunks   | 0: off 0, iov 0..k | 1: off C ... | (at most CHUNK bytes: 128 iovecs at most)
 * iovs     [addr, len] [addr, len] ...           (a run may be cut between two chunks)
 * control  next chunk, stop
 * ```
 * Everything lives in one SharedArrayBuffer, so a job is posted to a worker as it is.
 *
 * @module
 */
import { pwriteAll } from "../syscalls/mod.ts";
import type { PageRun } from "./pagemap.ts";
import { readInto } from "./remote_read.ts";

const PAGE = 4096;
/** Bytes a chunk holds at most: small enough that its write reads it from the cache. */
export const CHUNK = 512 << 10;
/** Control words: the next chunk to take, and whether to stop. */
const NEXT = 0, STOP = 1;
const CONTROL_BYTES = 8;
/** Per chunk: its offset in the file, its first iovec, its iovec count, its bytes. */
const CHUNK_WORDS = 4;

/** A job's shared memory and what the participants need besides. */
export interface CopyJob {
  /** Control words, the chunks and the iovecs (see the module's layout). */
  shared: SharedArrayBuffer;
  /** The task read (stopped, or with `lenient` running). */
  pid: number;
  /** The pages file, open for writing. */
  fd: number;
  /** Pages the task no longer has read as zeros (a pre-dump's running task). */
  lenient: boolean;
  /** Path of the file, for errors. */
  path: string;
}

/** The views of a job's shared memory. */
interface Views {
  control: Int32Array;
  chunks: Float64Array;
  iovs: BigUint64Array;
}

function views(shared: SharedArrayBuffer): Views {
  const control = new Int32Array(shared, 0, CONTROL_BYTES / 4);
  const nChunks = new Float64Array(shared, CONTROL_BYTES, 1)[0];
  const chunksAt = CONTROL_BYTES + 8;
  const chunks = new Float64Array(shared, chunksAt, nChunks * CHUNK_WORDS);
  const iovsAt = chunksAt + nChunks * CHUNK_WORDS * 8;
  return { control, chunks, iovs: new BigUint64Array(shared, iovsAt) };
}

/** The job of writing the pages of `runs` of task `pid` back to back into `fd` from offset 0. */
export function copyJob(
  pid: number,
  runs: readonly PageRun[],
  fd: number,
  path: string,
  lenient: boolean,
): CopyJob {
  const chunks: number[] = [];
  const iovs: bigint[] = [];
  let off = 0, bytes = 0, first = 0;
  const end = () => {
    if (!bytes) return;
    chunks.push(off - bytes, first, iovs.length / 2 - first, bytes);
    first = iovs.length / 2;
    bytes = 0;
  };
  for (const r of runs) {
    let addr = r.vaddr;
    let left = r.nrPages * PAGE;
    while (left > 0) {
      if (bytes === CHUNK) end();
      const len = Math.min(left, CHUNK - bytes);
      iovs.push(addr, BigInt(len));
      addr += BigInt(len);
      left -= len;
      bytes += len;
      off += len;
    }
  }
  end();
  const nChunks = chunks.length / CHUNK_WORDS;
  const shared = new SharedArrayBuffer(CONTROL_BYTES + 8 + chunks.length * 8 + iovs.length * 8);
  new Float64Array(shared, CONTROL_BYTES, 1)[0] = nChunks;
  const v = views(shared);
  v.chunks.set(chunks);
  v.iovs.set(iovs);
  return { shared, pid, fd, lenient, path };
}

/** The bytes a job writes in all. */
export function jobBytes(job: CopyJob): number {
  const { chunks } = views(job.shared);
  let total = 0;
  for (let i = 3; i < chunks.length; i += CHUNK_WORDS) total += chunks[i];
  return total;
}

/** Whether chunks of `job` are left for someone to take. */
export function chunksLeft(job: CopyJob): boolean {
  const { control, chunks } = views(job.shared);
  return !Atomics.load(control, STOP) && Atomics.load(control, NEXT) < chunks.length / CHUNK_WORDS;
}

/** Tells every participant of `job` to take no more chunks. */
export function stopJob(job: CopyJob): void {
  Atomics.store(views(job.shared).control, STOP, 1);
}

/**
 * Takes chunks of `job` until none is left (or it is stopped), each read into `buf` (at least
 * CHUNK bytes) and written at its place; returns the bytes this caller wrote. A failure stops
 * the job for the others too, and is thrown.
 */
export function copyChunks(job: CopyJob, buf: Uint8Array): number {
  const { control, chunks, iovs } = views(job.shared);
  const nChunks = chunks.length / CHUNK_WORDS;
  let written = 0;
  try {
    for (;;) {
      if (Atomics.load(control, STOP)) break;
      const i = Atomics.add(control, NEXT, 1);
      if (i >= nChunks) break;
      const c = i * CHUNK_WORDS;
      const [off, iov, nIov, bytes] = chunks.subarray(c, c + CHUNK_WORDS);
      const dst = buf.subarray(0, bytes);
      // A copy of the chunk's iovecs: the system call takes memory of this thread's own.
      readInto(job.pid, iovs.slice(iov * 2, (iov + nIov) * 2), dst, job.lenient);
      pwriteAll(job.fd, dst, BigInt(off), job.path);
      written += bytes;
    }
  } catch (e) {
    Atomics.store(control, STOP, 1);
    throw e;
  }
  return written;
}
