/**
 * Starting a program as criu's own sibling (its parent's child): what `restore
 * --restore-sibling` needs of the helper that makes the tree. Deno must never fork itself, so
 * the child runs only a freestanding blob (parasite/spawn.c) on a stack of its own until
 * execve: glibc's clone with CLONE_PARENT | CLONE_VM | CLONE_VFORK, every signal blocked in
 * the calling thread meanwhile (the child must not run Deno's handlers).
 *
 * @module
 */
import { decodeBase64 } from "../util/base64.ts";
import { BLOBS } from "../../parasite/blobs_gen.ts";
import { Errno } from "./errno.ts";
import { addressOf, cString, lastErrno, libc } from "./ffi.ts";
import { rawSyscall } from "./process.ts";
import { NR } from "./syscall_numbers.ts";

const CLONE_VM = 0x100, CLONE_PARENT = 0x8000, CLONE_VFORK = 0x4000, SIGCHLD = 17;
const PROT_RW = 3, PROT_RX = 5, MAP_PRIVATE_ANON = 0x22;
const STACK = 64 * 1024;

/**
 * Runs `path` with `argv` and `env` as a child of criu's parent, with descriptors `fds` (this
 * process's) as its 0, 1 and 2 (-1: its own inherited one). Returns its PID. criu cannot wait
 * for it: its parent does.
 */
export function spawnSibling(
  path: string,
  argv: string[],
  env: Record<string, string>,
  fds: [number, number, number],
): number {
  const code = decodeBase64(BLOBS.spawn);
  const size = BigInt(Math.ceil(code.length / 4096) * 4096);
  const text = libc.mmap(0n, size, PROT_RW, MAP_PRIVATE_ANON, -1, 0n);
  const stack = libc.mmap(0n, BigInt(STACK), PROT_RW, MAP_PRIVATE_ANON, -1, 0n);
  try {
    if (text === 0xffffffffffffffffn || stack === 0xffffffffffffffffn) {
      throw new Errno("mmap", lastErrno(), "the spawn blob");
    }
    const view = new Deno.UnsafePointerView(Deno.UnsafePointer.create(text)!);
    new Uint8Array(view.getArrayBuffer(code.length)).set(code);
    if (rawSyscall(NR.mprotect, text, size, PROT_RX) < 0n) {
      throw new Errno("mprotect", lastErrno(), "the spawn blob");
    }
    // Strings and pointer arrays, alive until the child has exec'd (CLONE_VFORK).
    const strings = [path, ...argv, ...Object.entries(env).map(([k, v]) => `${k}=${v}`)]
      .map(cString);
    const ptrs = (list: Uint8Array[]) => new BigUint64Array([...list.map((b) => addressOf(b)), 0n]);
    const argvArr = ptrs(strings.slice(1, 1 + argv.length));
    const envArr = ptrs(strings.slice(1 + argv.length));
    const args = new BigUint64Array([
      addressOf(strings[0]),
      addressOf(argvArr),
      addressOf(envArr),
      ...fds.map((fd) => BigInt.asUintN(64, BigInt(fd))),
    ]);
    const all = new BigUint64Array([0xffffffffffffffffn]);
    const old = new BigUint64Array(1);
    rawSyscall(NR.rt_sigprocmask, 2, /* SIG_SETMASK */ addressOf(all), addressOf(old), 8);
    let pid: number, errno = 0;
    try {
      pid = libc.clone(
        text,
        stack + BigInt(STACK),
        CLONE_PARENT | CLONE_VM | CLONE_VFORK | SIGCHLD,
        addressOf(args),
      );
      if (pid < 0) errno = lastErrno();
    } finally {
      rawSyscall(NR.rt_sigprocmask, 2, addressOf(old), 0n, 8);
    }
    if (pid < 0) throw new Errno("clone", errno, path);
    // Kept alive past the call (the child read them before it exec'd).
    void [strings, argvArr, envArr, args];
    return pid;
  } finally {
    if (text !== 0xffffffffffffffffn) libc.munmap(text, size);
    if (stack !== 0xffffffffffffffffn) libc.munmap(stack, BigInt(STACK));
  }
}
