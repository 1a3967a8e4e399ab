/**
 * Starting the restore helper (parasite/helpers/restore_helper.c): the static executable that
 * creates each restored task with clone3(set_tid), because the Deno process must never fork.
 *
 * The helper is executed from a memfd (util/helper_exe.ts).
 *
 * @module
 */
import { readFirstLine } from "../util/first_line.ts";
import { helperExecutable } from "../util/helper_exe.ts";
import { close, O, pipe2, tryRead, writeAll } from "../syscalls/mod.ts";
import { spawnSibling } from "../syscalls/spawn.ts";

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
 * waiting for it.
 */
export async function spawnTask(
  pid: number,
  detach: boolean,
  cloneFlags = 0,
  clocks?: TimeNamespaceClocks,
  joinNet?: string,
  sibling = false,
): Promise<HelperTask> {
  const time = clocks
    ? [clocks.monotonic, clocks.boottime].flatMap(([sec, nsec]) => [`${sec}`, `${nsec}`])
    : [];
  if (sibling) {
    const args = [`${pid}`, "detach", `${cloneFlags | (clocks ? CLONE_NEWTIME : 0)}`, ...time];
    return spawnSiblingTask(pid, args, joinNet);
  }
  const helper = new Deno.Command(helperExecutable("restore_helper"), {
    args: [
      `${pid}`,
      detach ? "detach" : "wait",
      `${cloneFlags | (clocks ? CLONE_NEWTIME : 0)}`,
      ...time,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
    env: joinNet ? { DENO_CRIU_JOIN_NET: joinNet } : {},
  }).spawn();
  const text = await readFirstLine(helper.stdout);
  const m = /^(child|error) (-?\d+)/.exec(text);
  if (!m) {
    await helper.status;
    throw new Error(`The restore helper failed to start task ${pid}: ${JSON.stringify(text)}`);
  }
  if (m[1] === "error") {
    await helper.stdin.close().catch(() => {});
    await helper.status;
    if (Number(m[2]) === 17) throw new PidTakenError(pid);
    throw new Error(`Cannot create task ${pid}: clone3 failed with errno ${m[2]}`);
  }
  const writer = helper.stdin.getWriter();
  let told = false;
  const tell = async (word?: string) => {
    if (told) return;
    told = true;
    try {
      if (word) await writer.write(new TextEncoder().encode(word));
      await writer.close();
    } catch {
      // The helper is gone already.
    }
  };
  return { pid: Number(m[2]), helper, release: () => tell("g"), abandon: () => tell() };
}

/**
 * The helper started as criu's sibling (restore --restore-sibling), so that the task it makes
 * with CLONE_PARENT is born criu's caller's child: its stdin and stdout are pipes of ours, and
 * its end is watched through /proc (its parent, not criu, reaps it).
 */
function spawnSiblingTask(pid: number, args: string[], joinNet?: string): HelperTask {
  const [inR, inW] = pipe2(O.CLOEXEC);
  const [outR, outW] = pipe2(O.CLOEXEC);
  let hpid: number;
  try {
    const path = helperExecutable("restore_helper");
    const env: Record<string, string> = { DENO_CRIU_SIBLING: "1" };
    if (joinNet) env.DENO_CRIU_JOIN_NET = joinNet;
    hpid = spawnSibling(path, [path, ...args], env, [inR, outW, 2]);
  } catch (e) {
    for (const fd of [inR, inW, outR, outW]) close(fd);
    throw e;
  } finally {
    close(inR);
    close(outW);
  }
  let text = "";
  const buf = new Uint8Array(256);
  for (;;) {
    const n = tryRead(outR, buf);
    if (n === -4) continue;
    if (n <= 0) break;
    text += new TextDecoder().decode(buf.subarray(0, n));
    if (text.includes("\n")) break;
  }
  close(outR);
  const status = (async () => {
    for (;;) {
      try {
        const state = Deno.readTextFileSync(`/proc/${hpid}/stat`).split(") ")[1]?.[0];
        if (state === "Z" || state === "X") break;
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return { code: 0 };
  })();
  const m = /^(child|error) (-?\d+)/.exec(text);
  if (!m || m[1] === "error") {
    close(inW);
    if (m && Number(m[2]) === 17) throw new PidTakenError(pid);
    throw new Error(
      m
        ? `Cannot create task ${pid}: clone3 failed with errno ${m[2]}`
        : `The restore helper failed to start task ${pid}: ${JSON.stringify(text)}`,
    );
  }
  let told = false;
  const tell = (word?: string) => {
    if (told) return Promise.resolve();
    told = true;
    try {
      if (word) writeAll(inW, new TextEncoder().encode(word), "the restore helper");
    } catch {
      // The helper is gone already.
    } finally {
      close(inW);
    }
    return Promise.resolve();
  };
  return { pid: Number(m[2]), helper: { status }, release: () => tell("g"), abandon: () => tell() };
}
