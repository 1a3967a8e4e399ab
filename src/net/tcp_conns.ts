/**
 * The TCP connections of a dump or a restore (`RepairedConnections`), held in repair mode
 * through descriptors of this process.
 *
 * Dump: the connections of a process are locked in the network in one go, then each is put
 * into repair mode and read once. A dump
 * that fails, or leaves the tree running, takes them out of repair mode and unlocks the
 * network; a dump that kills the tree closes them silently and leaves the lock for the
 * restore to remove.
 *
 * Restore: each rebuilt socket is held until the tree resumes; then repair mode goes off, the
 * bytes never sent are written, and the network is unlocked. A failed restore closes them
 * silently and unlocks.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { close, F, fcntl } from "../syscalls/mod.ts";
import { setsockopt, SO } from "../syscalls/socket.ts";
import { type Connection, connectionText } from "./addr.ts";
import { type LockMethod, NetworkLock } from "./netlock.ts";
import { type NamespaceSockets, withSocketsIn } from "./ns_sockets.ts";
import {
  type BufferSizes,
  finishTcpRestore,
  readTcpStream,
  repairOff,
  repairOn,
  type TcpStream,
} from "./tcp_repair.ts";

/**
 * Where a dump records, before acting, how to undo what it does to connections should criu die
 * (dump/guard.ts).
 */
export interface UndoRecorder {
  /** Socket `fd` of task `pid` is about to go into repair mode. */
  watchSocket(pid: number, fd: number, reuseaddr: boolean): void;
  /** A command that removes a lock about to be taken. */
  undoWith(argv: string[], input?: string): void;
}

/** The task descriptor a dumped connection is reached through. */
export interface SocketOwner {
  pid: number;
  fd: number;
  /** Its SO_REUSEADDR, which leaving repair mode clears. */
  reuseaddr: boolean;
}

/** A socket held here. */
interface Held {
  /** This process's descriptor of it. */
  fd: number;
  /** Dump: its SO_REUSEADDR, given back when it leaves repair mode. */
  reuseaddr?: boolean;
  /** Its connection, once read (dump) or as rebuilt (restore). */
  stream?: TcpStream;
  /** Restore: the buffer sizes to give it back at the end. */
  bufs?: BufferSizes;
  /** Restore: the helper of its network namespace when nested in the tree's. */
  ns?: NamespaceSockets;
  /** Whether it is in repair mode. */
  repaired: boolean;
}

/** A connection noted by a dump, to be read by `checkpointPending`. */
interface Pending {
  ino: number;
  conn: Connection;
  owner: SocketOwner;
  what: string;
  /** Its namespace is locked whole (a nested one's): it needs no lock of its own. */
  lockedWhole: boolean;
  /** Who waits for its stream (one per descriptor of the socket). */
  readers: ((stream: TcpStream) => void)[];
}

/** Established connections of one dump or restore, held in repair mode. */
export class RepairedConnections {
  readonly lock: NetworkLock;
  readonly #log: Logger;
  readonly #byIno = new Map<number, Held>();
  #pending: Pending[] = [];

  /** `netns`: a task in the network namespace of the connections, when not criu's. */
  constructor(method: LockMethod, rootPid: number, log: Logger, netns?: number) {
    this.lock = new NetworkLock(method, rootPid, log, netns);
    this.#log = log;
  }

