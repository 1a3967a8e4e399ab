/**
 * System calls executed inside a seized task.
 *
 * Call sequence (who owns what):
 * ```
 * rs = new RemoteSyscalls(task, anchor)        anchor: the `syscall` instruction the task runs
 *                                              (one of its own, or offset 0 of a parasite
 *                                              area) and the registers that differ from the
 *                                              task's own around it (r12 = heal block, sp)
 * rs.call(NR.x, ...)                           regs := task's regs + anchor + {ax: nr, args,
 *                                              orig_ax: -1}; on the first call, after the
 *                                              doorway's enter (when the scope has one), then
 *                                              every signal blocked; PTRACE_SYSCALL to the entry
 *                                              stop, PTRACE_SYSCALL to the exit stop; read ax
 * rs.batch(calls)                              many calls that need no undoing: in a parasite
 *                                              area the batch blob runs them all (run, wait
 *                                              for its flag, PTRACE_INTERRUPT), its lifeline
 *                                              leading it home should criu die meanwhile
 * rs.scratch(size)                             memory for arguments: carved from an arena in
 *                                              the area, or an injected mmap, unmapped on close
 * rs.pipe() / rs.closeFd(fd)                   descriptors made in the task, recorded in its
 *                                              heal table while they exist
 * close                                        scratch unmapped; PTRACE_INTERRUPT + PTRACE_CONT
 *                                              to the interrupt stop; the doorway's leave (when
 *                                              the scope has one); then the task's own mask
 *                                              and registers back, so that it leaves that stop
 *                                              (and restarts an interrupted syscall) exactly as
 *                                              if we had never been there
 * ```
 * Safety when criu dies: the registers of a task that criu works in always point to code that
 * takes it home on its own (parasite/heal.c): the anchor is set before the mask is changed,
 * and the task's own registers come back only after the mask did. Tasks being restored have
 * no home: they are traced with PTRACE_O_EXITKILL instead and die with criu.
 *
 * Precondition: the task is seized and sits in its interrupt stop; calls come from the tracer
 * thread.
 *
 * @module
 */
import { BLOBS } from "../../parasite/blobs_gen.ts";
import {
  close,
  cString,
  nap,
  NR,
  O,
  pidfdGetfd,
  pidfdOpen,
  PTRACE_EVENT_STOP,
  ptraceCont,
  ptraceGetEventMsg,
  ptraceGetRegs,
  ptraceInterrupt,
  ptraceSetRegs,
  ptraceSetSigmask,
  ptraceSyscall,
  readRemote,
  REG,
  type RegName,
  remoteAdd,
  type RemotePtr,
  remotePtr,
  SHM,
  tryWaitPid,
  waitPid,
  writeRemote,
} from "../syscalls/mod.ts";
import type { ProcMap } from "./proc.ts";
import { listFds, NoSuchTaskError } from "./proc.ts";
import type { SeizedTask } from "./seize.ts";
import { waitForInterruptStop } from "./seize.ts";
import { findGadgets } from "./gadgets.ts";
import type { HealTable } from "./heal_table.ts";
import { decodeBase64 } from "../util/base64.ts";

const SIGTRAP = 5;
/** PTRACE_EVENT_FORK, _VFORK, _CLONE. */
const FORK_EVENTS = new Set([1, 2, 3]);
/** Every signal but SIGKILL (9) and SIGSTOP (19), which cannot be blocked anyway. */
const BLOCK_ALL = ~((1n << 8n) | (1n << 18n)) & 0xffffffffffffffffn;
const PROT = { READ: 1, WRITE: 2, EXEC: 4 } as const;
const MAP = { PRIVATE: 2, ANONYMOUS: 0x20, FIXED_NOREPLACE: 0x100000 } as const;

/**
 * Test hook: `CRIU_TEST_DIE_AT=N` makes criu kill itself with SIGKILL at the Nth ptrace stop of
 * injected syscalls (entry and exit stops both count), to prove that tasks heal.
 */
const dieAt = Number(Deno.env.get("CRIU_TEST_DIE_AT") ?? 0);
let stops = 0;

