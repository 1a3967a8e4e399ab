/**
 * Infecting a frozen process for a dump, so that it survives criu's death at any moment.
 *
 * A {@link Parasite} is one anonymous mapping (the area) made in the process by its leader,
 * holding heal (parasite/heal.c), the heal table, and for the leader and for one other thread
 * at a time a heal block and a frame of that thread's own context:
 *
 * ```
 * area + 0x0000  heal code: every injected syscall runs at offset 0
 *        0x0400  heal table (heal_table.ts)
 *        0x0600  leader's heal block       0x0680  thread's heal block
 *        0x0b00  top of the leader's heal stack (1 KiB)
 *        0x0f00  top of the thread's heal stack (1 KiB)
 *        0x1000  leader's frame            (rt_sigframe + XSAVE, page-rounded)
 *        ...     thread's frame
 *        ...     leader's arena (16 KiB)   thread's arena (4 KiB)
 * ```
 *
 * Infection (the first syscall, before the area exists) and cure (the last, removing it) run
 * at a `syscall; ret` of the task's own code with the stack pointer on frames written below the
 * leader's red zone, where the kernel would put a signal frame: if criu dies there, the `ret`
 * goes to the task's sa_restorer (`mov $15, %rax; syscall`) and rt_sigreturn takes the task
 * home. At infection two frames are chained: the first returns into munmap of the area (mapped
 * at a fixed address in the middle of the widest gap, so that the frame can name it), whose
 * `ret` takes the second, home:
 *
 * ```
 *   leader's sp - 128 (red zone)
 *   [home frame]    pretcode = sa_restorer, its registers, mask, FPU state
 *   [undo frame]    pretcode = sa_restorer, ip = `syscall; ret`, rax = munmap(area), sp = home
 *   sp for the first syscall (mmap of the area at `syscall; ret`)
 * ```
 * That is only done on the process's main stack ([stack]), never on memory that merely holds a
 * stack pointer (a green thread's stack could border other data); the bytes are put back
 * afterwards. Without those instructions or such a stack, the first and the last syscall run at
 * a plain `syscall` of the task and cannot heal (a window of two ptrace stops).
 *
 * When criu dies: a thread at an injected syscall falls into heal; the leader's heal closes the
 * descriptors and unmaps the mappings of the heal table and, from its main stack, the area,
 * once the other thread inside (if any) said it left; that thread only goes home. A thread
 * goes in and out through a doorway outside the area that also leads home and says it left
 * ({@link Parasite.thread}), so the word telling the leader to wait changes only while the
 * thread stands there. A thread that is not inside the area sits in its interrupt stop with
 * its own registers: the kernel's detach lets it go on. Without a chain the area stays,
 * inert, and each thread goes home from its frame there.
 *
 * @module
 */
import { BLOBS } from "../../parasite/blobs_gen.ts";
import {
  NR,
  ptraceGetXstate,
  ptraceSetRegs,
  readRemote,
  REG,
  remoteAdd,
  type RemotePtr,
  remotePtr,
  writeRemote,
  xstateLayout,
} from "../syscalls/mod.ts";
import { decodeBase64 } from "../util/base64.ts";
import { findGadgets, type Gadgets, scanGadgetsAhead } from "./gadgets.ts";
import { HealTable } from "./heal_table.ts";
import { type Anchor, InfectError, RemoteSyscalls } from "./infect.ts";
import type { ProcMap } from "./proc.ts";
import type { SeizedTask } from "./seize.ts";
import { buildSigframe, restartedRegs, sigframeSize } from "./sigframe.ts";

const PAGE = 4096;
const TABLE = 0x400;
const LEADER_BLOCK = 0x600;
const THREAD_BLOCK = 0x680;
const LEADER_STACK = 0xb00;
const THREAD_STACK = 0xf00;
const FRAMES = 0x1000;
const LEADER_ARENA = 16384;
const THREAD_ARENA = 4096;
/** The x86-64 red zone below the stack pointer, which a leaf function may use. */
const RED_ZONE = 128n;
const PROT_RWX = 7;
/** MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE. */
const MAP_FIXED_NOREPLACE_ANON = 0x100022;
/** futex(2) FUTEX_WAKE_OP | FUTEX_PRIVATE_FLAG. */
const FUTEX_WAKE_OP_PRIVATE = 5 | 128;
/** FUTEX_OP(FUTEX_OP_SET, 1, FUTEX_OP_CMP_EQ, 0): the word at uaddr2 becomes 1. */
const FUTEX_OP_SET_1 = 1 << 12;
/** Every signal blocked (what SIGKILL and SIGSTOP allow). */
const BLOCK_ALL = ~((1n << 8n) | (1n << 18n)) & 0xffffffffffffffffn;

