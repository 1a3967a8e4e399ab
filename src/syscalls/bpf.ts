/**
 * Reading kernel memory with BPF iterators: the only way to see state the kernel shows nowhere
 * else (an io_uring instance's setup flags, the requests a task has in flight). Read only: the
 * programs read with bpf_probe_read_kernel (a range it cannot read comes back zero) and write
 * what they read out with bpf_seq_write.
 *
 * Three readers, each a program of a few dozen instructions assembled here:
 * - `fileObjects`, `openFiles`: for each descriptor of a task, the object its file's
 *   `private_data` points to, or the file itself (bpf_iter_task_file, its link given the
 *   task's PID); `threadPointers`: a pointer of each thread's (bpf_iter_task);
 * - `perCpuOffsets`: each online CPU's per-CPU offset, to read per-CPU counters with (found
 *   through the run queues);
 * - `readKernel`: ranges of kernel memory.
 * `readKernel` runs on bpf_iter_task for criu's own thread alone, so once. Offsets of kernel
 * structs come from the kernel's BTF (btf.ts).
 *
 * Call sequence of each: PROG_LOAD (tracing, TRACE_ITER, attached to the iterator) ->
 * LINK_CREATE (iterator info: the task) -> ITER_CREATE -> read until 0 -> close all three.
 *
 * @module
 */
import { addressOf, cString } from "./ffi.ts";
import { close, rawSyscall, syscall, tryRead } from "./process.ts";
import { NR } from "./syscall_numbers.ts";
import { EAGAIN, Errno } from "./errno.ts";
import type { KernelBtf } from "./btf.ts";

const CMD = { PROG_LOAD: 5, LINK_CREATE: 28, ITER_CREATE: 33 } as const;
const PROG_TYPE_TRACING = 26;
const TRACE_ITER = 28;
const HELPER = { probe_read_kernel: 113, seq_write: 127 } as const;
/** The most a program keeps on its stack before writing it out. */
const RECORD_MAX = 448;

/** One BPF instruction: opcode, registers, offset, immediate. */
type Insn = [op: number, dst: number, src: number, off: number, imm: number];

const R0 = 0, R1 = 1, R2 = 2, R3 = 3, R6 = 6, R7 = 7, R8 = 8, R10 = 10;
const asm = {
  movReg: (dst: number, src: number): Insn => [0xbf, dst, src, 0, 0],
  movImm: (dst: number, imm: number): Insn => [0xb7, dst, 0, 0, imm],
  addImm: (dst: number, imm: number): Insn => [0x07, dst, 0, 0, imm],
  ldxDw: (dst: number, src: number, off: number): Insn => [0x79, dst, src, off, 0],
  ldxW: (dst: number, src: number, off: number): Insn => [0x61, dst, src, off, 0],
  stxDw: (dst: number, off: number, src: number): Insn => [0x7b, dst, src, off, 0],
  stxW: (dst: number, off: number, src: number): Insn => [0x63, dst, src, off, 0],
  stDw: (dst: number, off: number, imm: number): Insn => [0x7a, dst, 0, off, imm],
  jeqImm: (dst: number, imm: number, skip: number): Insn => [0x15, dst, 0, skip, imm],
  call: (helper: number): Insn => [0x85, 0, 0, 0, helper],
  exit: (): Insn => [0x95, 0, 0, 0, 0],
  /** A 64-bit immediate (two slots). */
  ldImm64: (dst: number, value: bigint): Insn[] => [
    [0x18, dst, 0, 0, Number(BigInt.asIntN(32, value))],
    [0, 0, 0, 0, Number(BigInt.asIntN(32, value >> 32n))],
  ],
};

function encode(prog: Insn[]): Uint8Array {
  const out = new Uint8Array(prog.length * 8);
  const v = new DataView(out.buffer);
  prog.forEach(([op, dst, src, off, imm], i) => {
    v.setUint8(i * 8, op);
    v.setUint8(i * 8 + 1, (src << 4) | dst);
    v.setInt16(i * 8 + 2, off, true);
    v.setInt32(i * 8 + 4, imm, true);
  });
  return out;
}

function bpf(cmd: number, attr: Uint8Array, what: string): number {
  return Number(syscall(NR.bpf, "bpf", what, cmd, addressOf(attr), attr.byteLength));
}

