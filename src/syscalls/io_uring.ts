/**
 * io_uring instances: what the kernel holds of one (read with BPF, bpf.ts: its setup flags,
 * counters, registrations and the requests it has in flight), and the mechanism to make one
 * again with the same counters and rings.
 *
 * An instance's rings are two regions of kernel memory the task maps (mmap of the instance's
 * file at the offsets below):
 *
 * ```
 *  IORING_OFF_SQ_RING (0) / IORING_OFF_CQ_RING:  struct io_rings (heads, tails, masks, flags,
 *                                               counters) | CQEs | SQ index array
 *  IORING_OFF_SQES:                             SQEs
 * ```
 *
 * The kernel also keeps two counters of its own: how many SQEs it has taken (`cached_sq_head`,
 * shown as the SQ head) and how many CQEs it has posted (`cached_cq_tail`, the CQ tail). A new
 * instance starts both at zero and nothing sets them: `advanceRing` brings them to the dumped
 * values by submitting NOPs (those that must post nothing with IOSQE_CQE_SKIP_SUCCESS), after
 * which the rings' memory is written back whole.
 *
 * @module
 */
import type { BtfMember, KernelBtf } from "./btf.ts";
import { fileObjects, readKernel, threadPointers } from "./bpf.ts";
import {
  close,
  O,
  open,
  pageFrames,
  pread,
  pwriteAll,
  rawSyscall,
  withScratchPage,
  withSharedMapping,
} from "./process.ts";
import { NR } from "./syscall_numbers.ts";
import { Errno } from "./errno.ts";
import { addressOf, lastErrno } from "./ffi.ts";

/** Offsets of the rings' regions in the instance's file (mmap). */
export const IORING_OFF = { SQ_RING: 0n, CQ_RING: 0x8000000n, SQES: 0x10000000n } as const;

/** io_uring_setup flags. */
export const IORING_SETUP = {
  IOPOLL: 1 << 0,
  SQPOLL: 1 << 1,
  SQ_AFF: 1 << 2,
  CQSIZE: 1 << 3,
  CLAMP: 1 << 4,
  ATTACH_WQ: 1 << 5,
  R_DISABLED: 1 << 6,
  SUBMIT_ALL: 1 << 7,
  COOP_TASKRUN: 1 << 8,
  TASKRUN_FLAG: 1 << 9,
  SQE128: 1 << 10,
  CQE32: 1 << 11,
  SINGLE_ISSUER: 1 << 12,
  DEFER_TASKRUN: 1 << 13,
  NO_MMAP: 1 << 14,
  REGISTERED_FD_ONLY: 1 << 15,
  NO_SQARRAY: 1 << 16,
  HYBRID_IOPOLL: 1 << 17,
  CQE_MIXED: 1 << 18,
  SQE_MIXED: 1 << 19,
} as const;

/** A filled slot of a table of registered resources (io_rsrc_node). */
export interface RingSlot {
  index: number;
  /** Its tag (a completion comes with it when it goes). */
  tag: bigint;
  /** A file: its struct file. */
  file?: bigint;
  /**
   * A buffer: where it lies in the task, how long, whether it is the kernel's (ublk), and the
   * pages the kernel holds of it (its bio_vecs: each a struct page, an offset from it and a
   * length; together `length` bytes from `address` on).
   */
  buffer?: {
    address: bigint;
    length: number;
    kernel: boolean;
    segments: { page: bigint; offset: number; length: number }[];
  };
}

/** What the kernel holds of an io_uring instance (struct io_ring_ctx). */
export interface RingKernelState {
  flags: number;
  sqEntries: number;
  cqEntries: number;
  /** SQEs the kernel has taken. */
  sqHead: number;
  /** CQEs the kernel has posted. */
  cqTail: number;
  /** Sizes of the two regions the task maps, in pages. */
  ringPages: number;
  sqePages: number;
  clockid: number;
  /** Registered files and buffers (table sizes). */
  files: number;
  buffers: number;
  /** The registered files' slots that hold one. */
  fileSlots: RingSlot[];
  /** The registered buffers' slots that hold one. */
  bufferSlots: RingSlot[];
  /** The user its pinned memory is charged to (none when its maker had CAP_IPC_LOCK). */
  chargedUid?: number;
  /**
   * Its registered eventfd (its eventfd_ctx), whether it is signalled for async completions
   * only, and the CQ tail it was last signalled at.
   */
  eventfd?: { ctx: bigint; async: boolean; lastCqTail: number };
  /** Other state by name, where it is not the default (personalities, say). */
  registered: string[];
  /** Requests waiting by kind (timeouts, polled I/O...), where there are some. */
  waiting: string[];
  /** Requests in flight, over the tasks that submitted to it (every instance of theirs). */
  inflight: number;
  /** IOSQE_CQE_SKIP_SUCCESS was used: IOSQE_IO_DRAIN is refused from then on. */
  drainDisabled: boolean;
  /** A timeout that counts completions was used (its count keeps a mark of its own). */
  countedTimeouts: boolean;
}

