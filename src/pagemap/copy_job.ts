/**
 * A pages file to fill from a stopped task, cut into chunks that any thread may take: the
 * dumper and the page copiers (page_copiers.ts) each take the next chunk not taken, read it
 * from the task into a buffer of their own and write it at its place in the file, all in the
 * copier blob (parasite/copier.c, through syscalls/page_copy.ts). The reads, the larger part,
 * run on every core at once; the writes take the file's lock in turn, each from a buffer still
 * in the cache.
 *
 * ```
 * runs     [vaddr, n] [vaddr, n] ...            (pagemap scan, address order)
 * chunks   | 0: off 0, iov 0..k | 1: off C ... | (at most CHUNK bytes: 128 iovecs at most)
 * iovs     [addr, len] [addr, len] ...           (a run may be cut between two chunks)
 * ```
 *
 * @module
 */
import { CopyJobMemory } from "../syscalls/page_copy.ts";
import { addressOf } from "../syscalls/mod.ts";
import type { PageRun } from "./pagemap.ts";

const PAGE = 4096;
/** Bytes a chunk holds at most: small enough that its write reads it from the cache. */
export const CHUNK = 512 << 10;

/**
 * A buffer of CHUNK bytes that starts at a page: the kernel then copies whole pages into it and
 * out of it (a buffer of V8's starts 16 bytes into one: every page read or written spans two).
 */
export function chunkBuffer(): Uint8Array {
  const raw = new Uint8Array(CHUNK + PAGE);
  const skip = (PAGE - Number(addressOf(raw) % BigInt(PAGE))) % PAGE;
  return raw.subarray(skip, skip + CHUNK);
}

/**
 * The job of writing the pages of `runs` of task `pid` (stopped, or with `lenient` running:
 * pages it no longer has are written as zeros) back to back into `fd` from offset 0; with
 * `writeback` (`fd` on a disk), each chunk's writeback started once it is written.
 */
export function copyJob(
  pid: number,
  runs: readonly PageRun[],
  fd: number,
  lenient: boolean,
  writeback = false,
): CopyJobMemory {
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
  return new CopyJobMemory(pid, fd, lenient, chunks, iovs, writeback);
}
