/**
 * The page copier blob (parasite/copier.c) run in criu's own process: the memory its jobs and
 * queue live in (one SharedArrayBuffer each, at the offsets the blob reads), and its three
 * calls. A copier is a call of the blob on a thread of Deno's blocking pool (a nonblocking
 * foreign call): no JavaScript runs there, so it is ready at once and costs the dumper nothing
 * to start.
 *
 * @module
 */
import { Errno } from "./errno.ts";
import { addressOf } from "./ffi.ts";
import { mapBlobText } from "./blob_text.ts";
import { rawSyscall } from "./process.ts";
import { NR } from "./syscall_numbers.ts";

// struct job (parasite/copier.c): s32 words, then u64 words, then the path, then the chunks.
const NEXT = 0, STOP = 1, INFLIGHT = 2, WRITEBACK = 3; // s32 indices
const W = {
  nchunks: 2,
  pid: 3,
  fd: 4,
  lenient: 5,
  nextJob: 6,
  written: 7,
  err: 8,
  errKind: 9,
  errAt: 10,
  errGot: 11,
  errLen: 12,
} as const; // u64 indices
const PATH_AT = 104, PATH_BYTES = 24, CHUNKS_AT = 128;
// struct queue: s32 posted, s32 closed, u64 first job.
const POSTED = 0, CLOSED = 1, FIRST = 1;
const FUTEX_WAKE_PRIVATE = 129;
const OP_COPIER = 0n, OP_HELP = 1n, OP_WAIT = 2n;

const NOW = { parameters: ["i64", "u64", "u64"], result: "i64" } as const;
const OFF = { ...NOW, nonblocking: true } as const;
let entry:
  | { now: Deno.UnsafeFnPointer<typeof NOW>; off: Deno.UnsafeFnPointer<typeof OFF> }
  | undefined;

/** The blob, mapped once for the life of the process (a copier may run in it until exit). */
function blob(): NonNullable<typeof entry> {
  if (!entry) {
    const ptr = Deno.UnsafePointer.create(mapBlobText("copier").text)!;
    entry = {
      now: new Deno.UnsafeFnPointer(ptr as Deno.PointerObject<typeof NOW>, NOW),
      off: new Deno.UnsafeFnPointer(ptr as Deno.PointerObject<typeof OFF>, OFF),
    };
  }
  return entry;
}

function wake(word: Int32Array, index: number): void {
  const at = addressOf(word) + BigInt(index * 4);
  rawSyscall(NR.futex, at, FUTEX_WAKE_PRIVATE, 0x7fffffff, 0, 0, 0);
}

/** Why a job failed: the first failure of any of its participants. */
export interface CopyFailure {
  /** What failed: reading the task's memory, writing the file, opening /proc/PID/mem. */
  kind: "read" | "write" | "open";
  errno: number;
  /** The address in the task (read) or the offset in the file (write). */
  at: bigint;
  /** Bytes got of those wanted, for a short read or write. */
  got: number;
  wanted: number;
}

/**
 * One pages file to fill from a stopped task: its chunks (each its offset in the file, first
 * iovec, iovec count and bytes) and iovecs (address in the task, length), in the blob's
 * layout.
 */
export class CopyJobMemory {
  /** The job's memory, as the blob reads it. */
  readonly shared: SharedArrayBuffer;
  readonly #s32: Int32Array;
  readonly #u64: BigUint64Array;
  readonly #chunks: number;