/** Reads the kernel's state of the instance at `ctx` (a file's private_data). */
export function ringKernelState(
  btf: KernelBtf,
  ctx: bigint,
  perCpu: Map<number, bigint>,
): RingKernelState {
  const member = (path: string) => {
    try {
      return btf.member("io_ring_ctx", path);
    } catch {
      return undefined; // not in this kernel
    }
  };
  const fields = {
    flags: member("flags"),
    bits: member("restricted"),
    sqEntries: member("sq_entries"),
    cqEntries: member("cq_entries"),
    sqHead: member("cached_sq_head"),
    cqTail: member("cached_cq_tail"),
    ringPages: member("ring_region.nr_pages"),
    sqePages: member("sq_region.nr_pages"),
    clockid: member("clockid"),
    files: member("file_table.data.nr"),
    buffers: member("buf_table.nr"),
  };
  for (const [name, m] of Object.entries(fields)) {
    if (!m) throw new Error(`io_uring: this kernel's io_ring_ctx has no ${name}`);
  }
  // Pointers (or list heads, whose first word is their own address when empty) that say
  // "something is there", by what they hold.
  const present: [string, string][] = [
    ["personalities (IORING_REGISTER_PERSONALITY)", "personalities.xa_head"],
    ["provided buffers", "io_bl_xa.xa_head"],
    ["a zero-copy receive queue", "zcrx_ctxs.xa_head"],
    ["a parameter region (IORING_REGISTER_MEM_REGION)", "param_region.ptr"],
    ["an SQPOLL thread", "sq_data"],
    ["a single issuer", "submitter_task"],
  ];
  const lists: [string, string][] = [
    ["timeouts", "timeout_list"],
    ["linked timeouts", "ltimeout_list"],
    ["polled I/O (IOPOLL)", "iopoll_list"],
    ["requests deferred (IOSQE_IO_DRAIN)", "defer_list"],
    ["completions overflowed", "cq_overflow_list"],
    ["futex waits", "futex_list"],
    ["waitid waits", "waitid_list"],
    ["cancelable commands", "cancelable_uring_cmd"],
    ["task work", "work_llist"],
    ["task work retried", "retry_llist"],
  ];
  const limits = member("iowq_limits");
  const alloc = member("file_alloc_start");
  const allocEnd = member("file_alloc_end");
  const tctxList = member("tctx_list")!;
  // Pointers followed below: the registered files' and buffers' nodes, the user charged, the
  // eventfd.
  const pointers = ["file_table.data.nodes", "buf_table.nodes", "user", "io_ev_fd"].map((p) =>
    btf.member("io_ring_ctx", p)
  );
  const ranges = [
    ...Object.values(fields).map((m) => m!),
    ...[...present, ...lists].map(([, path]) => member(path) ?? { offset: -1, size: 8 }),
    limits ?? { offset: -1, size: 8 },
    alloc ?? { offset: -1, size: 4 },
    allocEnd ?? { offset: -1, size: 4 },
    { offset: tctxList.offset, size: 8 },
    ...pointers,
  ];
  const got = readKernel(
    btf,
    ranges.map((r) => ({ address: r.offset < 0 ? 0n : ctx + BigInt(r.offset), size: r.size })),
  );
  const nf = Object.keys(fields).length;
  const val = Object.fromEntries(Object.keys(fields).map((k, i) => [k, Number(num(got[i]))]));
  const registered: string[] = [];
  const waiting: string[] = [];
  present.forEach(([name], i) => {
    if (num(got[nf + i]) !== 0n) registered.push(name);
  });
  lists.forEach(([name, path], i) => {
    const m = member(path);
    const first = num(got[nf + present.length + i]);
    if (m && first !== 0n && first !== ctx + BigInt(m.offset)) waiting.push(name);
  });
  let at = nf + present.length + lists.length;
  if (limits && num(got[at]) !== 0n) registered.push("io-wq worker limits (IOWQ_MAX_WORKERS)");
  at++;
  // (Registering files sets it to the whole table.)
  if (alloc && (num(got[at]) !== 0n || num(got[at + 1]) !== BigInt(val.files))) {
    registered.push("a file allocation range (IORING_REGISTER_FILE_ALLOC_RANGE)");
  }
  at += 2;
  // The flag bits of the word `restricted` lies in (their offsets within it from BTF).
  const bit = (name: string) => {
    const m = member(name);
    return m?.bits && m.offset === fields.bits!.offset ? (val.bits >>> m.bits.offset) & 1 : 0;
  };
  if (bit("restricted")) registered.push("restrictions (IORING_REGISTER_RESTRICTIONS)");
  if (bit("drain_active") || bit("drain_next")) waiting.push("a drain (IOSQE_IO_DRAIN)");
  const inflight = inflightOf(btf, ctx + BigInt(tctxList.offset), num(got[at]), perCpu);
  const [nodes, bufNodes, user, evfd] = got.slice(at + 1);
  let eventfd: RingKernelState["eventfd"];
  if (num(evfd) !== 0n) {
    const at = (m: string) => num(evfd) + BigInt(btf.member("io_ev_fd", m).offset);
    const [c, a, t] = readKernel(btf, [
      { address: at("cq_ev_fd"), size: 8 },
      { address: at("eventfd_async"), size: 4 },
      { address: at("last_cq_tail"), size: 4 },
    ]);
    eventfd = { ctx: num(c), async: num(a) !== 0n, lastCqTail: Number(num(t)) };
  }
  const fileSlots = rsrcSlots(btf, num(nodes), val.files, "file");
  const bufferSlots = rsrcSlots(btf, num(bufNodes), val.buffers, "buffer");
  let chargedUid: number | undefined;
  if (num(user) !== 0n) {
    const uid = btf.member("user_struct", "uid").offset;
    const [u] = readKernel(btf, [{ address: num(user) + BigInt(uid), size: 4 }]);
    chargedUid = Number(num(u));
  }
  return {
    eventfd,
    fileSlots,
    bufferSlots,
    chargedUid,
    drainDisabled: bit("drain_disabled") === 1,
    countedTimeouts: bit("off_timeout_used") === 1,
    flags: val.flags,
    sqEntries: val.sqEntries,
    cqEntries: val.cqEntries,
    sqHead: val.sqHead,
    cqTail: val.cqTail,
    ringPages: val.ringPages,
    sqePages: val.sqePages,
    clockid: val.clockid,
    files: val.files,
    buffers: val.buffers,
    registered,
    waiting,
    inflight,
  };
}

