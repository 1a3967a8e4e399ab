/**
 * Zero-copy page dumping through a pipe, with the dump_pages parasite (parasite/dump_pages.c).
 *
 * ```
 *  task (frozen, signals blocked)              dumper (this process)
 *  +-------------------------------+
 *  | scratch mapping (rwx)         |
 *  |  0      blob code             |
 *  |  4096   args {fd, iov, niov,  |
 *  |               done, result}   |
 *  |  4160   iovec[niov]  (runs)   |
 *  |  ...    stack (16 KiB)        |
 *  +-------------------------------+
 *   vmsplice(pipe_w, iov) ---> pipe (1 MiB) ---> splice(pipe_r, pages-N.img)
 *   pages referenced, not copied               one copy, into the image file
 * ```
 * The pipe is made inside the task (injected pipe2); its read end comes to us with
 * pidfd_getfd and the task's copy is closed, so the task only ever holds the write end. Both
 * sides run at once: the blob blocks when the pipe is full, we drain it as it fills. When the
 * blob is done it sets `done` and sleeps; we interrupt it and the remote-syscall scope removes
 * the mapping and the write end.
 *
 * @module
 */
import { BLOBS } from "../../parasite/blobs_gen.ts";
import { IMAGE_MODE } from "../images/image.ts";
import {
  close,
  Errno,
  F,
  fcntl,
  fsync,
  NR,
  O,
  open,
  pidfdGetfd,
  pidfdOpen,
  POLLIN,
  pollOne,
  readRemote,
  remoteAdd,
  type RemotePtr,
  SPLICE_F_MOVE,
  trySplice,
  writeRemote,
} from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { InfectError } from "../tree/infect.ts";
import { decodeBase64 } from "../util/base64.ts";
import type { PageRun } from "./pagemap.ts";
import type { XferStats } from "./page_xfer.ts";

const PAGE = 4096;
const ARGS = 4096;
const ARGS_SIZE = 64;
const STACK_SIZE = 16384;
const PIPE_SIZE = 1 << 20;
const CHUNK_LIMIT = 1 << 30; // keep each iovec under 1 GiB (vmsplice takes size_t, splice counts int)

/** Writes the pages of `runs` to `path` by vmsplice in the task and splice here. */
export function writePagesViaParasite(
  rs: RemoteSyscalls,
  runs: PageRun[],
  path: string,
): XferStats {
  const iovs: bigint[] = [];
  let total = 0;
  for (const r of runs) {
    let addr = r.vaddr;
    let left = r.nrPages * PAGE;
    while (left > 0) {
      const len = Math.min(left, CHUNK_LIMIT);
      iovs.push(addr, BigInt(len));
      addr += BigInt(len);
      left -= len;
      total += len;
    }
  }
  const stats: XferStats = { pages: total / PAGE, readUs: 0, writeUs: 0 };
  const out = open(path, O.WRONLY | O.CREAT | O.TRUNC | O.CLOEXEC, IMAGE_MODE);
  try {
    Deno.chmodSync(path, IMAGE_MODE);
    if (total > 0) transfer(rs, iovs, total, out, stats);
    const t = performance.now();
    fsync(out, path);
    stats.writeUs += (performance.now() - t) * 1000;
  } finally {
    close(out);
  }
  return stats;
}

function transfer(
  rs: RemoteSyscalls,
  iovs: bigint[],
  total: number,
  out: number,
  stats: XferStats,
): void {
  const pid = rs.task.pid;
  const code = decodeBase64(BLOBS.dump_pages);
  const iovOff = ARGS + ARGS_SIZE;
  const stackOff = Math.ceil((iovOff + iovs.length * 8) / 16) * 16;
  const size = Math.ceil((stackOff + STACK_SIZE) / PAGE) * PAGE;
  const area = rs.scratch(size, true);
  const argsAt = remoteAdd(area, ARGS);

  // The pipe: made in the task, read end taken over by us.
  rs.check(NR.pipe2, "pipe2", argsAt, O.CLOEXEC);
  const pair = new Int32Array(2);
  readRemote(pid, argsAt, new Uint8Array(pair.buffer));
  const [taskR, taskW] = pair;
  let ourR = -1;
  try {
    const pidfd = pidfdOpen(pid);
    try {
      ourR = pidfdGetfd(pidfd, taskR, pid);
    } finally {
      close(pidfd);
    }
    rs.check(NR.close, "close", taskR);
    try {
      fcntl(ourR, F.SETPIPE_SZ, PIPE_SIZE);
    } catch {
      // Keep the default size when the limit forbids more.
    }

    const args = new BigUint64Array(ARGS_SIZE / 8);
    args[0] = BigInt(taskW);
    args[1] = remoteAdd(area, iovOff);
    args[2] = BigInt(iovs.length / 2);
    writeRemote(pid, area, code);
    writeRemote(pid, argsAt, new Uint8Array(args.buffer));
    writeRemote(pid, remoteAdd(area, iovOff), new Uint8Array(new BigUint64Array(iovs).buffer));

    const t = performance.now();
    rs.run(area, argsAt, remoteAdd(area, stackOff + STACK_SIZE));
    try {
      drain(rs, ourR, out, total, argsAt);
    } finally {
      rs.interrupt();
    }
    const result = new BigInt64Array(2);
    readRemote(pid, remoteAdd(argsAt, 24), new Uint8Array(result.buffer));
    if (result[1] < 0n) {
      throw new InfectError(`vmsplice in task ${pid} failed with errno ${-result[1]}`);
    }
    stats.writeUs = (performance.now() - t) * 1000;
  } finally {
    if (ourR >= 0) close(ourR);
    rs.call(NR.close, taskW);
  }
}

/** Splices `total` bytes from the pipe into `out`, watching the blob for failure. */
function drain(
  rs: RemoteSyscalls,
  pipe: number,
  out: number,
  total: number,
  argsAt: RemotePtr,
): void {
  const pid = rs.task.pid;
  const flag = new BigInt64Array(2);
  let done = 0;
  while (done < total) {
    if (!(pollOne(pipe, POLLIN, 100) & POLLIN)) {
      // Nothing for a while: has the blob stopped (fault) or finished with an error?
      rs.checkRunning();
      readRemote(pid, remoteAdd(argsAt, 24), new Uint8Array(flag.buffer));
      if (flag[0] !== 0n && flag[1] < 0n) {
        throw new InfectError(`vmsplice in task ${pid} failed with errno ${-flag[1]}`);
      }
      continue;
    }
    const n = trySplice(pipe, out, Math.min(PIPE_SIZE, total - done), SPLICE_F_MOVE);
    if (n < 0) throw new Errno("splice", -n, `pages of task ${pid}`);
    if (n === 0) {
      throw new InfectError(`Pipe from task ${pid} closed after ${done} of ${total} bytes`);
    }
    done += n;
  }
}
