/**
 * Native AIO contexts made again in their task, once its memory is back (their rings' pages
 * are then in private memory at their places, restore/memory.ts).
 *
 * A context is set up in the task with the size it was asked for (io_setup: the kernel gives
 * the same ring for it), in the slot of its process's table it had (the ring's header names
 * it, and io_submit finds the context by it): slots below it that were empty are taken by
 * fillers meanwhile, destroyed after. Its counters are brought where they were by requests
 * that complete at once (one-byte writes to /dev/null): as many as the tail is ahead, those
 * before the unreaped events reaped on the way (their head moved up), the rest left; then its
 * events' bytes are written in, and the ring is moved over the old place (mremap, which the
 * kernel follows: the context's id is its ring's address again).
 *
 * @module
 */
import type { mm_entry } from "../../proto/gen/mm_pb.ts";
import {
  AIO_EVENT,
  AIO_RING,
  AIO_RING_HEADER,
  AIO_RING_MAGIC,
  aioRingHeader,
  iocbPwrite,
} from "../syscalls/aio.ts";
import {
  NR,
  O,
  readRemote,
  remoteAdd,
  type RemotePtr,
  remotePtr,
  writeRemote,
} from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { VMA } from "../pagemap/vma.ts";
import { ImageError } from "../images/image.ts";
import type { RemoteArena } from "./arena.ts";
import type { TaskImages } from "./images.ts";
import { RestoreError } from "./files.ts";
import { type TaskSyscall, taskSyscall } from "./task_syscall.ts";

/** Requests one io_submit is given at most. */
const BATCH = 256;

/** Checks a task's AIO entries against its mappings (image `path`) before anything is made. */
export function checkAioEntries(mm: mm_entry, path: string): void {
  const rings = mm.vmas.filter((v) => v.status & VMA.AREA_AIORING);
  for (const a of mm.aios) {
    const v = rings.find((v) => v.start === a.id);
    if (!v || v.end - v.start !== BigInt(a.ringLen) || !a.nrReq || a.ringLen % 4096) {
      throw new ImageError(
        `Image ${path}: the AIO ring at ${a.id.toString(16)} is malformed (no mapping of its ` +
          `length there, or no requests)`,
      );
    }
  }
  for (const v of rings) {
    if (!mm.aios.some((a) => a.id === v.start)) {
      throw new ImageError(
        `Image ${path}: the AIO ring mapped at ${v.start.toString(16)} has no context`,
      );
    }
  }
}