/** An iterator: its kernel function, and the task its link is given (by PID or by TID). */
interface IterTarget {
  func: "bpf_iter_task" | "bpf_iter_task_file";
  pid?: number;
  tid?: number;
}

/**
 * Programs kept loaded for the life of the process, by iterator and code: those run again and
 * again (mapsVersion, several times per process dumped), whose load (the verifier) costs
 * milliseconds where a run costs microseconds. Only programs whose code does not vary.
 */
const kept = new Map<string, number>();

/**
 * Loads `prog` on iterator `target` (or takes it loaded, with `keep`), runs it once through,
 * and returns what it wrote.
 */
function runIterator(
  btf: KernelBtf,
  target: IterTarget,
  prog: Insn[],
  what: string,
  keep = false,
): Uint8Array {
  const code = encode(prog);
  const key = keep ? `${target.func}:${code.join(",")}` : undefined;
  const loaded = key === undefined ? undefined : kept.get(key);
  const progFd = loaded ?? loadIterator(btf, target, code, what);
  if (key !== undefined) kept.set(key, progFd);
  try {
    return iterate(target, progFd, what);
  } finally {
    if (key === undefined) close(progFd);
  }
}

/** Loads program `code` for iterator `target`; returns its descriptor. */
function loadIterator(btf: KernelBtf, target: IterTarget, code: Uint8Array, what: string): number {
  const license = cString("GPL");
  const logBuf = new Uint8Array(16384);
  const load = new Uint8Array(128);
  const lv = new DataView(load.buffer);
  lv.setUint32(0, PROG_TYPE_TRACING, true);
  lv.setUint32(4, code.length / 8, true);
  lv.setBigUint64(8, BigInt(addressOf(code)), true);
  lv.setBigUint64(16, BigInt(addressOf(license)), true);
  lv.setUint32(24, 1, true); // log_level: the verifier says why, if it refuses
  lv.setUint32(28, logBuf.byteLength, true);
  lv.setBigUint64(32, BigInt(addressOf(logBuf)), true);
  load.set(cString("criu_reader").subarray(0, 15), 48);
  lv.setUint32(68, TRACE_ITER, true);
  lv.setUint32(108, btf.funcId(target.func), true);
  try {
    // The verifier gives up with EAGAIN when a signal comes (criu's SIGCHLD, say): again.
    for (let attempt = 1;; attempt++) {
      try {
        return bpf(CMD.PROG_LOAD, load, what);
      } catch (e) {
        if (!(e instanceof Errno && e.errno === EAGAIN) || attempt === 5) throw e;
      }
    }
  } catch (e) {
    const log = new TextDecoder().decode(logBuf.subarray(0, logBuf.indexOf(0))).trim();
    throw new Error(`${(e as Error).message}${log ? ` (${log.split("\n").at(-1)})` : ""}`, {
      cause: e,
    });
  }
}

/** Runs loaded iterator program `progFd` on `target` once through; returns what it wrote. */
function iterate(target: IterTarget, progFd: number, what: string): Uint8Array {
  const fds: number[] = [];
  try {
    // union bpf_iter_link_info: task { tid, pid, pid_fd }.
    const info = new Uint8Array(16);
    const iv = new DataView(info.buffer);
    iv.setUint32(0, target.tid ?? 0, true);
    iv.setUint32(4, target.pid ?? 0, true);
    const link = new Uint8Array(64);
    const kv = new DataView(link.buffer);
    kv.setUint32(0, progFd, true);
    kv.setUint32(8, TRACE_ITER, true);
    kv.setBigUint64(16, BigInt(addressOf(info)), true);
    kv.setUint32(24, info.byteLength, true);
    fds.push(bpf(CMD.LINK_CREATE, link, what));
    const iter = new Uint8Array(8);
    new DataView(iter.buffer).setUint32(0, fds[0], true);
    fds.push(bpf(CMD.ITER_CREATE, iter, what));
    const parts: Uint8Array[] = [];
    const chunk = new Uint8Array(8192);
    for (;;) {
      const n = tryRead(fds[1], chunk);
      if (n < 0) throw new Error(`${what}: reading the iterator failed (errno ${-n})`);
      if (n === 0) break;
      parts.push(chunk.slice(0, n));
    }
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  } finally {
    for (const fd of fds.reverse()) close(fd);
  }
}

