/**
 * Zero-copy page dumping through two pipes, with the dump_pages parasite
 * (parasite/dump_pages.c).
 *
 * ```
 *  task (frozen, signals blocked)              dumper (this process)
 *  +-------------------------------+
 *  | scratch mapping (rwx)         |
 *  |  0      blob code             |
 *  |  4096   args {fd[2], iov,     |
 *  |          niov, chunk, done,   |
 *  |          result, lifeline,    |
 *  |          heal, heal block}    |
 *  |  4192   iovec[niov]  (runs)   |
 *  |  ...    stack (16 KiB)        |
 *  +-------------------------------+
 *   chunk 0, 2, 4 ... vmsplice --> pipe A --> splice (worker thread) --> pages-N.img @ k*chunk
 *   chunk 1, 3, 5 ... vmsplice --> pipe B --> splice (worker thread) --> pages-N.img @ k*chunk
 *   pages referenced, not copied               one copy each, both CPUs at once
 * ```
 * The pipes are made inside the task (injected pipe2, recorded in its heal table); their read
 * ends come to us with pidfd_getfd and the task's copies are closed, so the task only ever
 * holds the write ends. A third pipe, the scope's lifeline (RemoteSyscalls.lifeline), goes the
 * other way: the task holds its read end, we hold its only write end. The blob blocks when a
 * pipe is full; the two copiers drain them as they fill. When the blob is done it sets `done`
 * and waits on the lifeline; we interrupt it, and the remote-syscall scope removes the mapping.
 * A watchdog on the tracer thread notices a blob that faults or fails, and closes the write ends
 * in the task so that the copiers see the end of their pipes and stop. If criu dies, the pipes
 * close with it and the blob goes to heal (parasite/heal.c) on its own.
 *
 * @module
 */
import { BLOBS } from "../../parasite/blobs_gen.ts";
import { IMAGE_MODE } from "../images/image.ts";
import {
  close,
  F,
  fcntl,
  fsync,
  O,
  open,
  pidfdGetfd,
  pidfdOpen,
  readRemote,
  remoteAdd,
  SPLICE_F_MOVE,
  writeRemote,
} from "../syscalls/mod.ts";
import { libc } from "../syscalls/ffi.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { InfectError } from "../tree/infect.ts";
import { decodeBase64 } from "../util/base64.ts";
import type { PageRun } from "./pagemap.ts";
import type { XferStats } from "./page_xfer.ts";

const PAGE = 4096;
const ARGS = 4096;
const ARGS_SIZE = 96;
const STACK_SIZE = 16384;
const PIPE_SIZE = 1 << 20;
const CHUNK_LIMIT = 1 << 30; // keep each iovec under 1 GiB (vmsplice takes size_t, splice counts int)
const DONE = 40;
const WATCHDOG_MS = 50;

/**
 * Writes the pages of `runs` to `path` by vmsplice in the task and splice here; gives up when
 * `signal` is aborted.
 */
export async function writePagesViaParasite(
  rs: RemoteSyscalls,
  runs: PageRun[],
  path: string,
  signal?: AbortSignal,
): Promise<XferStats> {
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
    if (total > 0) await transfer(rs, iovs, total, out, stats, signal);
    const t = performance.now();
    fsync(out, path);
    stats.writeUs += (performance.now() - t) * 1000;
  } finally {
    close(out);
  }
  return stats;
}