/** Test hook: `CRIU_TEST_DIE_AT=thread-in|thread-out` kills criu at a thread's doorway. */
function dieHere(point: string): void {
  if (Deno.env.get("CRIU_TEST_DIE_AT") === point) Deno.kill(Deno.pid, "SIGKILL");
}

/** One thread's way home: its heal block (parasite/heal.c). */
function healBlock(words: {
  frame: bigint;
  stack: bigint;
  table: bigint;
  chain: bigint;
  frameLen: number;
  syscallRet: bigint;
  area: bigint;
  areaLen: number;
  sigreturn: bigint;
  leader: boolean;
}): Uint8Array {
  return new Uint8Array(
    new BigUint64Array([
      words.frame,
      words.stack,
      words.table,
      words.chain,
      BigInt(words.frameLen),
      words.syscallRet,
      words.area,
      BigInt(words.areaLen),
      words.sigreturn,
      words.leader ? 1n : 0n,
    ]).buffer,
  );
}

/**
 * Where on the leader's main stack `len` bytes of frames may go (below the red zone, inside the
 * [stack] mapping), when the task has the gadgets to use them.
 */
function chainSpot(
  sp: bigint,
  len: number,
  maps: ProcMap[],
  g: Gadgets,
): RemotePtr | undefined {
  if (g.syscallRet === undefined || g.sigreturn === undefined) return undefined;
  const stack = maps.find((m) => m.path === "[stack]" && m.start <= sp && sp < m.end);
  if (!stack || !stack.perms.startsWith("rw")) return undefined;
  const at = (sp - RED_ZONE - BigInt(len)) & ~63n;
  return at >= stack.start ? remotePtr(at) : undefined;
}

/**
 * An address for the area far from anything the kernel or the task would map next: the middle
 * of the widest gap of the address space. The first syscall maps it there (MAP_FIXED_NOREPLACE)
 * so that the frame undoing it, written before, knows what to unmap.
 */
function quietSpot(maps: ProcMap[], size: number): bigint {
  const lowest = 0x10000000n, highest = 0x7ff000000000n;
  let best = { start: lowest, len: 0n };
  let prev = lowest;
  for (const m of [...maps].sort((a, b) => (a.start < b.start ? -1 : 1))) {
    const start = m.start < highest ? m.start : highest;
    if (start > prev && start - prev > best.len) best = { start: prev, len: start - prev };
    if (m.end > prev) prev = m.end;
  }
  if (highest > prev && highest - prev > best.len) best = { start: prev, len: highest - prev };
  if (best.len < BigInt(size) * 4n) throw new InfectError("No room for the parasite area");
  return (best.start + best.len / 2n) & ~0xfffffn;
}

/** An infected process: see the module comment. Disposing of it cures the process. */
export class Parasite implements Disposable {
  /** Syscalls in the leader, healing through the area. */
  readonly leader: RemoteSyscalls;
  readonly area: RemotePtr;
  readonly table: HealTable;
  #size: number;
  #frameLen: number;
  #xsaveLen: number;
  #gadgets: Gadgets;
  #chain?: { at: RemotePtr; frame: Uint8Array; threadAt: RemotePtr };
  #thread?: RemoteSyscalls;
  #cured = false;

  private constructor(init: {
    leader: RemoteSyscalls;
    area: RemotePtr;
    size: number;
    frameLen: number;
    xsaveLen: number;
    gadgets: Gadgets;
    chain?: { at: RemotePtr; frame: Uint8Array; threadAt: RemotePtr };
    table: HealTable;
  }) {
    this.leader = init.leader;
    this.area = init.area;
    this.#size = init.size;
    this.#frameLen = init.frameLen;
    this.#xsaveLen = init.xsaveLen;
    this.#gadgets = init.gadgets;
    this.#chain = init.chain;
    this.table = init.table;
  }

