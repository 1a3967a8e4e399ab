/**
 * Native AIO contexts (io_setup): what the kernel keeps of them, read with BPF, and the layouts
 * of their rings and requests.
 *
 * A context lives in its process's `mm->ioctx_table`; its ring is a shared mapping (`/[aio]`)
 * whose address is the context's id. The ring's header and events are in the task's memory;
 * what is not there is read from the `struct kioctx`: the requests it has in flight (its
 * `reqs` reference, one per live request plus two of its own), those waiting to be cancelled
 * (`active_reqs`), whether it is going away, its size as asked (`max_reqs`), where the kernel
 * writes the next event (`tail`) and its slot in the table (`id`, which the ring's header
 * repeats and io_submit reads).
 *
 * @module
 */
import type { KernelBtf } from "./btf.ts";
import { readKernel, threadPointers } from "./bpf.ts";
import { addressOf, libc } from "./ffi.ts";
import { rawSyscall } from "./process.ts";
import { NR } from "./syscall_numbers.ts";

/** Bytes of a ring's header (struct aio_ring) before its events. */
export const AIO_RING_HEADER = 32;
/** Bytes of one event (struct io_event). */
export const AIO_EVENT = 32;
/** A request (struct iocb): its size and the offsets of the fields a restore fills. */
export const IOCB = { size: 64, opcode: 16, fildes: 20, buf: 24, nbytes: 32 } as const;
/** A write request's opcode (IOCB_CMD_PWRITE). */
export const IOCB_CMD_PWRITE = 1;
/** The ring header's magic (AIO_RING_MAGIC). */
export const AIO_RING_MAGIC = 0xa10a10a1;

/** A ring's header as the task sees it. */
export interface AioRingHeader {
  /** The context's slot in its process's table. */
  id: number;
  /** Events the ring holds. */
  nr: number;
  head: number;
  tail: number;
  magic: number;
  headerLength: number;
}

/** Decodes the header at the start of `ring`. */
export function aioRingHeader(ring: Uint8Array): AioRingHeader {
  const v = new DataView(ring.buffer, ring.byteOffset, AIO_RING_HEADER);
  return {
    id: v.getUint32(0, true),
    nr: v.getUint32(4, true),
    head: v.getUint32(8, true),
    tail: v.getUint32(12, true),
    magic: v.getUint32(16, true),
    headerLength: v.getUint32(28, true),
  };
}

/** Offsets in the header of the words a restore writes. */
export const AIO_RING = { head: 8, tail: 12 } as const;

/** A write request of `len` bytes from `buf` to descriptor `fd` (struct iocb). */
export function iocbPwrite(fd: number, buf: bigint, len: number): Uint8Array {
  const b = new Uint8Array(IOCB.size);
  const v = new DataView(b.buffer);
  v.setUint16(IOCB.opcode, IOCB_CMD_PWRITE, true);
  v.setUint32(IOCB.fildes, fd, true);
  v.setBigUint64(IOCB.buf, buf, true);
  v.setBigUint64(IOCB.nbytes, BigInt(len), true);
  return b;
}

/**
 * Whether a context follows its ring when mremap moves it (criu's `aio_remap`): one made here,
 * moved, then asked for events by its new address.
 */
export function aioRemapWorks(): boolean {
  const out = new BigUint64Array(1);
  if (rawSyscall(NR.io_setup, 16, addressOf(out)) !== 0n) return false;
  let ctx = out[0];
  try {
    const ring = Deno.UnsafePointer.create(ctx);
    if (!ring) return false;
    const nr = new Deno.UnsafePointerView(ring).getUint32(4);
    const len = BigInt((AIO_RING_HEADER + nr * AIO_EVENT + 4095) & ~4095);
    const PROT_NONE = 0, MAP_PRIVATE_ANONYMOUS = 0x22, MREMAP_MAYMOVE_FIXED = 3;
    const spot = BigInt(libc.mmap(0n, len, PROT_NONE, MAP_PRIVATE_ANONYMOUS, -1, 0n));
    if (spot === 0xffffffffffffffffn) return false;
    const moved = rawSyscall(NR.mremap, ctx, len, len, MREMAP_MAYMOVE_FIXED, spot);
    if (moved !== spot) {
      libc.munmap(spot, len);
      return false;
    }
    ctx = moved;
    const noWait = new BigUint64Array(2);
    return rawSyscall(NR.io_getevents, ctx, 0, 1, 0, addressOf(noWait)) === 0n;
  } finally {
    rawSyscall(NR.io_destroy, ctx);
  }
}