/** A kernel word read: 8 bytes or more as a u64, fewer as a u32. */
function num(b: Uint8Array): bigint {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return b.length >= 8 ? v.getBigUint64(0, true) : BigInt(v.getUint32(0, true));
}

/** The filled slots of a table of `nr` registered resources whose nodes are at `nodes`. */
function rsrcSlots(btf: KernelBtf, nodes: bigint, nr: number, kind: "file" | "buffer"): RingSlot[] {
  if (!nr || nodes === 0n) return [];
  const ptrs = readKernel(
    btf,
    Array.from({ length: nr }, (_, i) => ({ address: nodes + BigInt(i * 8), size: 8 })),
  ).map(num);
  const filled = ptrs.map((node, index) => ({ node, index })).filter((x) => x.node !== 0n);
  const tag = btf.member("io_rsrc_node", "tag").offset;
  const ptr = btf.member("io_rsrc_node", "file_ptr").offset;
  const got = readKernel(
    btf,
    filled.flatMap(({ node }) => [
      { address: node + BigInt(tag), size: 8 },
      { address: node + BigInt(ptr), size: 8 },
    ]),
  );
  const FFS_MASK = ~3n; // a file pointer's low bits are flags (nowait, regular)
  if (kind === "file") {
    return filled.map(({ index }, i) => ({
      index,
      tag: num(got[2 * i]),
      file: num(got[2 * i + 1]) & FFS_MASK,
    }));
  }
  const m = (name: string) => btf.member("io_mapped_ubuf", name);
  const bufs = readKernel(
    btf,
    filled.flatMap((_, i) => {
      const imu = num(got[2 * i + 1]);
      return [
        { address: imu + BigInt(m("ubuf").offset), size: 8 },
        { address: imu + BigInt(m("len").offset), size: 4 },
        { address: imu + BigInt(m("is_kbuf").offset), size: 1 },
        { address: imu + BigInt(m("nr_bvecs").offset), size: 4 },
      ];
    }),
  );
  // Their bio_vecs, each array in one range.
  const vecSize = btf.size("bio_vec");
  const page = btf.member("bio_vec", "bv_page").offset;
  const len = btf.member("bio_vec", "bv_len").offset;
  const off = btf.member("bio_vec", "bv_offset").offset;
  const vecs = readKernel(
    btf,
    filled.map((_, i) => ({
      address: num(got[2 * i + 1]) + BigInt(m("bvec").offset),
      size: Number(num(bufs[4 * i + 3])) * vecSize,
    })),
  );
  return filled.map(({ index }, i) => {
    const v = new DataView(vecs[i].buffer);
    const segments = [];
    for (let p = 0; p + vecSize <= vecs[i].length; p += vecSize) {
      segments.push({
        page: v.getBigUint64(p + page, true),
        offset: v.getUint32(p + off, true),
        length: v.getUint32(p + len, true),
      });
    }
    return {
      index,
      tag: num(got[2 * i]),
      buffer: {
        address: num(bufs[4 * i]),
        length: Number(num(bufs[4 * i + 1])),
        kernel: bufs[4 * i + 2][0] !== 0,
        segments,
      },
    };
  });
}

