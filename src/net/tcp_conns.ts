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
import { type Connection, connectionText } from "./addr.ts";
import { type LockMethod, NetworkLock } from "./netlock.ts";
import {
  type BufferSizes,
  finishTcpRestore,
  readTcpStream,
  repairOff,
  repairOn,
  type TcpStream,
} from "./tcp_repair.ts";

/** A socket held here. */
interface Held {
  /** This process's descriptor of it. */
  fd: number;
  /** Its connection, once read (dump) or as rebuilt (restore). */
  stream?: TcpStream;
  /** Restore: the buffer sizes to give it back at the end. */
  bufs?: BufferSizes;
  /** Whether it is in repair mode. */
  repaired: boolean;
}

/** A connection noted by a dump, to be read by `checkpointPending`. */
interface Pending {
  ino: number;
  conn: Connection;
  what: string;
  /** Who waits for its stream (one per descriptor of the socket). */
  readers: ((stream: TcpStream) => void)[];
}

/** Established connections of one dump or restore, held in repair mode. */
export class RepairedConnections {
  readonly lock: NetworkLock;
  readonly #log: Logger;
  readonly #byIno = new Map<number, Held>();
  #pending: Pending[] = [];

  constructor(method: LockMethod, rootPid: number, log: Logger) {
    this.lock = new NetworkLock(method, rootPid, log);
    this.#log = log;
  }

  /**
   * Dump: notes connection `c` of socket `ino` (`fd`: a descriptor of this process, which
   * stays the caller's) for `checkpointPending`, which hands its stream to `done`. A socket
   * met again (shared by several descriptors) is read once.
   */
  add(fd: number, ino: number, c: Connection, what: string, done: (s: TcpStream) => void): void {
    const known = this.#byIno.get(ino);
    if (known?.stream) return done(known.stream);
    const pending = this.#pending.find((p) => p.ino === ino);
    if (pending) return void pending.readers.push(done);
    this.#byIno.set(ino, { fd: fcntl(fd, F.DUPFD_CLOEXEC, 3), repaired: false });
    this.#pending.push({ ino, conn: c, what, readers: [done] });
  }

  /**
   * Dump: locks every connection noted since the last call, all in one go, then puts each
   * into repair mode and reads it.
   */
  checkpointPending(): void {
    const todo = this.#pending;
    this.#pending = [];
    this.lock.lockAll(todo.map((p) => p.conn));
    for (const p of todo) {
      const held = this.#byIno.get(p.ino)!;
      repairOn(held.fd);
      held.repaired = true;
      const stream = held.stream = readTcpStream(held.fd, p.what);
      this.#log.info(
        `TCP ${connectionText(p.conn)}: ${stream.inqLen} bytes to read, ${stream.outqLen} to ` +
          `send (${stream.unsqLen} unsent)`,
      );
      for (const r of p.readers) r(stream);
    }
  }

  /** Holds restored socket `fd` (a duplicate, in repair mode) until `finishRestore`. */
  hold(fd: number, ino: number, stream: TcpStream, bufs: BufferSizes): void {
    this.#byIno.set(ino, { fd: fcntl(fd, F.DUPFD_CLOEXEC, 3), stream, bufs, repaired: true });
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
    for (const [ino, { fd, repaired }] of this.#byIno) {
      try {
        if (repaired) repairOff(fd);
      } catch (e) {
        this.#log.error(`TCP socket:[${ino}] cannot go on: ${(e as Error).message}`);
      }
      close(fd);
    }
    this.#byIno.clear();
    this.lock.unlock();
  }

  /**
   * Restore: the rebuilt connections go on (repair mode off, then the bytes they had not sent
   * yet, and a FIN that waited behind them), and the network is unlocked. Throws on the first
   * that cannot; the caller then kills the tree and drops the rest.
   */
  finishRestore(): void {
    for (const [ino, { fd, stream, bufs }] of this.#byIno) {
      finishTcpRestore(fd, stream!, bufs!, `socket:[${ino}]`);
      close(fd);
      this.#byIno.delete(ino);
    }
    this.lock.unlock();
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
