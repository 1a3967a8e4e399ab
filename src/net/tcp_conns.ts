/**
 * The TCP connections of a dump or a restore (`RepairedConnections`), held in repair mode
 * through descriptors of this process.
 *
 * Dump: each connection is locked in the network, put into repair mode and read once. A dump
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

/** Established connections of one dump, held in repair mode. */
export class RepairedConnections {
  readonly lock: NetworkLock;
  readonly #log: Logger;
  readonly #byIno = new Map<number, { fd: number; stream: TcpStream; bufs?: BufferSizes }>();

  constructor(method: LockMethod, rootPid: number, log: Logger) {
    this.lock = new NetworkLock(method, rootPid, log);
    this.#log = log;
  }

  /**
   * Locks connection `c` of socket `ino`, puts the socket (`fd`, a descriptor of this process
   * that stays the caller's) into repair mode and reads it. A socket met again (shared by
   * several descriptors) is read once.
   */
  checkpoint(fd: number, ino: number, c: Connection, what: string): TcpStream {
    const known = this.#byIno.get(ino);
    if (known) return known.stream;
    this.lock.lock(c);
    const mine = fcntl(fd, F.DUPFD_CLOEXEC, 3);
    repairOn(mine);
    this.#byIno.set(ino, { fd: mine, stream: undefined as unknown as TcpStream });
    const stream = readTcpStream(mine, what);
    this.#byIno.set(ino, { fd: mine, stream });
    this.#log.info(
      `TCP ${connectionText(c)}: ${stream.inqLen} bytes to read, ${stream.outqLen} to send ` +
        `(${stream.unsqLen} unsent)`,
    );
    return stream;
  }

  /** Holds restored socket `fd` (a duplicate, in repair mode) until `finishRestore`. */
  hold(fd: number, ino: number, stream: TcpStream, bufs: BufferSizes): void {
    this.#byIno.set(ino, { fd: fcntl(fd, F.DUPFD_CLOEXEC, 3), stream, bufs });
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
    for (const [ino, { fd }] of this.#byIno) {
      try {
        repairOff(fd);
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
      finishTcpRestore(fd, stream, bufs!, `socket:[${ino}]`);
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