/**
 * The struct pages of an instance's two regions (ring_region: heads, tails and CQEs;
 * sq_region: SQEs), as the kernel holds them: with IORING_SETUP_NO_MMAP, pages of the task's
 * own memory (pinned).
 */
export function regionPages(btf: KernelBtf, ctx: bigint): { rings: bigint[]; sqes: bigint[] } {
  const m = (path: string) => btf.member("io_ring_ctx", path);
  const [rp, rn, sp, sn] = readKernel(
    btf,
    ["ring_region.pages", "ring_region.nr_pages", "sq_region.pages", "sq_region.nr_pages"]
      .map((path) => ({ address: ctx + BigInt(m(path).offset), size: m(path).size })),
  );
  const list = (pages: bigint, nr: number) => {
    if (!nr || pages === 0n) return [];
    const [all] = readKernel(btf, [{ address: pages, size: nr * 8 }]);
    const v = new DataView(all.buffer);
    return Array.from({ length: nr }, (_, i) => v.getBigUint64(i * 8, true));
  };
  return { rings: list(num(rp), Number(num(rn))), sqes: list(num(sp), Number(num(sn))) };
}

/**
 * Where the kernel keeps the struct page of each page frame (its `vmemmap`: frame N's is at
 * `base + N * size`), found from a page of criu's own registered in an instance of its own:
 * its frame from /proc/self/pagemap, its struct page from the instance. Undefined where frames
 * are hidden (pagemap shows them to CAP_SYS_ADMIN only).
 */
export function pageStructs(btf: KernelBtf): { base: bigint; size: number } | undefined {
  return withScratchPage((address) => {
    const params = ringParams(0, 1, 0);
    const fd = Number(rawSyscall(NR.io_uring_setup, 1, addressOf(params)));
    if (fd < 0) throw new Errno("io_uring_setup", lastErrno(), "criu's own instance");
    try {
      const iov = new BigUint64Array([address, 4096n]);
      const IORING_REGISTER_BUFFERS = 0;
      const ret = rawSyscall(NR.io_uring_register, fd, IORING_REGISTER_BUFFERS, addressOf(iov), 1);
      if (ret < 0n) throw new Errno("io_uring_register(BUFFERS)", lastErrno(), "criu's own");
      const ctx = fileObjects(btf, Deno.pid).get(fd);
      if (ctx === undefined) throw new Error("io_uring: criu's own instance was not found");
      const [nr, nodes] = readKernel(
        btf,
        [
          btf.member("io_ring_ctx", "buf_table.nr"),
          btf.member("io_ring_ctx", "buf_table.nodes"),
        ].map((m) => ({ address: ctx + BigInt(m.offset), size: m.size })),
      );
      const [slot] = rsrcSlots(btf, num(nodes), Number(num(nr)), "buffer");
      const page = slot?.buffer?.segments[0]?.page;
      const [frame] = pageFrames("self", address, 1);
      if (!page || frame <= 0n) return undefined;
      const size = btf.size("page");
      return { base: page - frame * BigInt(size), size };
    } finally {
      close(fd);
    }
  });
}

/**
 * Requests in flight of the tasks on list `head` (an instance's tctx_list, whose first node is
 * `first`): each task's io_uring context counts them (a per-CPU counter, less the references it
 * keeps in hand).
 */
