/**
 * Reading a stopped task's pages from here: process_vm_readv, and through /proc/PID/mem what
 * it cannot read (mappings the task itself may not read, PROT_NONE). The page copiers' blob
 * reads the same way (parasite/copier.c).
 *
 * @module
 */
import { close, Errno, O, open, pread, readRemoteVec } from "../syscalls/mod.ts";

const PAGE = 4096;

/**
 * Fills `dst` from `ranges` of task `pid`: process_vm_readv, and what it cannot read through
 * /proc/PID/mem (see readViaProcMem).
 */
export function readInto(
  pid: number,
  ranges: BigUint64Array,
  dst: Uint8Array,
  lenient: boolean,
): void {
  let got: number;
  try {
    got = readRemoteVec(pid, ranges, dst);
  } catch (e) {
    if (!(e instanceof Errno)) throw e;
    got = 0;
  }
  if (got !== dst.length) readViaProcMem(pid, ranges, dst, lenient);
}

/**
 * Fills `buf` from `ranges` through /proc/PID/mem (reads past PROT_NONE); with `lenient`, what
 * cannot be read (unmapped since) is zeros.
 */
function readViaProcMem(
  pid: number,
  ranges: BigUint64Array,
  buf: Uint8Array,
  lenient: boolean,
): void {
  const what = `/proc/${pid}/mem`;
  const fd = open(what, O.RDONLY | O.CLOEXEC);
  try {
    let off = 0;
    for (let i = 0; i < ranges.length; i += 2) {
      const len = Number(ranges[i + 1]);
      let n: number;
      try {
        n = pread(fd, buf.subarray(off, off + len), ranges[i], what);
      } catch (e) {
        if (!lenient) throw e;
        n = 0;
      }
      if (n !== len && lenient) {
        // Page by page: what is still there, and zeros for the rest.
        for (let p = Math.floor(n / PAGE) * PAGE; p < len; p += PAGE) {
          const page = buf.subarray(off + p, off + p + PAGE);
          let got = 0;
          try {
            got = pread(fd, page, ranges[i] + BigInt(p), what);
          } catch {
            // unmapped since
          }
          if (got !== PAGE) page.fill(0);
        }
      } else if (n !== len) {
        throw new Errno("read", 5, `${what} at 0x${ranges[i].toString(16)} (${n} of ${len} bytes)`);
      }
      off += len;
    }
  } finally {
    close(fd);
  }
}