/** The tail of every program: write the record at fp-`size` out, return 0. */
function writeRecord(btf: KernelBtf, ctx: number, ctxMeta: string, size: number): Insn[] {
  return [
    asm.ldxDw(R1, ctx, btf.member(ctxMeta, "meta").offset),
    asm.ldxDw(R1, R1, btf.member("bpf_iter_meta", "seq").offset),
    asm.movReg(R2, R10),
    asm.addImm(R2, -size),
    asm.movImm(R3, size),
    asm.call(HELPER.seq_write),
  ];
}

/** A jump offset that {@link taskProgram} points at its exit. */
const TO_EXIT = -0x8000;

/**
 * A program on bpf_iter_task: R6 the context, R7 the task visited (none: nothing written), then
 * `body`, then the record it left at fp-`size` written out. A jump in `body` with offset
 * TO_EXIT goes to the exit, writing nothing.
 */
function taskProgram(btf: KernelBtf, body: Insn[], size: number): Insn[] {
  const prog: Insn[] = [
    asm.movReg(R6, R1),
    asm.ldxDw(R7, R6, btf.member("bpf_iter__task", "task").offset),
    asm.jeqImm(R7, 0, TO_EXIT),
    ...body.map((insn): Insn => [...insn]),
    ...writeRecord(btf, R6, "bpf_iter__task", size),
  ];
  prog.forEach((insn, i) => {
    if (insn[3] === TO_EXIT) insn[3] = prog.length - i - 1;
  });
  prog.push(asm.movImm(R0, 0), asm.exit());
  return prog;
}

/**
 * One record per visit of iterator `func` over process `pid`: a u32 key and a u64 value, both
 * read from the object the iterator's context points to (at `object` in the context), the key
 * from the context itself where `keyInContext`. By key.
 */
function keyedValues(
  btf: KernelBtf,
  func: IterTarget["func"],
  pid: number,
  at: { object: number; key: number; keyInContext: boolean; value: number | "object" },
  what: string,
): Map<number, bigint> {
  const ctxName = func === "bpf_iter_task" ? "bpf_iter__task" : "bpf_iter__task_file";
  const prog: Insn[] = [
    asm.movReg(R6, R1),
    asm.ldxDw(R7, R6, at.object),
    asm.jeqImm(R7, 0, 0), // patched: to the exit
    asm.ldxW(R2, at.keyInContext ? R6 : R7, at.key),
    asm.stDw(R10, -16, 0),
    asm.stxW(R10, -16, R2),
    ...(at.value === "object" ? [asm.movReg(R8, R7)] : [asm.ldxDw(R8, R7, at.value)]),
    asm.stxDw(R10, -8, R8),
    ...writeRecord(btf, R6, ctxName, 16),
  ];
  prog[2][3] = prog.length - 3;
  prog.push(asm.movImm(R0, 0), asm.exit());
  const out = runIterator(btf, { func, pid }, prog, what);
  const v = new DataView(out.buffer);
  const found = new Map<number, bigint>();
  for (let p = 0; p + 16 <= out.length; p += 16) {
    found.set(v.getUint32(p, true), v.getBigUint64(p + 8, true));
  }
  return found;
}

/**
 * The object behind each descriptor of task `pid`: its file's `private_data` (an io_uring
 * instance's `struct io_ring_ctx`, say), by descriptor number.
 */
export function fileObjects(btf: KernelBtf, pid: number): Map<number, bigint> {
  return keyedValues(btf, "bpf_iter_task_file", pid, {
    object: btf.member("bpf_iter__task_file", "file").offset,
    key: btf.member("bpf_iter__task_file", "fd").offset,
    keyInContext: true,
    value: btf.member("file", "private_data").offset,
  }, `reading the files of task ${pid} (BPF)`);
}

/** The open file (its struct file) behind each descriptor of task `pid`, by descriptor. */
export function openFiles(btf: KernelBtf, pid: number): Map<number, bigint> {
  return keyedValues(btf, "bpf_iter_task_file", pid, {
    object: btf.member("bpf_iter__task_file", "file").offset,
    key: btf.member("bpf_iter__task_file", "fd").offset,
    keyInContext: true,
    value: "object",
  }, `reading the files of task ${pid} (BPF)`);
}