function inflightOf(
  btf: KernelBtf,
  head: bigint,
  first: bigint,
  perCpu: Map<number, bigint>,
): number {
  const nodeTask = btf.member("io_tctx_node", "task").offset;
  const taskCtx = btf.member("task_struct", "io_uring").offset;
  const cached = btf.member("io_uring_task", "cached_refs");
  const inflight = btf.member("io_uring_task", "inflight").offset;
  const count = inflight + btf.member("percpu_counter", "count").offset;
  const counters = inflight + btf.member("percpu_counter", "counters").offset;
  const tctxs = new Set<bigint>();
  for (let node = first, n = 0; node !== head && node !== 0n; n++) {
    if (n > 4096) throw new Error("io_uring: the list of its tasks does not end");
    const [next, task] = readKernel(btf, [
      { address: node, size: 8 },
      { address: node + BigInt(nodeTask), size: 8 },
    ]);
    const [tctx] = readKernel(btf, [{ address: num(task) + BigInt(taskCtx), size: 8 }]);
    if (num(tctx) !== 0n) tctxs.add(num(tctx));
    node = num(next);
  }
  let total = 0n;
  for (const tctx of tctxs) {
    const [c, sum, ptr] = readKernel(btf, [
      { address: tctx + BigInt(cached.offset), size: 4 },
      { address: tctx + BigInt(count), size: 8 },
      { address: tctx + BigInt(counters), size: 8 },
    ]);
    const cpus = [...perCpu.values()];
    const local = readKernel(btf, cpus.map((off) => ({ address: num(ptr) + off, size: 4 })));
    let n = new DataView(sum.buffer).getBigInt64(0, true);
    for (const l of local) n += BigInt(new DataView(l.buffer).getInt32(0, true));
    n -= BigInt(new DataView(c.buffer).getInt32(0, true));
    total += n;
  }
  return Number(total);
}

/**
 * The io_uring descriptors each thread of process `pid` registered (IORING_REGISTER_RING_FDS:
 * kept by the thread, not in its descriptor table): each slot's index and struct file, by
 * thread, for the threads that registered some.
 */
export function registeredRingFds(
  btf: KernelBtf,
  pid: number,
): Map<number, { index: number; file: bigint }[]> {
  const rings = btf.member("io_uring_task", "registered_rings");
  const out = new Map<number, { index: number; file: bigint }[]>();
  const threads = [...threadPointers(btf, pid, "io_uring")].filter(([, tctx]) => tctx !== 0n);
  const got = readKernel(
    btf,
    threads.map(([, tctx]) => ({ address: tctx + BigInt(rings.offset), size: rings.size })),
  );
  threads.forEach(([tid], i) => {
    const v = new DataView(got[i].buffer);
    const slots = [];
    for (let p = 0; p + 8 <= got[i].length; p += 8) {
      const file = v.getBigUint64(p, true);
      if (file !== 0n) slots.push({ index: p / 8, file });
    }
    if (slots.length) out.set(tid, slots);
  });
  return out;
}

/** IORING_REGISTER_RING_FDS = 20. */
export const IORING_REGISTER_RING_FDS = 20;

/**
 * The argument of IORING_REGISTER_RING_FDS that registers descriptor `fd` of an instance as
 * the calling thread's ring descriptor `index` (struct io_uring_rsrc_update).
 */
export function ringFdUpdate(index: number, fd: number): Uint8Array {
  // struct io_uring_rsrc_update: offset (u32), resv (u32), data (u64).
  const u = new Uint8Array(16);
  const v = new DataView(u.buffer);
  v.setUint32(0, index, true);
  v.setBigUint64(8, BigInt(fd), true);
  return u;
}

/** The heads and tails in an instance's rings memory (struct io_rings), as the task sees them. */
export function ringHeads(
  btf: KernelBtf,
  rings: Uint8Array,
): { sqHead: number; sqTail: number; cqHead: number; cqTail: number } {
  const v = new DataView(rings.buffer, rings.byteOffset, rings.byteLength);
  const at = (path: string) => v.getUint32(btf.member("io_rings", path).offset, true);
  return {
    sqHead: at("sq.head"),
    sqTail: at("sq.tail"),
    cqHead: at("cq.head"),
    cqTail: at("cq.tail"),
  };
}

/** IORING_REGISTER_CLOCK: the clock the instance at `fd` waits by. */
export function registerRingClock(fd: number, clockid: number, what: string): void {
  const IORING_REGISTER_CLOCK = 29;
  const arg = new Uint8Array(16);
  new DataView(arg.buffer).setUint32(0, clockid, true);
  const ret = rawSyscall(NR.io_uring_register, fd, IORING_REGISTER_CLOCK, addressOf(arg), 0);
  if (ret < 0n) throw new Errno("io_uring_register(CLOCK)", lastErrno(), what);
}

/** IORING_REGISTER_EVENTFD(_ASYNC): eventfd `efd` signalled by the instance at `fd`. */
export function registerRingEventfd(fd: number, efd: number, async: boolean, what: string): void {
  const IORING_REGISTER_EVENTFD = 4, IORING_REGISTER_EVENTFD_ASYNC = 7;
  const arg = new Int32Array([efd]);
  const op = async ? IORING_REGISTER_EVENTFD_ASYNC : IORING_REGISTER_EVENTFD;
  const ret = rawSyscall(NR.io_uring_register, fd, op, addressOf(arg), 1);
  if (ret < 0n) throw new Errno("io_uring_register(EVENTFD)", lastErrno(), what);
}