async function transfer(
  rs: RemoteSyscalls,
  iovs: bigint[],
  total: number,
  out: number,
  stats: XferStats,
  signal?: AbortSignal,
): Promise<void> {
  const pid = rs.task.pid;
  const code = decodeBase64(BLOBS.dump_pages);
  const iovOff = ARGS + ARGS_SIZE;
  const stackOff = Math.ceil((iovOff + iovs.length * 8) / 16) * 16;
  const size = Math.ceil((stackOff + STACK_SIZE) / PAGE) * PAGE;
  const heal = rs.heal;
  if (!heal) throw new InfectError(`Task ${pid}: pages are dumped from an infected leader only`);
  const area = rs.scratch(size, true);
  const argsAt = remoteAdd(area, ARGS);

  // Two pipes made in the task, their read ends taken over by us; and the scope's lifeline.
  const taskW: number[] = [];
  const ours: number[] = [];
  let running = false;
  try {
    const taskLife = rs.lifeline();
    const pidfd = pidfdOpen(pid);
    try {
      for (let i = 0; i < 2; i++) {
        const [r, w] = rs.pipe();
        taskW.push(w);
        ours.push(pidfdGetfd(pidfd, r, pid));
        rs.closeFd(r);
      }
    } finally {
      close(pidfd);
    }
    let chunk = PIPE_SIZE;
    for (const fd of ours) {
      try {
        fcntl(fd, F.SETPIPE_SZ, PIPE_SIZE);
      } catch {
        // Keep the default size when the limit forbids more.
      }
      chunk = Math.min(chunk, fcntl(fd, F.GETPIPE_SZ));
    }

    const args = new BigUint64Array(ARGS_SIZE / 8);
    args[0] = BigInt(taskW[0]);
    args[1] = BigInt(taskW[1]);
    args[2] = remoteAdd(area, iovOff);
    args[3] = BigInt(iovs.length / 2);
    args[4] = BigInt(chunk);
    args[7] = BigInt(taskLife);
    args[8] = heal.entry;
    args[9] = heal.block;
    args[10] = sigpipePending(pid) ? 1n : 0n;
    writeRemote(pid, area, code);
    writeRemote(pid, argsAt, new Uint8Array(args.buffer));
    writeRemote(pid, remoteAdd(area, iovOff), new Uint8Array(new BigUint64Array(iovs).buffer));

    const t = performance.now();
    rs.run(area, argsAt, remoteAdd(area, stackOff + STACK_SIZE));
    running = true;
    let failure: unknown;
    // Watchdog: the tracer thread is free while the copiers run; it checks the blob.
    const watchdog = setInterval(() => {
      if (failure !== undefined) return;
      try {
        signal?.throwIfAborted();
        rs.checkRunning();
        const flag = new BigInt64Array(2);
        readRemote(pid, remoteAdd(argsAt, DONE), new Uint8Array(flag.buffer));
        if (flag[0] !== 0n && flag[1] < 0n) {
          throw new InfectError(`vmsplice in task ${pid} failed with errno ${-flag[1]}`);
        }
      } catch (e) {
        failure = e;
        // Unblock the copiers: with the write ends gone they see the end of their pipes.
        try {
          if (running) rs.interrupt();
        } catch {
          // Already stopped by the fault.
        }
        running = false;
        for (const w of taskW) rs.closeFd(w);
        taskW.length = 0;
      }
    }, WATCHDOG_MS);
    let copied: number[];
    try {
      copied = await Promise.all(ours.map((fd, j) => copier(fd, out, j, chunk, total)));
    } finally {
      clearInterval(watchdog);
    }
    if (failure !== undefined) throw failure;
    rs.waitFlag(remoteAdd(argsAt, DONE), 10_000);
    rs.interrupt();
    running = false;
    const result = new BigInt64Array(2);
    readRemote(pid, remoteAdd(argsAt, DONE), new Uint8Array(result.buffer));
    if (result[1] < 0n) {
      throw new InfectError(`vmsplice in task ${pid} failed with errno ${-result[1]}`);
    }
    const got = copied.reduce((a, b) => a + b, 0);
    if (got !== total) {
      throw new InfectError(`Pages of task ${pid}: ${got} of ${total} bytes arrived`);
    }
    stats.writeUs = (performance.now() - t) * 1000;
  } finally {
    // The blob stops before the lifeline closes: closed under a running blob, it sends the
    // task home while we still hold it.
    if (running) {
      try {
        rs.interrupt();
      } catch {
        // It stopped on its own (a fault) or is gone.
      }
    }
    for (const fd of ours) close(fd);
    for (const w of taskW) rs.closeFd(w);
  }
}

/** Whether thread `pid` has a SIGPIPE of its own pending (then the blob leaves it there). */
function sigpipePending(pid: number): boolean {
  const m = /^SigPnd:\s+([0-9a-f]+)/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m !== null && (BigInt("0x" + m[1]) & (1n << 12n)) !== 0n;
}

/**
 * Copier `j` of two: splices chunks j, j + 2, ... from `pipe` into `out` at their offsets, on a
 * worker thread (splice_nb). Returns the bytes copied; stops early at the end of the pipe.
 */
async function copier(
  pipe: number,
  out: number,
  j: number,
  chunk: number,
  total: number,
): Promise<number> {
  const off = new BigInt64Array(1);
  const offBuf = new Uint8Array(off.buffer);
  let copied = 0;
  for (let start = j * chunk; start < total; start += 2 * chunk) {
    const len = Math.min(chunk, total - start);
    off[0] = BigInt(start);
    for (let done = 0; done < len;) {
      const n = Number(
        await libc.splice_nb(pipe, 0n, out, offBuf, BigInt(len - done), SPLICE_F_MOVE),
      );
      if (n < 0) throw new InfectError(`Cannot copy pages into the image (splice failed)`);
      if (n === 0) return copied; // the write end is gone
      done += n;
      copied += n;
    }
  }
  return copied;
}