/**
 * Test hooks: `CRIU_TEST_DIE_AT=batch` kills criu while the batch blob runs in a task,
 * `thread-batch` while it runs in a thread other than the leader (inside the parasite area).
 */
const dieInBatch = Deno.env.get("CRIU_TEST_DIE_AT") === "batch";
const dieInThreadBatch = Deno.env.get("CRIU_TEST_DIE_AT") === "thread-batch";

/** One syscall of a {@link RemoteSyscalls.batch}: with a name, a failure throws. */
export interface RemoteCall {
  nr: number;
  args: (bigint | number)[];
  /** What a failure is reported as; without it the raw result is returned whatever it is. */
  name?: string;
}

/**
 * Runs a list of calls in a task in one go, as blob code of its own: each call's raw result
 * (-errno on failure), in order. A scope given one ({@link RemoteSyscalls.batchWith}) runs its
 * batches with it where it has no parasite area.
 */
export type BatchRunner = (calls: readonly RemoteCall[]) => bigint[];

/** The batch blob's layout (parasite/batch.c): its arguments, each call, its stack. */
const BATCH = { ARGS: 48, DONE: 16, STACK: 512 } as const;
/** Bytes of one call in a blob's list: nr, six arguments, the result (u64 words). */
export const CALL_SIZE = 64;
/** Fewer calls than this are injected one by one (the blob's set-up costs about as much). */
const BATCH_MIN = 4;
/** The same for a scope's runner (the restorer's, set up already: a run costs about a call). */
const RUNNER_MIN = 2;
let batchCode: Uint8Array | undefined;

/** `calls` as a blob's list of them (struct call[], results zero) at `at` of `image`. */
export function encodeCalls(calls: readonly RemoteCall[], image: Uint8Array, at = 0): void {
  const words = new BigInt64Array(image.buffer, image.byteOffset + at, calls.length * 8);
  calls.forEach((c, i) => {
    words[i * 8] = BigInt(c.nr);
    c.args.forEach((a, j) => (words[i * 8 + 1 + j] = BigInt.asIntN(64, BigInt(a))));
  });
}

/** The results of `n` calls from a blob's list of them, read from task `pid` at `at`. */
export function readCallResults(pid: number, at: RemotePtr, n: number): bigint[] {
  const table = new BigInt64Array(n * 8);
  readRemote(pid, at, new Uint8Array(table.buffer));
  return Array.from({ length: n }, (_, i) => table[i * 8 + 7]);
}

/** Where injected syscalls run, and the registers that differ from the task's own there. */
export interface Anchor {
  /** Address of the `syscall` instruction the task executes. */
  site: RemotePtr;
  /** Registers set for every call besides the syscall's own (e.g. r12, sp). */
  regs?: Partial<Record<RegName, bigint>>;
}

/** What a healing task needs to reach heal from a blob: heal's address and its heal block. */
export interface HealEntry {
  entry: RemotePtr;
  block: bigint;
}

/** Options of a {@link RemoteSyscalls} scope. */
export interface RemoteSyscallsOptions {
  /** The process's heal table: descriptors and mappings made are recorded there. */
  table?: HealTable;
  /** Memory in the task to carve small scratch buffers from (not unmapped by the scope). */
  arena?: { at: RemotePtr; size: number };
  /** Runs once the task is back in its own registers and mask. */
  onClose?: () => void;
  /**
   * A way in and out of the anchor: `enter` runs at the first call (or blob), before the
   * registers first point to the anchor; `leave` runs at close, in the interrupt stop, before
   * the task's own mask and registers come back. Each may set registers that also lead home.
   */
  doorway?: { enter: () => void; leave: () => void };
  /**
   * Where a scratch mapping of `size` bytes is to go: with a heal table, mappings get a known
   * address so that they are recorded before they exist.
   */
  place?: (size: number) => bigint;
  /**
   * The read end in the task of a lifeline another scope of the same process owns (its threads
   * share one descriptor table): this scope's blobs use it instead of one of their own, and
   * leave it to its owner.
   */
  lifeline?: number;
}