/** IORING_REGISTER_FILES: `table`'s descriptors (-1: an empty slot) into the instance at `fd`. */
export function registerRingFiles(fd: number, table: Int32Array, what: string): void {
  const IORING_REGISTER_FILES = 2;
  const ret = rawSyscall(
    NR.io_uring_register,
    fd,
    IORING_REGISTER_FILES,
    addressOf(table),
    table.length,
  );
  if (ret < 0n) throw new Errno("io_uring_register(FILES)", lastErrno(), what);
}

/** Where struct io_uring_params holds the user addresses of IORING_SETUP_NO_MMAP's regions. */
export const RING_PARAMS = { sqUserAddr: 72, cqUserAddr: 112 } as const;

/** struct io_uring_params for io_uring_setup: entries, flags and (CQSIZE) CQ entries. */
export function ringParams(flags: number, sqEntries: number, cqEntries: number): Uint8Array {
  const p = new Uint8Array(120);
  const v = new DataView(p.buffer);
  v.setUint32(0, sqEntries, true);
  v.setUint32(4, cqEntries, true);
  v.setUint32(8, flags, true);
  return p;
}

/** Where the rings' fields lie, from the params io_uring_setup filled in. */
export interface RingOffsets {
  sqEntries: number;
  cqEntries: number;
  sq: { head: number; tail: number; array: number };
  cq: { head: number; tail: number };
}

/** The offsets io_uring_setup wrote into `params`. */
export function ringOffsets(params: Uint8Array): RingOffsets {
  const v = new DataView(params.buffer, params.byteOffset, params.byteLength);
  return {
    sqEntries: v.getUint32(0, true),
    cqEntries: v.getUint32(4, true),
    sq: { head: v.getUint32(40, true), tail: v.getUint32(44, true), array: v.getUint32(64, true) },
    cq: { head: v.getUint32(80, true), tail: v.getUint32(84, true) },
  };
}

/** The bytes of an instance's two regions (`rings` at IORING_OFF_SQ_RING, `sqes`). */
export interface RingMemory {
  rings: Uint8Array;
  sqes: Uint8Array;
}

/** Copies the regions of the instance open at `fd` here (`ringPages`, `sqePages` long). */
export function readRingMemory(fd: number, ringPages: number, sqePages: number): RingMemory {
  const copy = (pages: number, offset: bigint) =>
    pages
      ? withSharedMapping(fd, BigInt(pages * 4096), "io_uring rings", (b) => b.slice(), offset)
      : new Uint8Array();
  return { rings: copy(ringPages, IORING_OFF.SQ_RING), sqes: copy(sqePages, IORING_OFF.SQES) };
}

/** Copies the regions of an instance set up on task `pid`'s own memory (at `at`) here. */
export function readUserRings(
  pid: number,
  at: { rings: bigint; sqes: bigint },
  ringPages: number,
  sqePages: number,
): RingMemory {
  const path = `/proc/${pid}/mem`;
  const mem = open(path, O.RDONLY | O.CLOEXEC);
  try {
    const rings = new Uint8Array(ringPages * 4096), sqes = new Uint8Array(sqePages * 4096);
    if (pread(mem, rings, at.rings, path) !== rings.length) throw new Error(`${path}: short read`);
    if (pread(mem, sqes, at.sqes, path) !== sqes.length) throw new Error(`${path}: short read`);
    return { rings, sqes };
  } finally {
    close(mem);
  }
}

const IOSQE_CQE_SKIP_SUCCESS = 1 << 6;

/**
 * An instance's regions in the task's own memory (IORING_SETUP_NO_MMAP): the task and the
 * addresses of its rings and SQEs there, reached through /proc/PID/mem.
 */
export interface UserRings {
  pid: number;
  rings: bigint;
  sqes: bigint;
}

/** Local views of the two regions, and how what changes in them reaches the kernel's. */
interface RingViews {
  rings: Uint8Array;
  sqes: Uint8Array;
  /** Bytes [from, to) of a view written to where the kernel sees them (none for a mapping). */
  push(view: "rings" | "sqes", from: number, to: number): void;
  /** Bytes [from, to) of a view read from where the kernel writes them. */
  pull(view: "rings" | "sqes", from: number, to: number): void;
}

/**
 * Runs `fn` on the regions of the instance open at `fd` (`memory` gives their sizes): a shared
 * mapping of each, or, where they are the task's own memory (`user`), local copies kept in step
 * through /proc/PID/mem.
 */