  /**
   * Dump: notes connection `c` of socket `ino` (`fd`: a descriptor of this process, which
   * stays the caller's) for `checkpointPending`, which hands its stream to `done`. A socket
   * met again (shared by several descriptors) is read once. `lockedWhole`: its network
   * namespace is locked whole, so the connection gets no lock of its own.
   */
  add(
    fd: number,
    ino: number,
    c: Connection,
    what: string,
    done: (s: TcpStream) => void,
    owner: SocketOwner,
    lockedWhole = false,
  ): void {
    const known = this.#byIno.get(ino);
    if (known?.stream) return done(known.stream);
    const pending = this.#pending.find((p) => p.ino === ino);
    if (pending) return void pending.readers.push(done);
    this.#byIno.set(ino, {
      fd: fcntl(fd, F.DUPFD_CLOEXEC, 3),
      repaired: false,
      reuseaddr: owner.reuseaddr,
    });
    this.#pending.push({ ino, conn: c, what, readers: [done], owner, lockedWhole });
  }

  /** Whether connections wait for {@link checkpointPending}. */
  get hasPending(): boolean {
    return this.#pending.length > 0;
  }

  /** The inodes of the sockets waiting for {@link checkpointPending}. */
  get pendingInodes(): number[] {
    return this.#pending.map((p) => p.ino);
  }

  /**
   * Dump: locks every connection noted since the last call, all in one go, then puts each
   * into repair mode and reads it. `undo` learns of each step before it is taken.
   */
  checkpointPending(undo?: UndoRecorder): void {
    const todo = this.#pending;
    this.#pending = [];
    const conns = todo.filter((p) => !p.lockedWhole).map((p) => p.conn);
    for (const u of this.lock.undoCommands(conns)) undo?.undoWith(u.argv, u.input);
    this.lock.lockAll(conns);
    for (const p of todo) {
      const held = this.#byIno.get(p.ino)!;
      undo?.watchSocket(p.owner.pid, p.owner.fd, p.owner.reuseaddr);
      repairOn(held.fd);
      held.repaired = true;
      // Test hook: criu dies with a connection in repair mode (tests/kill_test.ts).
      if (Deno.env.get("CRIU_TEST_DIE_AT") === "in-repair") Deno.kill(Deno.pid, "SIGKILL");
      const stream = held.stream = readTcpStream(held.fd, p.what);
      // Out of repair mode at once: the lock and the frozen tree keep it as read, and a task
      // that heals after criu's death finds a working socket (dump/guard.ts).
      this.#leaveRepair(held);
      this.#log.info(
        `TCP ${connectionText(p.conn)}: ${stream.inqLen} bytes to read, ${stream.outqLen} to ` +
          `send (${stream.unsqLen} unsent)`,
      );
      for (const r of p.readers) r(stream);
    }
  }

  /** Takes a held socket out of repair mode with its SO_REUSEADDR back (repair clears it). */
  #leaveRepair(held: Held): void {
    repairOff(held.fd);
    held.repaired = false;
    const on = new Uint8Array(new Int32Array([held.reuseaddr ? 1 : 0]).buffer);
    setsockopt(held.fd, SO.REUSEADDR, on);
  }

  /**
   * Dump: every connection goes into repair mode for the tree's death, so that its sockets
   * close silently (neither FIN nor reset), and the restore can take their place.
   */
  repairForKill(): void {
    for (const held of this.#byIno.values()) {
      repairOn(held.fd);
      held.repaired = true;
    }
  }

  /**
   * Holds restored socket `fd` (a duplicate, in repair mode) until `finishRestore`; `ns`: the
   * helper of the nested network namespace it was made in, where what it sends last is made.
   */
  hold(
    fd: number,
    ino: number,
    stream: TcpStream,
    bufs: BufferSizes,
    ns?: NamespaceSockets,
  ): void {
    this.#byIno.set(ino, {
      fd: fcntl(fd, F.DUPFD_CLOEXEC, 3),
      stream,
      bufs,
      repaired: true,
      ns,
    });
  }

  /** How many connections are held. */
  get size(): number {
    return this.#byIno.size;
  }

  /**
   * Dump: the connections go on as they were (repair mode off) and the network is unlocked.
   * Never throws: a connection that cannot go on is logged.
   */
  resume(): void {
    for (const [ino, held] of this.#byIno) {
      try {
        if (held.repaired) this.#leaveRepair(held);
      } catch (e) {
        this.#log.error(`TCP socket:[${ino}] cannot go on: ${(e as Error).message}`);
      }
      close(held.fd);
    }
    this.#byIno.clear();
    this.lock.unlock();
  }

  /**
   * Restore: the network is unlocked, and the rebuilt connections go on (repair mode off,
   * then the bytes they had not sent yet, and a FIN that waited behind them). Throws on the first
   * that cannot; the caller then kills the tree and drops the rest.
   */
  finishRestore(): void {
    // As criu: the network first, so that the window probe each socket sends as it leaves
    // repair mode reaches its peer (a peer gone answers it with a reset at once).
    this.lock.unlock();
    for (const [ino, { fd, stream, bufs, ns }] of this.#byIno) {
      const finish = () => finishTcpRestore(fd, stream!, bufs!, `socket:[${ino}]`);
      if (ns) withSocketsIn(ns, finish);
      else finish();
      close(fd);
      this.#byIno.delete(ino);
    }
  }

  /**
   * The tree is dead: the sockets close in repair mode (no FIN, no reset). After a dump the
   * lock stays for the restore to remove; after a failed restore `unlock` removes it too.
   */
  drop(opts: { unlock?: boolean } = {}): void {
    for (const { fd } of this.#byIno.values()) close(fd);
    this.#byIno.clear();
    if (opts.unlock) this.lock.unlock();
  }
}