  /**
   * A job of `chunks` and `iovs` from task `pid` into file `fd`; with `writeback` (a file on a
   * disk), each chunk's writeback is started as soon as it is written.
   */
  constructor(
    pid: number,
    fd: number,
    lenient: boolean,
    chunks: number[],
    iovs: bigint[],
    writeback = false,
  ) {
    this.#chunks = chunks.length / 4;
    this.shared = new SharedArrayBuffer(CHUNKS_AT + chunks.length * 8 + iovs.length * 8);
    this.#s32 = new Int32Array(this.shared, 0, 4);
    this.#u64 = new BigUint64Array(this.shared);
    const u = this.#u64;
    u[W.nchunks] = BigInt(this.#chunks);
    u[W.pid] = BigInt(pid);
    u[W.fd] = BigInt(fd);
    u[W.lenient] = lenient ? 1n : 0n;
    this.#s32[WRITEBACK] = writeback ? 1 : 0;
    const path = new TextEncoder().encode(`/proc/${pid}/mem`);
    new Uint8Array(this.shared, PATH_AT, PATH_BYTES).set(path.subarray(0, PATH_BYTES - 1));
    u.set(chunks.map(BigInt), CHUNKS_AT / 8);
    u.set(iovs, CHUNKS_AT / 8 + chunks.length);
  }

  /** The address the blob is given. */
  get address(): bigint {
    return addressOf(this.#s32);
  }

  /** Bytes written so far, by everyone. */
  get written(): number {
    return Number(Atomics.load(this.#u64, W.written));
  }

  /** Whether chunks are left for someone to take. */
  get left(): boolean {
    return !Atomics.load(this.#s32, STOP) && Atomics.load(this.#s32, NEXT) < this.#chunks;
  }

  /** The first failure, once the job is done. */
  get failure(): CopyFailure | undefined {
    const u = this.#u64;
    const errno = Number(Atomics.load(u, W.err));
    if (!errno) return undefined;
    const kind = (["read", "write", "open"] as const)[Number(u[W.errKind]) - 1] ?? "read";
    return { kind, errno, at: u[W.errAt], got: Number(u[W.errGot]), wanted: Number(u[W.errLen]) };
  }

  /** Tells every participant to take no more chunks. */
  stop(): void {
    Atomics.store(this.#s32, STOP, 1);
    wake(this.#s32, INFLIGHT); // a waiter of a job nobody copies
  }

  /** Takes the chunks left on this thread with `buf` (CHUNK bytes at least); the bytes written. */
  help(buf: Uint8Array): number {
    return Number(blob().now.call(OP_HELP, this.address, addressOf(buf)));
  }

  /** Resolves once nothing is left to take and no chunk is being copied. */
  async done(): Promise<void> {
    await blob().off.call(OP_WAIT, this.address, 0n);
  }

  /** Links `next` after this job, for the copiers that come to its end. */
  link(next: CopyJobMemory): void {
    Atomics.store(this.#u64, W.nextJob, next.address);
  }
}

/** The jobs posted to the copiers, in order; each copier takes them one after another. */
export class CopyQueue {
  readonly #mem = new SharedArrayBuffer(16);
  readonly #s32 = new Int32Array(this.#mem, 0, 2);
  readonly #u64 = new BigUint64Array(this.#mem);
  /** Every job posted stays here (a copier reads the last one's link) until the queue is gone. */
  readonly #jobs: CopyJobMemory[] = [];
  readonly #copiers: Promise<void>[] = [];

  /** Posts `job`: the copiers take its chunks once they are done with the jobs before. */
  post(job: CopyJobMemory): void {
    const last = this.#jobs.at(-1);
    this.#jobs.push(job);
    if (last) last.link(job);
    else Atomics.store(this.#u64, FIRST, job.address);
    Atomics.add(this.#s32, POSTED, 1);
    wake(this.#s32, POSTED);
  }

  /** Starts a copier with buffer `buf` (CHUNK bytes at least, kept until it ends). */
  startCopier(buf: Uint8Array): void {
    const run = blob().off.call(OP_COPIER, addressOf(this.#s32), addressOf(buf));
    // The memory the copier reads is held until it has returned.
    const jobs = this.#jobs, mem = this.#mem;
    this.#copiers.push(run.then(() => void [jobs, mem, buf]));
  }

  /** Closes the queue: each copier returns once done with the jobs it has; resolves then. */
  close(): Promise<void> {
    Atomics.store(this.#s32, CLOSED, 1);
    Atomics.add(this.#s32, POSTED, 1);
    wake(this.#s32, POSTED);
    return Promise.all(this.#copiers).then(() => {});
  }
}

/** The error of a failed job, naming the file or the task's memory. */
export function copyError(f: CopyFailure, pid: number, path: string): Errno {
  const at = `0x${f.at.toString(16)}`;
  switch (f.kind) {
    case "open":
      return new Errno("open", f.errno, `/proc/${pid}/mem`);
    case "write":
      return new Errno("pwrite", f.errno, `${path} at ${f.at} (${f.got} of ${f.wanted} bytes)`);
    default:
      return new Errno(
        "read",
        f.errno,
        `/proc/${pid}/mem at ${at} (${f.got} of ${f.wanted} bytes)`,
      );
  }
}
