/**
 * A bump allocator over a region of the task being restored: strings and structs that injected
 * syscalls point at are written here with process_vm_writev.
 *
 * @module
 */
import { cString } from "../syscalls/ffi.ts";
import { remoteAdd, type RemotePtr, writeRemote } from "../syscalls/mod.ts";

/** Bump allocator in another task's memory. */
export class RemoteArena {
  readonly pid: number;
  readonly base: RemotePtr;
  readonly size: number;
  #used = 0;

  constructor(pid: number, base: RemotePtr, size: number) {
    this.pid = pid;
    this.base = base;
    this.size = size;
  }

  /** Copies `bytes` into the task (8-byte aligned); returns their address. */
  put(bytes: Uint8Array): RemotePtr {
    const at = (this.#used + 7) & ~7;
    if (at + bytes.length > this.size) throw new Error("Restorer arena is full");
    const ptr = remoteAdd(this.base, at);
    if (bytes.length) writeRemote(this.pid, ptr, bytes);
    this.#used = at + bytes.length;
    return ptr;
  }

  /** A NUL-terminated string in the task. */
  cstr(s: string): RemotePtr {
    return this.put(cString(s));
  }

  /** u64 words in the task. */
  words(words: (bigint | number)[]): RemotePtr {
    return this.put(
      new Uint8Array(new BigUint64Array(words.map((w) => BigInt.asUintN(64, BigInt(w)))).buffer),
    );
  }

  /** Room for `n` bytes, zeroed; returns the address. */
  reserve(n: number): RemotePtr {
    return this.put(new Uint8Array(n));
  }

  /** Forgets everything allocated (the memory stays mapped). */
  reset(): void {
    this.#used = 0;
  }

  /** How much is in use, to give back later with {@link RemoteArena.release}. */
  mark(): number {
    return this.#used;
  }

  /** Frees everything put since `mark` was taken. */
  release(mark: number): void {
    this.#used = mark;
  }
}
