/**
 * The task to restore made as criu's own sibling (its parent's child): what `restore
 * --restore-sibling` needs ({@link cloneSiblingTask}). Deno must never fork itself, so the
 * child runs only a freestanding blob (parasite/clone_root.c), on a stack of its own, until
 * execve: clone3 with CLONE_PARENT | CLONE_VM | CLONE_VFORK, every signal blocked in the
 * calling thread meanwhile (the child must not run Deno's handlers).
 *
 * @module
 */
import type { BLOBS } from "../../parasite/blobs_gen.ts";
import { MAP_FAILED, mapBlobText } from "./blob_text.ts";
import { Errno } from "./errno.ts";
import { addressOf, cString, lastErrno, libc } from "./ffi.ts";
import { rawSyscall } from "./process.ts";
import { NR } from "./syscall_numbers.ts";

const CLONE_VM = 0x100, CLONE_PARENT = 0x8000, CLONE_VFORK = 0x4000;
const PROT_RW = 3, MAP_PRIVATE_ANON = 0x22;
const STACK = 64 * 1024;

/**
 * Runs `fn` with blob `name` mapped executable and a fresh stack (its lowest address), every
 * signal blocked in this thread; unmaps both after.
 */
function withBlob<T>(name: keyof typeof BLOBS, fn: (text: bigint, stack: bigint) => T): T {
  const { text, size } = mapBlobText(name);
  const stack = libc.mmap(0n, BigInt(STACK), PROT_RW, MAP_PRIVATE_ANON, -1, 0n);
  try {
    if (stack === MAP_FAILED) throw new Errno("mmap", lastErrno(), `blob ${name}`);
    const all = new BigUint64Array([0xffffffffffffffffn]); // every signal
    const old = new BigUint64Array(1);
    rawSyscall(NR.rt_sigprocmask, 2, /* SIG_SETMASK */ addressOf(all), addressOf(old), 8);
    try {
      return fn(text, stack);
    } finally {
      rawSyscall(NR.rt_sigprocmask, 2, addressOf(old), 0n, 8);
    }
  } finally {
    libc.munmap(text, size);
    if (stack !== MAP_FAILED) libc.munmap(stack, BigInt(STACK));
  }
}

/** execve's arguments as C arrays: strings[0] is the path, argv and envp end in a null. */
export interface ExecArgs {
  strings: Uint8Array<ArrayBuffer>[];
  path: bigint;
  argv: BigUint64Array;
  envp: BigUint64Array;
}

/** execve's arguments, as C arrays (kept alive by the caller until the child has exec'd). */
export function execArgs(path: string, argv: string[], env: Record<string, string>): ExecArgs {
  const strings = [path, ...argv, ...Object.entries(env).map(([k, v]) => `${k}=${v}`)]
    .map(cString);
  const ptrs = (list: Uint8Array[]) => new BigUint64Array([...list.map((b) => addressOf(b)), 0n]);
  return {
    strings,
    path: addressOf(strings[0]),
    argv: ptrs(strings.slice(1, 1 + argv.length)),
    envp: ptrs(strings.slice(1 + argv.length)),
  };
}

/**
 * Makes the task to restore as a child of criu's parent, with id `tid` (in its new PID
 * namespace when `cloneFlags` has CLONE_NEWPID) and the namespaces `cloneFlags` names, running
 * `path` (a program that sleeps until criu seizes it). Returns its PID as criu sees it, or
 * -errno (EEXIST: the id is taken).
 *
 * With `netns` (a descriptor of a network namespace), the child joins it first.
 *
 * With `beforeExec` (the child in a user namespace of its own), the child waits before it
 * execs until `beforeExec` has run with its PID (writing the namespace's id maps), then becomes
 * the namespace's root, whose capabilities an exec keeps; this thread waits until it has
 * exec'd. Should `beforeExec` throw, the child exits and the error is thrown.
 */
export function cloneSiblingTask(
  path: string,
  cloneFlags: number,
  tid: number,
  beforeExec?: (child: number) => void,
  netns?: number,
): number {
  const CLONE_CHILD_CLEARTID = 0x200000, FUTEX_WAIT = 0, FUTEX_WAKE = 1;
  const x = execArgs(path, [path], {});
  const setTid = new Int32Array([tid]);
  // The word the child waits on, and the one the kernel clears once it has exec'd or exited.
  const go = new Int32Array(1), running = new Int32Array([-1]);
  return withBlob("clone_root", (text, stack) => {
    // struct clone_args up to set_tid_size (CLONE_ARGS_SIZE_VER1); exit_signal 0, as
    // CLONE_PARENT wants (the child takes criu's own).
    const waits = beforeExec !== undefined;
    const cargs = new BigUint64Array([
      BigInt(
        cloneFlags | CLONE_PARENT | CLONE_VM | (waits ? CLONE_CHILD_CLEARTID : CLONE_VFORK),
      ),
      0n,
      waits ? addressOf(running) : 0n,
      0n,
      0n,
      stack,
      BigInt(STACK),
      0n,
      addressOf(setTid),
      1n,
    ]);
    const args = new BigUint64Array([
      addressOf(cargs),
      80n,
      x.path,
      addressOf(x.argv),
      addressOf(x.envp),
      waits ? addressOf(go) : 0n,
      netns === undefined ? 0n : BigInt(netns + 1),
    ]);
    const call = new Deno.UnsafeFnPointer(
      Deno.UnsafePointer.create(text)!,
      { parameters: ["pointer"], result: "i64" } as const,
    );
    const ret = Number(call.call(Deno.UnsafePointer.of(args)));
    // The child could not join the network namespace (it wrote -errno, and exited).
    if (netns !== undefined && ret > 0 && !waits && BigInt.asIntN(64, args[6]) < 0n) {
      throw new Errno("setns(CLONE_NEWNET)", Number(-BigInt.asIntN(64, args[6])), `task ${tid}`);
    }
    if (waits && ret > 0) {
      try {
        beforeExec(ret);
        go[0] = 1;
      } catch (e) {
        go[0] = -1;
        throw e;
      } finally {
        rawSyscall(NR.futex, addressOf(go), FUTEX_WAKE, 1);
        // Until the child no longer runs on the blob and its stack.
        while (Atomics.load(running, 0) !== 0) {
          rawSyscall(NR.futex, addressOf(running), FUTEX_WAIT, Atomics.load(running, 0), 0n);
        }
      }
    }
    void [x, setTid, cargs, go, running];
    return ret;
  });
}
