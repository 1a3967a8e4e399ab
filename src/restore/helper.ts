/**
 * Starting the restore helper (parasite/helpers/restore_helper.c): the static executable that
 * creates each restored task with clone3(set_tid), because the Deno process must never fork.
 *
 * The helper is executed from a memfd (util/helper_exe.ts).
 *
 * @module
 */
import { helperExecutable } from "../util/helper_exe.ts";
import { startHelper } from "../util/helper_process.ts";
import {
  CLOCK,
  clockGettime,
  close,
  lastErrno,
  NR,
  O,
  open,
  rawSyscall,
  writeAll,
} from "../syscalls/mod.ts";
import { cloneSiblingTask } from "../syscalls/spawn.ts";
import { readTimeOffsets } from "../tree/proc.ts";
import { type UserNamespace, writeIdMaps } from "../tree/userns.ts";

/** The PID asked for is in use. */
export class PidTakenError extends Error {
  /** The PID. */
  readonly pid: number;
  constructor(pid: number) {
    super(
      `Cannot restore task ${pid}: PID ${pid} is in use; stop that process, or restore into a ` +
        `fresh PID namespace (e.g. unshare --pid --fork --mount-proc deno run -A main.ts restore ...)`,
    );
    this.name = "PidTakenError";
    this.pid = pid;
  }
}

/** A task made by the helper, sleeping until we seize it. */
export interface HelperTask {
  /** The new task's PID as criu sees it (the dumped one, unless in a new PID namespace). */
  pid: number;
  /**
   * The helper process. It waits for {@link HelperTask.release}; then it exits at once when
   * detached, else when the task exits. If we die or give up first, it kills and reaps the tree.
   * `status` settles when it has exited (code 0 for a sibling helper, whose status is its
   * parent's to read).
   */
  helper: { status: Promise<{ code: number }> };
  /** Tells the helper the tree runs: it stops guarding it. */
  release(): Promise<void>;
  /** Tells the helper the restore failed: it kills and reaps what is left. */
  abandon(): Promise<void>;
}

/** CLONE_NEWTIME. */
const CLONE_NEWTIME = 0x80;

/** What the clocks of a new time namespace read when it is made: [seconds, nanoseconds]. */
export interface TimeNamespaceClocks {
  monotonic: [bigint, bigint];
  boottime: [bigint, bigint];
}

/**
 * Creates a task with PID `pid`, in new namespaces of the kinds `cloneFlags` names (CLONE_NEW*),
 * and in a new time namespace whose clocks read `clocks`, when given, or in the network
 * namespace bound at `joinNet` (--join-ns net:PATH); `detach` lets the helper exit instead of
 * waiting for it. A new user namespace (CLONE_NEWUSER) gets the id maps of `userns` before the
 * task does anything as one of its ids.
 */
export async function spawnTask(
  pid: number,
  detach: boolean,
  cloneFlags = 0,
  clocks?: TimeNamespaceClocks,
  joinNet?: string,
  sibling = false,
  userns?: UserNamespace,
): Promise<HelperTask> {
  const time = clocks
    ? [clocks.monotonic, clocks.boottime].flatMap(([sec, nsec]) => [`${sec}`, `${nsec}`])
    : [];
  if (sibling) return spawnSiblingTask(pid, cloneFlags, clocks, joinNet, userns);
  const helper = startHelper("restore_helper", [
    `${pid}`,
    detach ? "detach" : "wait",
    `${cloneFlags | (clocks ? CLONE_NEWTIME : 0)}`,
    ...time,
  ], { input: true, env: joinNet ? { DENO_CRIU_JOIN_NET: joinNet } : undefined });
  let told = false;
  const tell = (word?: string) => {
    if (told) return Promise.resolve();
    told = true;
    try {
      if (word) writeAll(helper.input, new TextEncoder().encode(word), "the restore helper");
    } catch {
      // The helper is gone already.
    } finally {
      close(helper.input);
    }
    return Promise.resolve();
  };
  const m = /^(child|error) (-?\d+)/.exec(helper.firstLine);
  if (!m) {
    await tell();
    await helper.status;
    throw new Error(
      `The restore helper failed to start task ${pid}: ${JSON.stringify(helper.firstLine)}`,
    );
  }
  if (m[1] === "error") {
    await tell();
    await helper.status;
    if (Number(m[2]) === 17) throw new PidTakenError(pid);
    throw new Error(`Cannot create task ${pid}: clone3 failed with errno ${m[2]}`);
  }
  const made = { pid: Number(m[2]), helper, release: () => tell("g"), abandon: () => tell() };
  if (userns) {
    try {
      writeIdMaps(made.pid, userns);
    } catch (e) {
      await made.abandon();
      await helper.status;
      throw e;
    }
  }
  return made;
}