function withRingViews(
  fd: number,
  memory: RingMemory,
  what: string,
  user: UserRings | undefined,
  fn: (v: RingViews) => void,
): void {
  if (!user) {
    withSharedMapping(fd, BigInt(memory.rings.length), what, (rings) => {
      withSharedMapping(fd, BigInt(memory.sqes.length), what, (sqes) => {
        fn({ rings, sqes, push: () => {}, pull: () => {} });
      }, IORING_OFF.SQES);
    }, IORING_OFF.SQ_RING);
    return;
  }
  const path = `/proc/${user.pid}/mem`;
  const mem = open(path, O.RDWR | O.CLOEXEC);
  try {
    const views = {
      rings: new Uint8Array(memory.rings.length),
      sqes: new Uint8Array(memory.sqes.length),
    };
    const base = { rings: user.rings, sqes: user.sqes };
    fn({
      ...views,
      push: (view, from, to) =>
        pwriteAll(mem, views[view].subarray(from, to), base[view] + BigInt(from), path),
      pull: (view, from, to) =>
        void pread(mem, views[view].subarray(from, to), base[view] + BigInt(from), path),
    });
  } finally {
    close(mem);
  }
}

/**
 * Brings the new instance open at `fd` (set up with `flags`, `offsets` as its params say) to
 * `sqHead` SQEs taken and `cqTail` CQEs posted, with IOSQE_IO_DRAIN disabled or not as
 * `drainDisabled` says, then writes `memory` over its regions (in the task's own memory where
 * `user` says: IORING_SETUP_NO_MMAP, zeroed before it was set up). NOPs are submitted from
 * here, each posting a CQE but sqHead - cqTail of them: those skip theirs
 * (IOSQE_CQE_SKIP_SUCCESS, which disables drains) or are dropped by the kernel (an index past
 * the SQ array's end). The CQ is emptied after each batch.
 */
export function advanceRing(
  fd: number,
  flags: number,
  offsets: RingOffsets,
  counters: { sqHead: number; cqTail: number; drainDisabled: boolean },
  memory: RingMemory,
  what: string,
  user?: UserRings,
): void {
  const { sqHead, cqTail } = counters;
  const skip = (sqHead - cqTail) >>> 0;
  if (skip > sqHead) throw new Error(`${what}: more completions than submissions`);
  // SQEs taken without a completion: NOPs that skip theirs where that was done (it disables
  // IOSQE_IO_DRAIN for good), else SQEs the kernel drops (an index past the SQ array's end).
  const drop = !counters.drainDisabled;
  if (counters.drainDisabled && !skip) {
    throw new Error(`${what}: drain disabled, and no SQE taken without a completion`);
  }
  if (drop && skip && flags & IORING_SETUP.NO_SQARRAY) {
    throw new Error(`${what}: SQEs dropped, and no SQ array to drop them by`);
  }
  const sqeSize = flags & IORING_SETUP.SQE128 ? 128 : 64;
  withRingViews(fd, memory, what, user, ({ rings, sqes, push, pull }) => {
    const rv = new DataView(rings.buffer, rings.byteOffset, rings.byteLength);
    const word = (off: number) => [off, off + 4] as const;
    // What setup wrote there (masks, sizes), where the task's memory holds the regions.
    pull("rings", 0, rings.length);
    const mask = offsets.sqEntries - 1;
    let done = 0, skipped = 0;
    while (done < sqHead) {
      // A dropped SQE ends the kernel's batch: one at a time.
      const dropping = drop && skipped < skip;
      const n = dropping ? 1 : Math.min(sqHead - done, offsets.sqEntries, offsets.cqEntries);
      for (let i = 0; i < n; i++) {
        const slot = (done + i) & mask;
        sqes.fill(0, slot * sqeSize, (slot + 1) * sqeSize);
        if (!drop && skipped < skip) {
          sqes[slot * sqeSize + 1] = IOSQE_CQE_SKIP_SUCCESS;
          skipped++;
        }
        if (!(flags & IORING_SETUP.NO_SQARRAY)) {
          rv.setUint32(offsets.sq.array + slot * 4, dropping ? offsets.sqEntries : slot, true);
        }
      }
      const first = done & mask, last = (done + n - 1) & mask;
      const [from, to] = last >= first ? [first, last + 1] : [0, offsets.sqEntries];
      push("sqes", from * sqeSize, to * sqeSize);
      if (!(flags & IORING_SETUP.NO_SQARRAY)) {
        push("rings", offsets.sq.array + from * 4, offsets.sq.array + to * 4);
      }
      rv.setUint32(offsets.sq.tail, (done + n) >>> 0, true);
      push("rings", ...word(offsets.sq.tail));
      const ret = rawSyscall(NR.io_uring_enter, fd, n, 0, 0, 0, 0);
      if (ret < 0n) throw new Errno("io_uring_enter", lastErrno(), what);
      pull("rings", ...word(offsets.sq.head));
      pull("rings", ...word(offsets.cq.tail));
      const taken = rv.getUint32(offsets.sq.head, true);
      if (taken !== (done + n) >>> 0 || Number(ret) !== (dropping ? 0 : n)) {
        throw new Error(`${what}: ${ret} of ${n} SQEs submitted (head ${taken})`);
      }
      if (dropping) skipped++;
      rv.setUint32(offsets.cq.head, rv.getUint32(offsets.cq.tail, true), true);
      push("rings", ...word(offsets.cq.head));
      done += n;
    }
    const head = rv.getUint32(offsets.sq.head, true), tail = rv.getUint32(offsets.cq.tail, true);
    if (head !== sqHead >>> 0 || tail !== cqTail >>> 0) {
      throw new Error(
        `${what}: its counters came to ${head}/${tail}, not ${sqHead}/${cqTail}`,
      );
    }
    rings.set(memory.rings);
    sqes.set(memory.sqes);
    push("rings", 0, rings.length);
    push("sqes", 0, sqes.length);
  });
}

