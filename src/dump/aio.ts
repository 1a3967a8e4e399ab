/**
 * Native AIO contexts (io_setup): carried when idle, refused by name otherwise.
 *
 * A context's ring is a mapping of the task's (`/[aio]`), dumped with its pages as criu dumps
 * it (a VMA of status AIORING, an `aios` entry in mm-PID.img: the ring's address, the size
 * io_setup was asked for, the ring's length). What the ring does not show is read from the
 * kernel (syscalls/aio.ts): the requests in flight, which would complete into a ring that is
 * no longer there, so none may be; the kernel's own tail, which must be the ring's.
 * Requests that complete by themselves (reads and writes) are given a moment to; a context
 * with requests on its cancel list (polls), being destroyed, inherited through fork (the child
 * has the mapping, not the context), or whose ring was moved or cut, is refused.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { type aio_ring_entry, aio_ring_entrySchema } from "../../proto/gen/mm_pb.ts";
import {
  AIO_RING_HEADER,
  AIO_RING_MAGIC,
  type AioContext,
  aioContexts,
  aioRingHeader,
} from "../syscalls/aio.ts";
import { possibleCpus } from "../syscalls/io_uring.ts";
import { readRemote, remotePtr, sleep } from "../syscalls/mod.ts";
import { PROT, VMA, type Vma } from "../pagemap/vma.ts";
import type { DumpContext } from "./context.ts";
import { UnsupportedError } from "./file_types.ts";
import { kernelReader } from "./kernel_reader.ts";

/** How long requests in flight are given to complete by themselves. */
const SETTLE_MS = 2000;

/**
 * The AIO contexts of stopped process `pid` (its mappings `vmas`), proven idle: their entries
 * for its mm image. Refuses by name what cannot be carried exactly.
 */
export async function aioRings(
  ctx: DumpContext,
  pid: number,
  vmas: Vma[],
): Promise<aio_ring_entry[]> {
  const rings = vmas.filter((v) => v.status & VMA.AREA_AIORING);
  if (!rings.length) return [];
  const what = `the AIO contexts of task ${pid}`;
  const { btf, perCpu } = kernelReader(ctx, what, "requests in flight");
  // A percpu_ref counts on every possible CPU; one offline now keeps its count unseen.
  if (possibleCpus().some((cpu) => !perCpu.has(cpu))) {
    throw new UnsupportedError(
      `Cannot dump ${what}: a CPU that may hold counts of their requests is offline`,
    );
  }
  const end = performance.now() + SETTLE_MS;
  let contexts: AioContext[];
  for (let round = 0;; round++) {
    contexts = aioContexts(btf, pid, perCpu);
    const busy = contexts.filter((c) => c.inFlight !== 0);
    // Requests on the cancel list wait for something outside (a poll): they may never end.
    if (!busy.length || busy.some((c) => c.cancelable) || performance.now() > end) break;
    await sleep(round < 10 ? 1 : 10);
  }
  const hex = (a: bigint) => a.toString(16);
  for (const c of contexts) {
    const at = `the AIO context at ${hex(c.userId)} of task ${pid}`;
    if (c.dead) throw new UnsupportedError(`Cannot dump ${at}: it is being destroyed`);
    if (c.cancelable) {
      throw new UnsupportedError(
        `Cannot dump ${at}: it has requests waiting to be cancelled or completed (a poll, ` +
          `say), in flight`,
      );
    }
    if (c.inFlight !== 0) {
      throw new UnsupportedError(
        `Cannot dump ${at}: ${c.inFlight} of its requests are in flight (not completed in ` +
          `${SETTLE_MS / 1000} s)`,
      );
    }
    const v = rings.find((r) => r.start === c.userId);
    if (!v || v.end - v.start !== BigInt(c.mmapSize)) {
      throw new UnsupportedError(`Cannot dump ${at}: its ring is no longer mapped whole there`);
    }
  }
  return rings.map((v) => {
    const at = `the AIO ring at ${hex(v.start)} of task ${pid}`;
    const c = contexts.find((c) => c.userId === v.start);
    if (!c) {
      throw new UnsupportedError(
        `Cannot dump ${at}: its context is not the task's (a mapping inherited through fork, ` +
          `or its context destroyed)`,
      );
    }
    if (v.prot !== (PROT.READ | PROT.WRITE)) {
      throw new UnsupportedError(`Cannot dump ${at}: its protection was changed`);
    }
    const header = new Uint8Array(AIO_RING_HEADER);
    readRemote(pid, remotePtr(v.start), header);
    const h = aioRingHeader(header);
    // The kernel writes its own tail into the ring; a different one there was the task's.
    if (
      h.magic !== AIO_RING_MAGIC || h.nr !== c.nrEvents || h.id !== c.id ||
      h.headerLength !== AIO_RING_HEADER || h.tail !== c.tail || h.head >= h.nr
    ) {
      throw new UnsupportedError(
        `Cannot dump ${at}: its header was written by the task (id ${h.id}, ${h.nr} events, ` +
          `head ${h.head}, tail ${h.tail}; the kernel's tail ${c.tail})`,
      );
    }
    ctx.log.debug(
      `Task ${pid}: AIO ring ${hex(v.start)} id ${c.id}, ${c.maxReqs} requests asked, ` +
        `${c.nrEvents} events, head ${h.head} tail ${h.tail}`,
    );
    return create(aio_ring_entrySchema, {
      id: v.start,
      nrReq: c.maxReqs,
      ringLen: c.mmapSize,
    });
  });
}