/**
 * A pointer member (`path`, as "io_uring") of each thread of process `pid`, by thread id as the
 * kernel's own PID namespace numbers it.
 */
export function threadPointers(btf: KernelBtf, pid: number, path: string): Map<number, bigint> {
  return keyedValues(btf, "bpf_iter_task", pid, {
    object: btf.member("bpf_iter__task", "task").offset,
    key: btf.member("task_struct", "pid").offset,
    keyInContext: false,
    value: btf.member("task_struct", path).offset,
  }, `reading the threads of task ${pid} (BPF)`);
}

/**
 * The id of process `pid`'s main thread as the kernel's own PID namespace numbers it: the key
 * {@link threadPointers} gives it (criu's namespace may number it otherwise).
 */
export function mainThreadKey(btf: KernelBtf, pid: number): number {
  const at = {
    object: btf.member("bpf_iter__task", "task").offset,
    key: btf.member("task_struct", "pid").offset,
    keyInContext: false,
  };
  const what = `reading the threads of task ${pid} (BPF)`;
  const tasks = keyedValues(btf, "bpf_iter_task", pid, { ...at, value: "object" }, what);
  const leaders = keyedValues(btf, "bpf_iter_task", pid, {
    ...at,
    value: btf.member("task_struct", "group_leader").offset,
  }, what);
  for (const [tid, task] of tasks) if (leaders.get(tid) === task) return tid;
  throw new Error(`${what}: no main thread found`);
}

/** A process's memory map (`struct mm_struct`) and its count of changes (see mapsVersion). */
export interface MapsVersion {
  /** The address of its mm_struct. */
  mm: bigint;
  /** Its `mm_lock_seq`: odd while a writer holds the mmap lock, two more after each. */
  seq: number;
}

/**
 * Process `pid`'s memory map and the sequence count of its mmap lock, read together: the count
 * goes up by two for each writer of the lock, and no mapping is made, moved, removed or has its
 * flags or protections changed but under it. Undefined if it has no memory map (it is exiting).
 */
export function mapsVersion(btf: KernelBtf, pid: number): MapsVersion | undefined {
  const prog = taskProgram(btf, [
    asm.ldxDw(R8, R7, btf.member("task_struct", "mm").offset),
    asm.jeqImm(R8, 0, TO_EXIT),
    asm.ldxW(R2, R8, btf.member("mm_struct", "mm_lock_seq").offset),
    asm.stDw(R10, -8, 0),
    asm.stxW(R10, -8, R2),
    asm.stxDw(R10, -16, R8),
  ], 16);
  const out = runIterator(
    btf,
    { func: "bpf_iter_task", pid },
    prog,
    `reading the memory map of task ${pid} (BPF)`,
    true,
  );
  // A record per thread, all of one memory map: the first.
  if (out.length < 16) return undefined;
  const v = new DataView(out.buffer, out.byteOffset);
  return { mm: v.getBigUint64(0, true), seq: v.getUint32(8, true) };
}

function gettid(): number {
  return Number(rawSyscall(NR.gettid));
}

/**
 * Each online CPU's per-CPU offset (`__per_cpu_offset[cpu]`), by CPU: what is added to a
 * per-CPU pointer to reach that CPU's copy.
 *
 * This kernel's symbol table holds no data symbols, so no program can name a per-CPU variable.
 * The offsets are found instead through the run queues (`struct rq`, per-CPU `runqueues`): a
 * task's `se.cfs_rq->rq` is its CPU's run queue, and every online CPU runs tasks of its own.
 * Each CPU's `this_cpu_off` holds that CPU's offset, and lies as far from its run queue as the
 * two variables lie apart in the per-CPU section (BTF). Every run queue less its CPU's offset
 * must give one same address (`runqueues` itself): checked.
 */