  /**
   * What infecting processes `pids` needs that stays the same while they run, found before a
   * freeze: the instructions borrowed from their code files (gadgets.ts) and this CPU's XSAVE
   * layout (CPUID, each a trap to the hypervisor in a virtual machine).
   */
  static prepare(pids: readonly number[]): void {
    scanGadgetsAhead(pids);
    xstateLayout();
  }

  /**
   * Infects the process of `leader` (seized, in its interrupt stop), whose maps are `maps`.
   * With `blobs: false` the caller runs no batch or blob in it, only single calls, and the
   * lifeline they would need is not made.
   */
  static infect(leader: SeizedTask, maps: ProcMap[], options: { blobs?: boolean } = {}): Parasite {
    const pid = leader.pid;
    const gadgets = findGadgets(pid, maps);
    const xsave = ptraceGetXstate(pid);
    const home = restartedRegs(leader.regs);
    const frameLen = sigframeSize(xsave);
    const framePages = Math.ceil(frameLen / PAGE) * PAGE;
    const size = FRAMES + 2 * framePages + LEADER_ARENA + THREAD_ARENA;
    const code = decodeBase64(BLOBS.heal);
    if (code.length > TABLE) throw new InfectError("The heal blob does not fit its place");

    // The leader's frame, below it a frame whose return unmaps the area first, and below that
    // room for another thread's frame (written only by heal).
    const undoLen = sigframeSize();
    const spot = chainSpot(
      leader.regs[REG.sp],
      frameLen + undoLen + 64 + frameLen + 64,
      maps,
      gadgets,
    );
    const fixedAt = quietSpot(maps, size);
    let chain: { at: RemotePtr; frame: Uint8Array; threadAt: RemotePtr } | undefined;
    let saved: { at: RemotePtr; bytes: Uint8Array } | undefined;
    let anchor: Anchor = { site: gadgets.syscall };
    if (spot !== undefined) {
      const threadAt = spot;
      const undoAt = remotePtr((spot + BigInt(frameLen) + 63n) & ~63n);
      const at = remotePtr((undoAt + BigInt(undoLen) + 63n) & ~63n);
      const frame = buildSigframe({
        at,
        regs: home,
        sigmask: leader.sigmask,
        xsave,
        pretcode: gadgets.sigreturn,
      });
      const undoRegs = new BigUint64Array(home);
      undoRegs[REG.ip] = gadgets.syscallRet!;
      undoRegs[REG.ax] = BigInt(NR.munmap);
      undoRegs[REG.di] = fixedAt;
      undoRegs[REG.si] = BigInt(size);
      undoRegs[REG.sp] = at;
      const undo = buildSigframe({
        at: undoAt,
        regs: undoRegs,
        sigmask: BLOCK_ALL,
        pretcode: gadgets.sigreturn,
      });
      chain = { at, frame, threadAt };
      const bytes = new Uint8Array(Number(at - undoAt) + frame.length);
      readRemote(pid, undoAt, bytes);
      saved = { at: undoAt, bytes };
      const image = new Uint8Array(bytes.length);
      image.set(undo, 0);
      image.set(frame, Number(at - undoAt));
      writeRemote(pid, undoAt, image);
      anchor = { site: gadgets.syscallRet!, regs: { sp: undoAt } };
    }
    const rs = new RemoteSyscalls(leader, anchor);
    let area: RemotePtr | undefined;
    try {
      area = remotePtr(
        rs.check(NR.mmap, "mmap", fixedAt, size, PROT_RWX, MAP_FIXED_NOREPLACE_ANON, -1, 0),
      );
      if (area !== fixedAt) throw new InfectError(`Cannot map the parasite area in task ${pid}`);
      const frameAt = remoteAdd(area, FRAMES);
      const image = new Uint8Array(FRAMES);
      image.set(code, 0);
      image.set(HealTable.empty(), TABLE);
      image.set(
        healBlock({
          frame: frameAt,
          stack: remoteAdd(area, LEADER_STACK),
          table: remoteAdd(area, TABLE),
          chain: chain?.at ?? 0n,
          frameLen,
          syscallRet: gadgets.syscallRet ?? 0n,
          area,
          areaLen: size,
          sigreturn: gadgets.sigreturn ?? 0n,
          leader: true,
        }),
        LEADER_BLOCK,
      );
      writeRemote(pid, area, image);
      writeRemote(
        pid,
        frameAt,
        chain?.frame ?? buildSigframe({ at: frameAt, regs: home, sigmask: leader.sigmask, xsave }),
      );
      const table = new HealTable(pid, remoteAdd(area, TABLE));
      // Scratch mappings follow the area, in the same quiet gap, each at an address known
      // before it is made.
      let next = area + BigInt(size) + 0x10000n;
      const place = (bytes: number) => {
        const at = next;
        next += BigInt(Math.ceil(bytes / PAGE) * PAGE) + 0x10000n;
        return at;
      };
      rs.anchorAt(
        { site: area, regs: { r12: remoteAdd(area, LEADER_BLOCK) } },
        {
          table,
          place,
          arena: { at: remoteAdd(area, FRAMES + 2 * framePages), size: LEADER_ARENA },
        },
      );
      // One call through the area, so that the registers lead home through it, before the
      // stack gets its bytes back: the pipe of the scope's lifeline, which every batch and
      // blob run in the area needs (a call made anyway), else a getpid.
      if (options.blobs ?? true) rs.lifeline();
      else rs.check(NR.getpid, "getpid");
      if (saved) writeRemote(pid, saved.at, saved.bytes);
      saved = undefined;
      const p = new Parasite({
        leader: rs,
        area,
        size,
        frameLen,
        xsaveLen: xsave.length,
        gadgets,
        chain,
        table,
      });
      return p;
    } catch (e) {
      // Back out: the lifeline goes (through the area, while it is there), then the area
      // (from where the registers are now), and the task returns home.
      try {
        if (area !== undefined) {
          try {
            rs.releaseScratch();
          } catch {
            // Only a task gone (or the tracer lost) fails it: its close is not checked, and
            // unmapping a mapping of ours does not fail.
          }
          rs.call(NR.munmap, area, size);
        }
        rs.close();
        if (saved) writeRemote(pid, saved.at, saved.bytes);
      } catch {
        // The task died or the tracer lost it: nothing more to put back.
      }
      throw e;
    }
  }