/**
 * The task to restore made as criu's sibling (restore --restore-sibling: born criu's caller's
 * child, as LXC wants its container's init, which it finds first among its children): criu
 * makes it itself, with its id and namespaces (spawn.ts, cloneSiblingTask), running a program
 * that sleeps until it is seized; no helper stands between. Its time namespace, if any, is
 * made first here (criu's own children are made in it from now on, which changes nothing
 * they do). Given up, the task is killed.
 */
function spawnSiblingTask(
  pid: number,
  cloneFlags: number,
  clocks?: TimeNamespaceClocks,
  joinNet?: string,
  userns?: UserNamespace,
): HelperTask {
  if (joinNet && userns) {
    throw new Error(
      "Cannot restore a tree in a user namespace of its own with --restore-sibling into a " +
        "network namespace joined (--join-ns, or one dumped as external)",
    );
  }
  if (clocks) enterNewTimeNamespace(clocks);
  // A network namespace joined: the child joins it before anything else.
  using net = joinNet === undefined ? undefined : openNs(joinNet);
  // In a user namespace of its own, the task gets its maps before it runs its program, which
  // it reaches through its own copy of criu's descriptor (criu's /proc is closed to it).
  const child = userns
    ? cloneSiblingTask(
      helperExecutable("sibling_task", true),
      cloneFlags,
      pid,
      (c) => writeIdMaps(c, userns),
    )
    : cloneSiblingTask(helperExecutable("sibling_task"), cloneFlags, pid, undefined, net?.fd);
  if (child === -17) throw new PidTakenError(pid);
  if (child < 0) throw new Error(`Cannot create task ${pid}: clone3 failed with errno ${-child}`);
  const status = Promise.resolve({ code: 0 });
  return {
    pid: child,
    helper: { status },
    release: () => Promise.resolve(),
    abandon: () => {
      try {
        Deno.kill(child, "SIGKILL");
      } catch {
        // gone
      }
      return Promise.resolve();
    },
  };
}

/** A namespace's descriptor (`path`: a bound namespace, or /proc/PID/ns/...), closed on dispose. */
function openNs(path: string): { fd: number } & Disposable {
  const fd = open(path, O.RDONLY | O.CLOEXEC);
  return { fd, [Symbol.dispose]: () => close(fd) };
}

/**
 * Makes this process's future children start in a new time namespace whose monotonic and boot
 * clocks read `clocks` now (offsets count from the host's clocks: ours less our own offsets).
 */
function enterNewTimeNamespace(clocks: TimeNamespaceClocks): void {
  // Read before unshare: /proc/self/timens_offsets then shows the new namespace's.
  const own = readTimeOffsets(Deno.pid);
  if (rawSyscall(NR.unshare, CLONE_NEWTIME) < 0n) {
    throw new Error(`Cannot make a time namespace: errno ${lastErrno()}`);
  }
  Deno.writeTextFileSync("/proc/self/timens_offsets", timeOffsets(clocks, own));
}

/**
 * /proc/PID/timens_offsets of a new time namespace whose clocks read `clocks` now, for a task
 * in criu's time namespace, whose offsets are `own` (offsets count from the host's clocks).
 */
export function timeOffsets(
  clocks: TimeNamespaceClocks,
  own = readTimeOffsets(Deno.pid),
): string {
  const lines = [["monotonic", CLOCK.MONOTONIC, clocks.monotonic], [
    "boottime",
    CLOCK.BOOTTIME,
    clocks.boottime,
  ]] as const;
  return lines.map(([name, clock, [sec, nsec]]) => {
    const [s, n] = clockGettime(clock);
    const [os, on] = own.get(clock) ?? [0n, 0n];
    const host = (s - os) * 1_000_000_000n + n - on;
    let off = sec * 1_000_000_000n + nsec - host;
    const offSec = off >= 0n ? off / 1_000_000_000n : -((-off + 999_999_999n) / 1_000_000_000n);
    off -= offSec * 1_000_000_000n;
    return `${name} ${offSec} ${off}\n`;
  }).join("");
}