/** Makes the AIO contexts of the task `rs` runs syscalls in (its memory back). */
export function restoreAioRings(rs: RemoteSyscalls, arena: RemoteArena, task: TaskImages): void {
  if (!task.mm.aios.length) return;
  const pid = rs.task.pid;
  const hex = (a: bigint) => a.toString(16);
  const sys = taskSyscall(rs);
  // Each ring as dumped (its pages are where it was), in the order of its slot.
  const rings = task.mm.aios.map((entry) => {
    const bytes = new Uint8Array(entry.ringLen);
    readRemote(pid, remotePtr(entry.id), bytes);
    const header = aioRingHeader(bytes);
    const events = (entry.ringLen - AIO_RING_HEADER) / AIO_EVENT;
    if (
      header.magic !== AIO_RING_MAGIC || header.nr === 0 || header.nr > events ||
      header.head >= header.nr || header.tail >= header.nr
    ) {
      throw new RestoreError(
        `Cannot restore the AIO ring at ${hex(entry.id)} of task ${pid}: its header is not one ` +
          `(${header.nr} events, head ${header.head}, tail ${header.tail})`,
      );
    }
    return { entry, bytes, header };
  }).sort((a, b) => a.header.id - b.header.id);
  const mark = arena.mark();
  const devnull = rs.openFile("/dev/null", O.WRONLY, arena.reserve(16));
  try {
    const byte = arena.reserve(8);
    const list = arena.words(new Array(BATCH).fill(arena.put(iocbPwrite(devnull, byte, 1))));
    const out = arena.reserve(8);
    const setup = (n: number, what: string) => {
      writeRemote(pid, out, new Uint8Array(8));
      sys(NR.io_setup, `io_setup(${n}) (${what})`, n, out);
      const ctx = new Uint8Array(8);
      readRemote(pid, out, ctx);
      return remotePtr(new DataView(ctx.buffer).getBigUint64(0, true));
    };
    const fillers: RemotePtr[] = [];
    let slot = 0;
    for (const r of rings) {
      const at = r.entry.id;
      const what = `the AIO ring at ${hex(at)} of task ${pid}`;
      if (r.header.id < slot) {
        throw new RestoreError(`Cannot restore ${what}: its slot ${r.header.id} is taken twice`);
      }
      for (; slot < r.header.id; slot++) fillers.push(setup(1, `a filler of slot ${slot}`));
      const ctx = setup(r.entry.nrReq, what);
      slot++;
      const made = ringHeader(pid, ctx);
      if (made.nr !== r.header.nr || made.id !== r.header.id) {
        throw new RestoreError(
          `Cannot restore ${what}: io_setup(${r.entry.nrReq}) made a ring of ${made.nr} events ` +
            `in slot ${made.id} here, where it had ${r.header.nr} in slot ${r.header.id}`,
        );
      }
      replay(sys, pid, ctx, list, r.header, what);
      writeRemote(pid, remoteAdd(ctx, AIO_RING_HEADER), r.bytes.subarray(AIO_RING_HEADER));
      const now = new Uint8Array(AIO_RING_HEADER);
      readRemote(pid, ctx, now);
      if (now.some((b, i) => b !== r.bytes[i])) {
        throw new RestoreError(`Cannot restore ${what}: its header could not be made the same`);
      }
      const MREMAP_MAYMOVE = 1, MREMAP_FIXED = 2;
      const len = r.entry.ringLen;
      const moved = sys(
        NR.mremap,
        `mremap (${what})`,
        ctx,
        len,
        len,
        MREMAP_MAYMOVE | MREMAP_FIXED,
        at,
      );
      if (BigInt(moved) !== at) {
        throw new RestoreError(`Cannot restore ${what}: moved to ${moved.toString(16)}`);
      }
    }
    for (const f of fillers) sys(NR.io_destroy, "io_destroy (a filler)", f);
  } finally {
    rs.closeFd(devnull);
    arena.release(mark);
  }
}

/** The header of the ring at `at` in task `pid`. */
function ringHeader(pid: number, at: RemotePtr) {
  const b = new Uint8Array(AIO_RING_HEADER);
  readRemote(pid, at, b);
  return aioRingHeader(b);
}

/**
 * Brings new context `ctx` (head and tail 0) to `want`'s head and tail, the kernel's tail with
 * them: requests completing at once (`list`: BATCH pointers to one), those before the events
 * left unreaped reaped on the way.
 */
function replay(
  sys: TaskSyscall,
  pid: number,
  ctx: RemotePtr,
  list: RemotePtr,
  want: { nr: number; head: number; tail: number },
  what: string,
): void {
  const unreaped = (want.tail - want.head + want.nr) % want.nr;
  const total = want.tail >= unreaped ? want.tail : want.tail + want.nr;
  const word = new Uint8Array(4);
  const complete = (n: number, reap: boolean) => {
    for (let done = 0; done < n;) {
      const got = sys(NR.io_submit, `io_submit (${what})`, ctx, Math.min(BATCH, n - done), list);
      if (got <= 0) {
        throw new RestoreError(`Cannot restore ${what}: no more requests could be submitted`);
      }
      done += got;
      if (reap) {
        // As io_getevents would: the head up to the tail (the kernel credits them back).
        readRemote(pid, remoteAdd(ctx, AIO_RING.tail), word);
        writeRemote(pid, remoteAdd(ctx, AIO_RING.head), word);
      }
    }
  };
  complete(total - unreaped, true);
  complete(unreaped, false);
  const h = ringHeader(pid, ctx);
  if (h.head !== want.head || h.tail !== want.tail) {
    throw new RestoreError(
      `Cannot restore ${what}: its head and tail came to ${h.head} and ${h.tail}, not ` +
        `${want.head} and ${want.tail}`,
    );
  }
}