/** A context as the kernel keeps it. */
export interface AioContext {
  /** Its slot in the table (the ring's header repeats it). */
  id: number;
  /** Its ring's address: the context's id for io_submit and the others. */
  userId: bigint;
  mmapSize: number;
  /** The size io_setup was asked for. */
  maxReqs: number;
  /** Events its ring holds. */
  nrEvents: number;
  /** Where the kernel writes the next event. */
  tail: number;
  /** It is being destroyed. */
  dead: boolean;
  /** Requests submitted and not yet completed (their events not yet in the ring). */
  inFlight: number;
  /** Requests waiting on its cancel list (polls, say): in flight too. */
  cancelable: boolean;
}

/**
 * The AIO contexts of process `pid` (stopped: their requests in flight can then only
 * complete), read from its mm's table; `perCpu` gives each CPU's per-CPU offset.
 */
export function aioContexts(
  btf: KernelBtf,
  pid: number,
  perCpu: Map<number, bigint>,
): AioContext[] {
  // Every thread of the process has its mm (the map's keys are the kernel's global ids, not
  // those of criu's PID namespace).
  const mm = [...threadPointers(btf, pid, "mm").values()].find((p) => p !== 0n);
  if (!mm) throw new Error(`AIO: no memory of task ${pid} found`);
  const m = (s: string, path: string) => btf.member(s, path).offset;
  const [tablePtr] = readKernel(btf, [{
    address: mm + BigInt(m("mm_struct", "ioctx_table")),
    size: 8,
  }]);
  const table = u64(tablePtr, 0);
  if (!table) return [];
  const [nrBytes] = readKernel(btf, [{
    address: table + BigInt(m("kioctx_table", "nr")),
    size: 4,
  }]);
  const nr = u32(nrBytes, 0);
  if (nr > 1 << 20) throw new Error(`AIO: task ${pid}'s table of contexts is impossible (${nr})`);
  const [slots] = readKernel(btf, [{
    address: table + BigInt(m("kioctx_table", "table")),
    size: nr * 8,
  }]);
  const size = btf.size("kioctx");
  const out: AioContext[] = [];
  for (let slot = 0; slot < nr; slot++) {
    const ctx = u64(slots, slot * 8);
    if (!ctx) continue;
    const [k] = readKernel(btf, [{ address: ctx, size }]);
    const reqs = m("kioctx", "reqs");
    const pcp = u64(k, reqs + m("percpu_ref", "percpu_count_ptr"));
    const data = u64(k, reqs + m("percpu_ref", "data"));
    const activeAt = m("kioctx", "active_reqs");
    const refs = percpuRefCount(btf, pcp, data, perCpu);
    out.push({
      id: u32(k, m("kioctx", "id")),
      userId: u64(k, m("kioctx", "user_id")),
      mmapSize: Number(u64(k, m("kioctx", "mmap_size"))),
      maxReqs: u32(k, m("kioctx", "max_reqs")),
      nrEvents: u32(k, m("kioctx", "nr_events")),
      tail: u32(k, m("kioctx", "tail")),
      dead: u32(k, m("kioctx", "dead")) !== 0,
      // Two references are the context's own (its users' and its base one).
      inFlight: Number(refs) - 2,
      // An empty list's first pointer is its own head.
      cancelable: u64(k, activeAt) !== ctx + BigInt(activeAt),
    });
  }
  return out;
}

/** Whether a percpu_ref counts in its atomic word (switched to atomic, or dying). */
const PERCPU_REF_ATOMIC_DEAD = 3n;
/** The bias a percpu_ref's atomic word carries while counting per CPU. */
const PERCPU_COUNT_BIAS = 1n << 63n;

/** The count of a percpu_ref whose `percpu_count_ptr` and `data` are given. */
function percpuRefCount(
  btf: KernelBtf,
  pcp: bigint,
  data: bigint,
  perCpu: Map<number, bigint>,
): bigint {
  const countAt = data + BigInt(btf.member("percpu_ref_data", "count").offset);
  const atomic = (pcp & PERCPU_REF_ATOMIC_DEAD) !== 0n;
  const got = readKernel(btf, [
    { address: countAt, size: 8 },
    ...(atomic ? [] : [...perCpu.values()].map((o) => ({ address: pcp + o, size: 8 }))),
  ]);
  let n = u64(got[0], 0);
  if (!atomic) {
    n -= PERCPU_COUNT_BIAS;
    for (const c of got.slice(1)) n += u64(c, 0);
  }
  return BigInt.asIntN(64, n);
}

function u64(b: Uint8Array, at: number): bigint {
  return new DataView(b.buffer, b.byteOffset).getBigUint64(at, true);
}

function u32(b: Uint8Array, at: number): number {
  return new DataView(b.buffer, b.byteOffset).getUint32(at, true);
}