/** A thread's io-wq: the CPUs its workers may run on, and those its cpuset allows. */
export interface IoWqCpus {
  cpus: number[];
  /** Its cpuset's effective CPUs (the io-wq's default there), where the kernel has cpusets. */
  cpuset?: number[];
}

/**
 * The io-wq CPUs of each thread of process `pid` that has an io-wq (made at its first
 * submission; IORING_REGISTER_IOWQ_AFF sets them, else they are its cpuset's at that time).
 */
export function ioWqCpus(btf: KernelBtf, pid: number): Map<number, IoWqCpus> {
  const threads = [...threadPointers(btf, pid, "io_uring")].filter(([, tctx]) => tctx !== 0n);
  const wqs = readKernel(
    btf,
    threads.map(([, tctx]) => ({
      address: tctx + BigInt(btf.member("io_uring_task", "io_wq").offset),
      size: 8,
    })),
  ).map(num);
  const out = new Map<number, IoWqCpus>();
  let cpusets: Map<number, bigint> | undefined;
  try {
    cpusets = threadPointers(btf, pid, "cgroups");
  } catch {
    // no cgroups: no cpuset
  }
  // Where a thread's cpuset is (its css_set's cpuset slot) and holds its CPUs, once.
  let cpusetAt: { slot: number; css: number; cpus: BtfMember } | undefined;
  try {
    cpusetAt = {
      slot: btf.member("css_set", "subsys").offset + 8 * btf.enumValue("cpuset_cgrp_id"),
      css: btf.member("cpuset", "css").offset,
      cpus: btf.member("cpuset", "effective_cpus"),
    };
  } catch {
    // this kernel has no cpusets
  }
  const wqMask = btf.member("io_wq", "cpu_mask");
  threads.forEach(([tid], i) => {
    if (wqs[i] === 0n) return;
    const cpus = cpuMask(btf, wqs[i], wqMask);
    let cpuset: number[] | undefined;
    const cset = cpusets?.get(tid);
    if (cset && cpusetAt) {
      const [css] = readKernel(btf, [{ address: cset + BigInt(cpusetAt.slot), size: 8 }]);
      if (num(css) !== 0n) {
        cpuset = cpuMask(btf, num(css) - BigInt(cpusetAt.css), cpusetAt.cpus);
      }
    }
    out.set(tid, { cpus, cpuset });
  });
  return out;
}

/** The CPUs of the cpumask_var_t `m` of the struct at `at` (inline, or a pointer to one). */
function cpuMask(btf: KernelBtf, at: bigint, m: BtfMember): number[] {
  let [bytes] = readKernel(btf, [{ address: at + BigInt(m.offset), size: m.size }]);
  if (m.pointer) {
    const longs = Math.ceil((Math.max(...possibleCpus()) + 1) / 64);
    [bytes] = readKernel(btf, [{ address: num(bytes), size: longs * 8 }]);
  }
  const cpus: number[] = [];
  bytes.forEach((b, i) => {
    for (let bit = 0; bit < 8; bit++) if (b & (1 << bit)) cpus.push(i * 8 + bit);
  });
  return cpus;
}

/** The CPUs that may ever be online (/sys/devices/system/cpu/possible). */
export function possibleCpus(): number[] {
  const text = Deno.readTextFileSync("/sys/devices/system/cpu/possible").trim();
  return text.split(",").flatMap((part) => {
    const [a, b] = part.split("-").map(Number);
    return Array.from({ length: (b ?? a) - a + 1 }, (_, i) => a + i);
  });
}