/** An injected syscall could not be run. */
export class InfectError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InfectError";
  }
}

/** Runs syscalls inside a seized task; see the module comment for the sequence. */
export class RemoteSyscalls implements Disposable {
  readonly task: SeizedTask;
  #anchor: Anchor;
  #table?: HealTable;
  #arena?: { at: RemotePtr; size: number; used: number };
  #onClose?: () => void;
  #doorway?: { enter: () => void; leave: () => void };
  #place?: (size: number) => bigint;
  #scratch: { addr: RemotePtr; size: number }[] = [];
  #touched = false;
  #open = true;
  /** The lifeline of blobs run in this scope: its read end in the task, its write end ours. */
  #lifeline?: { theirs: number; ours: number };
  #borrowedLifeline?: number;

  #runner?: BatchRunner;

  /** A scope running syscalls at `anchor` in `task`. Nothing happens until the first call. */
  constructor(task: SeizedTask, anchor: Anchor, options: RemoteSyscallsOptions = {}) {
    this.task = task;
    this.#anchor = anchor;
    this.#table = options.table;
    if (options.arena) this.#arena = { ...options.arena, used: 0 };
    this.#onClose = options.onClose;
    this.#doorway = options.doorway;
    this.#place = options.place;
    this.#borrowedLifeline = options.lifeline;
  }

  /**
   * Prepares remote syscalls in `task`, whose mappings are `maps`, at a `syscall` instruction
   * of its own code. Such calls cannot heal: for tasks being restored (traced with EXITKILL).
   */
  static open(task: SeizedTask, maps: ProcMap[]): RemoteSyscalls {
    return new RemoteSyscalls(task, { site: findGadgets(task.pid, maps).syscall });
  }

  /**
   * Batches outside a parasite area run with `runner` from now on (blob code the task has),
   * or one by one again without it.
   */
  batchWith(runner: BatchRunner | undefined): void {
    this.#runner = runner;
  }

  /** Moves the anchor; the next call runs there. */
  anchorAt(anchor: Anchor, options: RemoteSyscallsOptions = {}): void {
    this.#anchor = anchor;
    if (options.table) this.#table = options.table;
    if (options.arena) this.#arena = { ...options.arena, used: 0 };
    if (options.place) this.#place = options.place;
  }