  /**
   * Syscalls in `task`, a thread of the process other than the leader, healing through the
   * area. One thread at a time: close the scope before taking another.
   */
  thread(task: SeizedTask): RemoteSyscalls {
    if (this.#thread) throw new InfectError("One thread at a time in the parasite area");
    // The leader's lifeline serves its threads' blobs too (one descriptor table).
    const lifeline = this.leader.lifeline();
    const pid = task.pid;
    const xsave = ptraceGetXstate(pid);
    if (xsave.length !== this.#xsaveLen) {
      throw new InfectError(`Thread ${pid} has an XSAVE area of another size`);
    }
    const framePages = Math.ceil(this.#frameLen / PAGE) * PAGE;
    const frameAt = remoteAdd(this.area, FRAMES + framePages);
    // With a chain, heal copies the frame onto the leader's main stack first: built for there.
    const chainAt = this.#chain?.threadAt;
    const frame = buildSigframe({
      at: chainAt ?? frameAt,
      regs: restartedRegs(task.regs),
      sigmask: task.sigmask,
      xsave,
      pretcode: this.#gadgets.sigreturn,
    });
    writeRemote(pid, frameAt, frame);
    const block = remoteAdd(this.area, THREAD_BLOCK);
    writeRemote(
      pid,
      block,
      healBlock({
        frame: frameAt,
        stack: remoteAdd(this.area, THREAD_STACK),
        table: this.table.at,
        chain: chainAt ?? 0n,
        frameLen: frame.length,
        // With a chain, it leaves through the task's `syscall; ret` (heal.c: how it says so).
        syscallRet: chainAt !== undefined ? this.#gadgets.syscallRet ?? 0n : 0n,
        area: this.area,
        areaLen: this.#size,
        sigreturn: this.#gadgets.sigreturn ?? 0n,
        leader: false,
      }),
    );
    // With a chain, the thread passes through a doorway on its way in and out: the task's
    // `syscall; ret` with futex(FUTEX_WAKE_OP) setting the word that says it left, its frame
    // already on the leader's stack. The leader is told to wait for that word only while the
    // thread is inside or at the doorway, and to give it time while it may stand there: so
    // whenever criu dies, the leader neither waits for a thread that never comes nor unmaps
    // the area under one, nor leaves before the thread read its frame.
    const chain = this.#chain;
    let saved: Uint8Array | undefined;
    const doorway = chain
      ? {
        enter: () => {
          saved = new Uint8Array(frame.length);
          readRemote(pid, chain.threadAt, saved);
          this.table.setThread("doorway");
          writeRemote(pid, chain.threadAt, frame);
          ptraceSetRegs(pid, this.#doorway(task, chain.threadAt));
          this.table.setThread("inside");
          dieHere("thread-in");
        },
        leave: () => {
          ptraceSetRegs(pid, this.#doorway(task, chain.threadAt));
          this.table.setThread("doorway");
          dieHere("thread-out");
        },
      }
      : undefined;
    if (!doorway) this.table.setThread("inside");
    const trs = new RemoteSyscalls(task, { site: this.area, regs: { r12: block } }, {
      table: this.table,
      arena: {
        at: remoteAdd(this.area, FRAMES + 2 * framePages + LEADER_ARENA),
        size: THREAD_ARENA,
      },
      doorway,
      lifeline,
      onClose: () => {
        // The registers are the thread's own again: the leader's stack gets its bytes back.
        if (saved) writeRemote(pid, chain!.threadAt, saved);
        this.table.setThread("away");
        this.#thread = undefined;
      },
    });
    this.#thread = trs;
    return trs;
  }

  /**
   * Registers of `task` at the doorway: futex(FUTEX_WAKE_OP) at the task's `syscall; ret` sets
   * the heal table's word that says the thread left, and the `ret` takes the frame at `frame`
   * (its pretcode, the task's sa_restorer) into rt_sigreturn, home.
   */
  #doorway(task: SeizedTask, frame: RemotePtr): BigUint64Array {
    const regs = new BigUint64Array(task.regs);
    const left = this.table.leftAt;
    regs[REG.ip] = this.#gadgets.syscallRet!;
    regs[REG.sp] = frame;
    regs[REG.ax] = BigInt(NR.futex);
    regs[REG.orig_ax] = 0xffffffffffffffffn;
    regs[REG.di] = left;
    regs[REG.si] = BigInt(FUTEX_WAKE_OP_PRIVATE);
    regs[REG.dx] = 0n;
    regs[REG.r10] = 0n;
    regs[REG.r8] = left;
    regs[REG.r9] = BigInt(FUTEX_OP_SET_1);
    return regs;
  }

  /**
   * Removes every trace of the infection and returns the leader to its interrupt stop with its
   * own registers and mask.
   */
  cure(): void {
    if (this.#cured) return;
    this.#cured = true;
    const rs = this.leader;
    const pid = rs.task.pid;
    this.#thread?.close();
    let saved: Uint8Array | undefined;
    try {
      rs.releaseScratch();
      for (const fd of this.table.fds) rs.closeFd(fd);
      // The last syscall, like the first, runs outside the area it removes.
      if (this.#chain) {
        saved = new Uint8Array(this.#chain.frame.length);
        readRemote(pid, this.#chain.at, saved);
        writeRemote(pid, this.#chain.at, this.#chain.frame);
        rs.anchorAt({ site: this.#gadgets.syscallRet!, regs: { sp: this.#chain.at } });
      } else {
        rs.anchorAt({ site: this.#gadgets.syscall });
      }
      rs.check(NR.munmap, "munmap", this.area, this.#size);
    } finally {
      rs.close();
      // The registers are the task's own again: the stack below them gets its bytes back.
      if (saved) writeRemote(pid, this.#chain!.at, saved);
    }
  }

  [Symbol.dispose](): void {
    this.cure();
  }
}
