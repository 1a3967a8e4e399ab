/**
 * The heal table: the record, kept inside an infected process, of every descriptor and mapping
 * criu made there, so that the task can remove them by itself if criu dies (parasite/heal.c
 * reads it). This class keeps it, and a mirror of it here.
 *
 * ```
 *   0  inflight  u64      where a thread other than the leader is: 0 away, 1 inside the area
 *                         (heal waits for `left`), 2 at its doorway (heal gives it time)
 *   8  fds[32]   s32      -1 for none
 * 136  maps[8]   {u64 addr, u64 len}, len 0 for none
 * 264  left      set by that thread once it has left the area (heal.c)
 * 272
 * ```
 * Order of updates: a descriptor or mapping is recorded as soon as it exists (pipe2 writes its
 * descriptors straight into the table) and forgotten before criu removes it. If criu dies in
 * between, the thing leaks rather than heal removing something that is no longer criu's.
 *
 * @module
 */
import { readRemote, remoteAdd, type RemotePtr, writeRemote } from "../syscalls/mod.ts";

const FDS = 8;
const NFDS = 32;
const MAPS = 136;
const NMAPS = 8;
const LEFT = 264;

/** Bytes of the table. */
export const HEAL_TABLE_SIZE = 272;

/** The heal table of one process. */
export class HealTable {
  readonly at: RemotePtr;
  #pid: number;
  #fds: number[] = new Array(NFDS).fill(-1);
  #maps: { addr: bigint; len: bigint }[] = Array.from({ length: NMAPS }, () => ({
    addr: 0n,
    len: 0n,
  }));

  /** A table at `at` in task `pid`; {@link init} writes it empty. */
  constructor(pid: number, at: RemotePtr) {
    this.#pid = pid;
    this.at = at;
  }

  /** The table's initial (empty) bytes. */
  static empty(): Uint8Array {
    const b = new Uint8Array(HEAL_TABLE_SIZE);
    new DataView(b.buffer).setBigInt64(0, 0n, true);
    new Int32Array(b.buffer, FDS, NFDS).fill(-1);
    return b;
  }

  /**
   * Address of `n` adjacent free descriptor slots, for a syscall that writes descriptors
   * (pipe2); {@link took} records what it wrote.
   */
  fdSlots(n: number): { index: number; at: RemotePtr } {
    for (let i = 0; i + n <= NFDS; i++) {
      if (this.#fds.slice(i, i + n).every((fd) => fd === -1)) {
        return { index: i, at: remoteAdd(this.at, FDS + i * 4) };
      }
    }
    throw new Error(`Task ${this.#pid}: too many descriptors made by criu`);
  }

  /** Reads back the descriptors a syscall wrote at slot `index`. */
  took(index: number, n: number): number[] {
    const got = new Int32Array(n);
    readRemote(this.#pid, remoteAdd(this.at, FDS + index * 4), new Uint8Array(got.buffer));
    for (let i = 0; i < n; i++) this.#fds[index + i] = got[i];
    return [...got];
  }

  /** Records descriptor `fd`, made (or about to be made) by criu. */
  noteFd(fd: number): void {
    const { index, at } = this.fdSlots(1);
    this.#fds[index] = fd;
    writeRemote(this.#pid, at, new Uint8Array(new Int32Array([fd]).buffer));
  }

  /** Forgets descriptor `fd` (before criu closes it). */
  forgetFd(fd: number): void {
    const i = this.#fds.indexOf(fd);
    if (i < 0) return;
    this.#fds[i] = -1;
    writeRemote(
      this.#pid,
      remoteAdd(this.at, FDS + i * 4),
      new Uint8Array(new Int32Array([-1]).buffer),
    );
  }

  /** Descriptors recorded. */
  get fds(): number[] {
    return this.#fds.filter((fd) => fd >= 0);
  }

  /** Records a mapping criu made. */
  noteMap(addr: bigint, len: bigint): void {
    const i = this.#maps.findIndex((m) => m.len === 0n);
    if (i < 0) throw new Error(`Task ${this.#pid}: too many mappings made by criu`);
    this.#maps[i] = { addr, len };
    this.#writeMap(i);
  }

  /** Forgets the mapping at `addr` (before criu unmaps it). */
  forgetMap(addr: bigint): void {
    const i = this.#maps.findIndex((m) => m.len !== 0n && m.addr === addr);
    if (i < 0) return;
    this.#maps[i] = { addr: 0n, len: 0n };
    this.#writeMap(i);
  }

  #writeMap(i: number): void {
    const m = this.#maps[i];
    writeRemote(
      this.#pid,
      remoteAdd(this.at, MAPS + i * 16),
      new Uint8Array(new BigUint64Array([m.addr, m.len]).buffer),
    );
  }

  /** Address of the word a thread sets once it left the area. */
  get leftAt(): RemotePtr {
    return remoteAdd(this.at, LEFT);
  }

  /**
   * Says where a thread other than the leader is: away from the area, inside it (heal waits for
   * the word that says it left), or at its doorway or about to be (heal gives it time to go).
   */
  setThread(where: "away" | "inside" | "doorway"): void {
    if (where === "inside") writeRemote(this.#pid, this.leftAt, new Uint8Array(8));
    const word = { away: 0n, inside: 1n, doorway: 2n }[where];
    writeRemote(this.#pid, this.at, new Uint8Array(new BigUint64Array([word]).buffer));
  }
}