  /** heal's entry and this thread's heal block, when the scope runs in a parasite area. */
  get heal(): HealEntry | undefined {
    const block = this.#anchor.regs?.r12;
    return block === undefined ? undefined : { entry: remoteAdd(this.#anchor.site, 2), block };
  }

  /** The registers for a call of syscall `nr`. */
  #regsFor(nr: number, args: (bigint | number)[]): BigUint64Array {
    const regs = new BigUint64Array(this.task.regs);
    for (const [name, value] of Object.entries(this.#anchor.regs ?? {})) {
      regs[REG[name as RegName]] = value!;
    }
    const argRegs = [REG.di, REG.si, REG.dx, REG.r10, REG.r8, REG.r9];
    argRegs.forEach((r, i) => (regs[r] = BigInt.asUintN(64, BigInt(args[i] ?? 0))));
    regs[REG.ax] = BigInt(nr);
    regs[REG.orig_ax] = 0xffffffffffffffffn;
    regs[REG.ip] = this.#anchor.site;
    return regs;
  }

  /** Runs syscall `nr` with up to six arguments; returns the raw result (`-errno` on failure). */
  call(nr: number, ...args: (bigint | number)[]): bigint {
    if (!this.#open) throw new InfectError("Remote syscalls are closed");
    const pid = this.task.pid;
    if (!this.#touched) this.#doorway?.enter();
    ptraceSetRegs(pid, this.#regsFor(nr, args));
    if (!this.#touched) {
      // Only now that the registers lead home (when the anchor heals) may the mask change.
      ptraceSetSigmask(pid, BLOCK_ALL);
      this.#touched = true;
    }
    this.#step(nr); // to the syscall-entry stop
    this.#step(nr); // to the syscall-exit stop
    return BigInt.asIntN(64, ptraceGetRegs(pid)[REG.ax]);
  }

  /**
   * Runs `calls` in the task one after another; returns their raw results, in order. In a
   * parasite area (a scope that heals) the batch blob runs them in one go (parasite/batch.c),
   * and so does the scope's runner where it has one ({@link batchWith}); else, or for a few,
   * each is injected in turn. In a parasite area only calls that change nothing criu must undo
   * belong here: should criu die midway, the blob runs the rest before it heals. A failed call
   * with a name throws, once all have run.
   */
  batch(calls: readonly RemoteCall[]): bigint[] {
    const heal = this.heal;
    const runner: BatchRunner | undefined = heal && this.#table
      ? (calls.length < BATCH_MIN ? undefined : (list) => this.#runBatch(list, heal))
      : calls.length < RUNNER_MIN
      ? undefined
      : this.#runner;
    const results = runner ? runner(calls) : calls.map((c) => this.call(c.nr, ...c.args));
    calls.forEach((c, i) => {
      if (c.name !== undefined) this.#checked(c.name, results[i]);
    });
    return results;
  }

  #runBatch(calls: readonly RemoteCall[], heal: HealEntry): bigint[] {
    const pid = this.task.pid;
    batchCode ??= decodeBase64(BLOBS.batch);
    const argsOff = Math.ceil(batchCode.length / 16) * 16;
    const callsOff = argsOff + BATCH.ARGS;
    const stackOff = callsOff + calls.length * CALL_SIZE;
    const size = stackOff + BATCH.STACK;
    const lifeline = this.lifeline();
    // Carved from the area's arena (executable) when it has room, else a mapping of its own.
    const mark = this.#arena?.used;
    const carved = this.#carve(size);
    const at = carved ?? this.#map(size, true);
    let running = false;
    try {
      const image = new Uint8Array(stackOff);
      image.set(batchCode, 0);
      const words = new BigInt64Array(image.buffer);
      const w = (
        off: number,
        i: number,
        v: bigint | number,
      ) => (words[off / 8 + i] = BigInt.asIntN(64, BigInt(v)));
      w(argsOff, 0, remoteAdd(at, callsOff));
      w(argsOff, 1, calls.length);
      w(argsOff, 3, lifeline);
      w(argsOff, 4, heal.entry);
      w(argsOff, 5, heal.block);
      encodeCalls(calls, image, callsOff);
      writeRemote(pid, at, image);
      const argsAt = remoteAdd(at, argsOff);
      this.run(at, argsAt, remoteAdd(at, size));
      running = true;
      if (dieInBatch || (dieInThreadBatch && this.#borrowedLifeline !== undefined)) {
        Deno.kill(Deno.pid, "SIGKILL");
      }
      this.waitFlag(remoteAdd(argsAt, BATCH.DONE), 10_000);
      running = false;
      this.interrupt();
      return readCallResults(pid, remoteAdd(at, callsOff), calls.length);
    } finally {
      if (running) {
        try {
          this.interrupt();
        } catch {
          // It stopped on its own (a fault) or is gone.
        }
      }
      if (carved !== undefined) this.#arena!.used = mark!;
      else this.unmapScratch(at);
    }
  }

  /**
   * The read end in the task of this scope's lifeline, a pipe whose only write end criu holds
   * (made on first use, closed with the scope's scratch): a blob waiting on it after its work
   * reads end-of-file should criu die, and goes home (parasite/batch.c).
   */
  lifeline(): number {
    if (this.#borrowedLifeline !== undefined) return this.#borrowedLifeline;
    if (this.#lifeline) return this.#lifeline.theirs;
    const [r, w] = this.pipe();
    let ours: number;
    try {
      const pidfd = pidfdOpen(this.task.pid);
      try {
        ours = pidfdGetfd(pidfd, w, this.task.pid);
      } finally {
        close(pidfd);
      }
    } catch (e) {
      // Neither end stays behind in the task.
      this.closeFd(w);
      this.closeFd(r);
      throw e;
    }
    this.#lifeline = { theirs: r, ours };
    this.closeFd(w);
    return r;
  }

  /** Like {@link call}, throwing when the result is an error. */
  check(nr: number, name: string, ...args: (bigint | number)[]): bigint {
    return this.#checked(name, this.call(nr, ...args));
  }

  /** `ret`, the result of remote syscall `name`; thrown as an error when it is one. */
  #checked(name: string, ret: bigint): bigint {
    if (ret < 0n && ret > -4096n) {
      throw new InfectError(`Remote ${name} in task ${this.task.pid} failed with errno ${-ret}`);
    }
    return ret;
  }

  /**
   * A pipe made in the task (O_CLOEXEC); both ends are recorded in the heal table while they
   * exist. Returns [read end, write end].
   */
  pipe(): [number, number] {
    if (this.#table) {
      const slots = this.#table.fdSlots(2);
      this.check(NR.pipe2, "pipe2", slots.at, O.CLOEXEC);
      const [r, w] = this.#table.took(slots.index, 2);
      return [r, w];
    }
    const at = this.scratch(8);
    this.check(NR.pipe2, "pipe2", at, O.CLOEXEC);
    const pair = new Int32Array(2);
    readRemote(this.task.pid, at, new Uint8Array(pair.buffer));
    return [pair[0], pair[1]];
  }

  /**
   * Opens `path` in the task (O_CLOEXEC added; the path resolves in its namespaces, and files
   * whose contents depend on the opener, as IPC sysctls do, answer for it). The descriptor is
   * in the heal table from before it exists: open takes the lowest free number, which the
   * frozen task's table shows (corrected should open take another). The path is written at
   * `room` when given, else in fresh scratch memory.
   */
  openFile(path: string, flags: number, room?: RemotePtr): number {
    return this.#openAt(path, room, (at) => this.call(NR.open, at, flags | O.CLOEXEC, 0));
  }

  /**
   * A detached copy of the mount at `path` in the task's mount namespace, without what is
   * mounted below it (open_tree with OPEN_TREE_CLONE): its files whole, even those other mounts
   * hide. A descriptor in the task, in the heal table as {@link openFile}'s.
   */
  cloneMount(path: string): number {
    const OPEN_TREE_CLONE = 1;
    return this.#openAt(
      path,
      undefined,
      (at) => this.call(NR.open_tree, -100, /* AT_FDCWD */ at, OPEN_TREE_CLONE | O.CLOEXEC),
    );
  }

  #openAt(path: string, room: RemotePtr | undefined, open: (at: RemotePtr) => bigint): number {
    const name = cString(path);
    const at = room ?? this.scratch(name.length);
    writeRemote(this.task.pid, at, name);
    const used = new Set(listFds(this.task.pid));
    let guess = 0;
    while (used.has(guess)) guess++;
    this.#table?.noteFd(guess);
    const ret = open(at);
    if (ret < 0n || Number(ret) !== guess) this.#table?.forgetFd(guess);
    if (ret < 0n) {
      throw new InfectError(
        `Remote open of ${path} in task ${this.task.pid} failed with errno ${-ret}`,
      );
    }
    if (Number(ret) !== guess) this.#table?.noteFd(Number(ret));
    return Number(ret);
  }

  /**
   * The first `max` bytes of file `path` as the task reads it (in its namespaces: its
   * /proc/self, the cgroups of its cgroup namespace, its sysctls), through the caller's `room`
   * when given (the text, then the path from `max` bytes on), else through a scratch area.
   */
  readFile(path: string, max = 4096, room?: RemotePtr): Uint8Array {
    const at = room ?? this.scratch(max + path.length * 3 + 1);
    const fd = this.openFile(path, O.RDONLY, remoteAdd(at, max));
    try {
      const n = this.check(NR.read, `read(${path})`, fd, at, max);
      const out = new Uint8Array(Number(n));
      readRemote(this.task.pid, at, out);
      return out;
    } finally {
      this.closeFd(fd);
      if (room === undefined) this.unmapScratch(at);
    }
  }

  /** Closes descriptor `fd` that criu made in the task. */
  closeFd(fd: number): void {
    this.#table?.forgetFd(fd);
    this.call(NR.close, fd);
  }

  /**
   * `size` bytes of read-write memory in the task (with `exec` also executable, for a blob):
   * from the scope's arena when it fits, else a fresh private anonymous mapping (at `at` when
   * given) that the scope unmaps on close.
   */
  scratch(size: number, exec = false, at?: RemotePtr): RemotePtr {
    const carved = !exec && at === undefined ? this.#carve(size) : undefined;
    return carved ?? this.#map(size, exec, at);
  }

  /** `size` bytes (16-byte aligned) from the scope's arena, if it has one with room. */
  #carve(size: number): RemotePtr | undefined {
    const arena = this.#arena;
    const need = Math.ceil(size / 16) * 16;
    if (!arena || arena.used + need > arena.size) return undefined;
    const p = remoteAdd(arena.at, arena.used);
    arena.used += need;
    return p;
  }

  /**
   * System V segment `id` (`size` bytes) attached in the task (read-only unless `writable`),
   * over a fresh scratch mapping: heal, or the scope's close, detaches it with the mapping.
   */
  attachShm(id: number, size: number, writable = false, pageSize = 4096): RemotePtr {
    // A segment of huge pages attaches only at an address aligned to them: room for one more.
    const len = Math.ceil(size / pageSize) * pageSize;
    const room = this.#map(len + (pageSize > 4096 ? pageSize : 0), false);
    const mask = BigInt(pageSize - 1);
    const at = remotePtr((room + mask) & ~mask);
    this.check(NR.shmat, `shmat(${id})`, id, at, (writable ? 0 : SHM.RDONLY) | SHM.REMAP);
    if (at !== room) this.#aliases.set(at, room);
    return at;
  }

  /** Attaches of {@link attachShm} inside a larger scratch mapping: the mapping, by attach. */
  readonly #aliases = new Map<RemotePtr, RemotePtr>();

  /**
   * Unmaps scratch memory `addr` (of {@link scratch} or {@link attachShm}) before the scope
   * ends; memory carved from the arena stays until then.
   */
  unmapScratch(addr: RemotePtr): void {
    const base = this.#aliases.get(addr) ?? addr;
    this.#aliases.delete(addr);
    addr = base;
    const i = this.#scratch.findIndex((s) => s.addr === addr);
    const arena = this.#arena;
    if (i < 0 && arena && addr >= arena.at && addr < remoteAdd(arena.at, arena.size)) {
      return; // carved from the arena: it goes with the scope
    }
    if (i < 0) throw new InfectError(`No scratch mapping at 0x${addr.toString(16)}`);
    const [s] = this.#scratch.splice(i, 1);
    // Unmapped first: should criu die in between, heal unmaps a hole, harmlessly.
    this.check(NR.munmap, "munmap", s.addr, s.size);
    this.#table?.forgetMap(s.addr);
  }

  /** A fresh private anonymous mapping, recorded in the heal table and the scope. */
  #map(size: number, exec: boolean, at?: RemotePtr): RemotePtr {
    // Recorded before it exists: should criu die during the mmap, heal still removes it.
    const where = at ?? (this.#table && this.#place ? remotePtr(this.#place(size)) : undefined);
    if (where !== undefined) this.#table?.noteMap(where, BigInt(size));
    let addr: bigint;
    try {
      addr = this.check(
        NR.mmap,
        "mmap",
        where ?? 0,
        size,
        PROT.READ | PROT.WRITE | (exec ? PROT.EXEC : 0),
        MAP.PRIVATE | MAP.ANONYMOUS | (where === undefined ? 0 : MAP.FIXED_NOREPLACE),
        -1,
        0,
      );
    } catch (e) {
      if (where !== undefined) this.#table?.forgetMap(where);
      throw e;
    }
    if (where === undefined) this.#table?.noteMap(addr, BigInt(size));
    if (where !== undefined && addr !== where) {
      this.#table?.forgetMap(where);
      throw new InfectError(
        `Cannot map scratch memory at 0x${where.toString(16)} in task ${this.task.pid}`,
      );
    }
    const p = remotePtr(addr);
    this.#scratch.push({ addr: p, size });
    return p;
  }

  /**
   * Lets the task run blob code at `entry` with `arg` in rdi and its stack at `stackTop` (16-byte
   * aligned), signals still blocked. The blob must end by sleeping; {@link interrupt} stops it.
   */
  run(entry: RemotePtr, arg: RemotePtr, stackTop: RemotePtr): void {
    const regs = new BigUint64Array(this.task.regs);
    regs[REG.ip] = entry;
    regs[REG.di] = arg;
    regs[REG.sp] = stackTop - 8n; // as if called: (sp + 8) % 16 == 0
    regs[REG.orig_ax] = 0xffffffffffffffffn;
    if (!this.#touched) this.#doorway?.enter();
    ptraceSetRegs(this.task.pid, regs);
    if (!this.#touched) {
      ptraceSetSigmask(this.task.pid, BLOCK_ALL);
      this.#touched = true;
    }
    ptraceCont(this.task.pid);
    this.#inBlob = true;
  }

  /** Whether blob code started by {@link run} runs (it has not stopped since). */
  #inBlob = false;

  /**
   * Whether the running blob has stopped on its own, which only a fault does (every signal is
   * blocked, so only a synchronous one can stop it). Such a signal is never delivered: the task
   * is brought back to an interrupt stop and an error is thrown.
   */
  checkRunning(): void {
    const st = tryWaitPid(this.task.pid);
    if (!st) return;
    this.#inBlob = false;
    if (st.exited || st.signaled) throw new NoSuchTaskError(this.task.pid);
    this.#suppressToInterruptStop(st.stopSig);
    throw new InfectError(`Blob code in task ${this.task.pid} stopped with signal ${st.stopSig}`);
  }

  /**
   * Stops the blob started by {@link run} (PTRACE_INTERRUPT) and waits for the stop; nothing
   * when it stopped already (a fault {@link checkRunning} met, or an earlier interrupt), which
   * no stop would ever follow.
   */
  interrupt(): void {
    if (!this.#inBlob) return;
    this.#inBlob = false;
    const pid = this.task.pid;
    ptraceInterrupt(pid);
    const st = waitPid(pid);
    if (st.exited || st.signaled) throw new NoSuchTaskError(pid);
    if (st.event === PTRACE_EVENT_STOP) return;
    this.#suppressToInterruptStop(st.stopSig);
    throw new InfectError(`Blob code in task ${pid} stopped with signal ${st.stopSig}`);
  }

  /** From a signal-delivery stop, to the interrupt stop, discarding the signal. */
  #suppressToInterruptStop(sig: number): void {
    const pid = this.task.pid;
    ptraceInterrupt(pid);
    ptraceCont(pid, 0);
    for (let i = 0; i < 8; i++) {
      const st = waitPid(pid);
      if (st.exited || st.signaled) throw new NoSuchTaskError(pid);
      if (st.event === PTRACE_EVENT_STOP) return;
      ptraceCont(pid, 0);
    }
    throw new InfectError(`Cannot stop task ${pid} after signal ${sig}`);
  }

  #step(nr: number): void {
    const pid = this.task.pid;
    ptraceSyscall(pid);
    if (dieAt && ++stops === dieAt) Deno.kill(Deno.pid, "SIGKILL");
    for (;;) {
      const st = waitPid(pid);
      if (st.exited || st.signaled) throw new NoSuchTaskError(pid);
      if (st.stopped && st.stopSig === (SIGTRAP | 0x80)) return;
      // An injected clone3 reports the new task (traced with TRACEFORK/TRACECLONE) first.
      if (st.stopped && st.stopSig === SIGTRAP && FORK_EVENTS.has(st.event)) {
        this.#newChild = Number(ptraceGetEventMsg(pid));
        ptraceSyscall(pid);
        continue;
      }
      throw new InfectError(
        `Remote syscall ${nr} in task ${pid} stopped unexpectedly (status 0x${
          st.raw.toString(16)
        })`,
      );
    }
  }

  #newChild = 0;

  /**
   * Runs clone3 in the task (seized with TRACEFORK/TRACECLONE) and returns the new task's ids:
   * `real` as criu sees it (the fork event's), `virt` as the task sees it (clone3's return; the
   * same unless the task is in another PID namespace). The new task is traced from birth and
   * waits in its first stop (see SeizedTask.adopt).
   */
  clone(args: RemotePtr, size: number): { real: number; virt: number } {
    this.#newChild = 0;
    const ret = this.call(NR.clone3, args, size);
    if (ret < 0n) {
      throw new InfectError(`clone3 in task ${this.task.pid} failed with errno ${-ret}`);
    }
    if (!this.#newChild) {
      throw new InfectError(`clone3 in task ${this.task.pid} made ${ret} without a fork event`);
    }
    return { real: this.#newChild, virt: Number(ret) };
  }

  /** Finds a new `syscall` instruction after the task's mappings changed under us. */
  retarget(maps: ProcMap[]): void {
    this.#anchor = { site: findGadgets(this.task.pid, maps).syscall };
  }

  /**
   * Waits until the blob started by {@link run} stores a non-zero word at `flag`, watching for
   * a fault; gives up after `timeoutMs`.
   */
  waitFlag(flag: RemotePtr, timeoutMs: number): void {
    const word = new BigInt64Array(1);
    const bytes = new Uint8Array(word.buffer);
    const start = performance.now();
    const end = start + timeoutMs;
    for (let spins = 0;; spins++) {
      readRemote(this.task.pid, flag, bytes);
      if (word[0] !== 0n) return;
      this.checkRunning();
      const now = performance.now();
      if (now > end) {
        throw new InfectError(
          `Blob code in task ${this.task.pid} did not finish in ${timeoutMs} ms`,
        );
      }
      // Spun a little, then naps of a fiftieth of the time waited so far (0.05 to 1 ms): a few
      // milliseconds' run (a small process's memory) is seen done soon after, a long one is
      // not kept from both cores by the checks.
      if (spins > 20) nap(Math.min(1, Math.max(0.05, (now - start) / 50)));
    }
  }

  /**
   * Closes what criu made in the task through this scope (its lifeline, scratch mappings),
   * forgetting each in the heal table first.
   */
  releaseScratch(): void {
    this.#runner = undefined; // its code may live in the scratch memory going now
    const errors: unknown[] = [];
    const lifeline = this.#lifeline;
    this.#lifeline = undefined;
    if (lifeline) {
      try {
        this.closeFd(lifeline.theirs);
      } catch (e) {
        errors.push(e);
      }
      close(lifeline.ours);
    }
    for (const s of this.#scratch.reverse()) {
      try {
        this.#table?.forgetMap(s.addr);
        this.check(NR.munmap, "munmap", s.addr, s.size);
      } catch (e) {
        errors.push(e);
      }
    }
    this.#scratch = [];
    if (errors.length) {
      throw new InfectError(`Cannot clean up task ${this.task.pid}`, { cause: errors[0] });
    }
  }

  /**
   * Unmaps scratch memory and returns the task to its interrupt stop. By default the task also
   * gets back the registers and signal mask it had when seized, in the stop (the mask first:
   * until the registers change, the anchor still leads home); with `restoreState: false` (a
   * task being restored, whose final state the caller sets) they are left as they are.
   */
  close(options: { restoreState?: boolean } = {}): void {
    const restoreState = options.restoreState ?? true;
    if (!this.#open) return;
    let error: unknown;
    try {
      this.releaseScratch();
    } catch (e) {
      error = e;
    }
    this.#open = false;
    const pid = this.task.pid;
    if (this.#touched) {
      ptraceInterrupt(pid);
      ptraceCont(pid);
      waitForInterruptStop(pid);
      this.#doorway?.leave();
      if (restoreState) {
        ptraceSetSigmask(pid, this.task.sigmask);
        ptraceSetRegs(pid, this.task.regs);
      }
    }
    this.#onClose?.();
    if (error) throw error;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