export function perCpuOffsets(btf: KernelBtf): Map<number, bigint> {
  const prog = taskProgram(btf, [
    asm.ldxDw(R7, R7, btf.member("task_struct", "se.cfs_rq").offset),
    asm.jeqImm(R7, 0, TO_EXIT),
    asm.ldxDw(R7, R7, btf.member("cfs_rq", "rq").offset),
    asm.jeqImm(R7, 0, TO_EXIT),
    asm.stxDw(R10, -8, R7),
  ], 8);
  const what = "reading the per-CPU offsets (BPF)";
  const out = runIterator(btf, { func: "bpf_iter_task" }, prog, what);
  const v = new DataView(out.buffer);
  const queues = new Set<bigint>();
  for (let p = 0; p + 8 <= out.length; p += 8) queues.add(v.getBigUint64(p, true));
  const rqs = [...queues];
  const cpu = btf.member("rq", "cpu");
  const apart = BigInt(
    btf.sectionOffset(".data..percpu", "this_cpu_off") -
      btf.sectionOffset(".data..percpu", "runqueues"),
  );
  const read = readKernel(btf, [
    ...rqs.map((rq) => ({ address: rq + BigInt(cpu.offset), size: 4 })),
    ...rqs.map((rq) => ({ address: rq + apart, size: 8 })),
  ]);
  const offsets = new Map<number, bigint>();
  let base: bigint | undefined;
  rqs.forEach((rq, i) => {
    const n = new DataView(read[i].buffer).getUint32(0, true);
    const off = new DataView(read[rqs.length + i].buffer).getBigUint64(0, true);
    if (base !== undefined && rq - off !== base || offsets.has(n) && offsets.get(n) !== off) {
      throw new Error(`${what}: the run queues disagree (CPU ${n})`);
    }
    base = rq - off;
    offsets.set(n, off);
  });
  if (!offsets.size) throw new Error(`${what}: no run queue found`);
  return offsets;
}

/** A range of kernel memory. */
export interface KernelRange {
  address: bigint;
  size: number;
}

/** Records one program writes out at most (its output must fit the iterator's 32 KiB buffer). */
const RECORDS_PER_PROGRAM = 64;

/**
 * The bytes of each range (zeros where the kernel cannot read it). A range of any size is read
 * in pieces of a record's size; one program writes many records.
 */
export function readKernel(btf: KernelBtf, ranges: readonly KernelRange[]): Uint8Array[] {
  const out = ranges.map((r) => new Uint8Array(r.size));
  // Pieces of a record's size at most, each with the range and place it fills.
  const pieces: { address: bigint; size: number; range: number; at: number }[] = [];
  ranges.forEach((r, range) => {
    for (let at = 0; at < r.size; at += RECORD_MAX) {
      const size = Math.min(RECORD_MAX, r.size - at);
      pieces.push({ address: r.address + BigInt(at), size, range, at });
    }
  });
  // Records: as many pieces as one holds.
  const records: (typeof pieces)[] = [];
  let size = RECORD_MAX;
  for (const piece of pieces) {
    if (size + align8(piece.size) > RECORD_MAX) {
      records.push([]);
      size = 0;
    }
    records.at(-1)!.push(piece);
    size += align8(piece.size);
  }
  for (let r = 0; r < records.length; r += RECORDS_PER_PROGRAM) {
    const batch = records.slice(r, r + RECORDS_PER_PROGRAM);
    const prog: Insn[] = [asm.movReg(R6, R1)];
    let total = 0;
    for (const record of batch) {
      const size = record.reduce((n, p) => n + align8(p.size), 0);
      // The slack after a piece of an odd size is written out too: all zero first.
      for (let z = -size; z < 0; z += 8) prog.push(asm.stDw(R10, z, 0));
      let at = -size;
      for (const p of record) {
        prog.push(
          asm.movReg(R1, R10),
          asm.addImm(R1, at),
          asm.movImm(R2, p.size),
          ...asm.ldImm64(R3, p.address),
          asm.call(HELPER.probe_read_kernel),
        );
        at += align8(p.size);
      }
      prog.push(...writeRecord(btf, R6, "bpf_iter__task", size));
      total += size;
    }
    prog.push(asm.movImm(R0, 0), asm.exit());
    const rec = runIterator(
      btf,
      { func: "bpf_iter_task", tid: gettid() },
      prog,
      "reading kernel memory (BPF)",
    );
    if (rec.length < total) throw new Error("reading kernel memory (BPF): nothing read");
    let at = 0;
    for (const record of batch) {
      for (const p of record) {
        out[p.range].set(rec.subarray(at, at + p.size), p.at);
        at += align8(p.size);
      }
    }
  }
  return out;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}
