/**
 * `--freeze-cgroup DIR`: the tree is frozen through its cgroup's freezer instead of task by
 * task: the whole cgroup stops at once (cgroup v1 freezer.state FROZEN, or cgroup v2
 * cgroup.freeze 1), so no task can fork or exit while it is walked; every task of the cgroup
 * is then seized (ptrace seize and interrupt, which a frozen task takes once thawed) and the
 * cgroup is thawed: the tasks stop in ptrace instead. Race-free against forks, and one stop for
 * all instead of one per task.
 *
 * Should criu die while the cgroup is frozen, the guard thaws it (the caller records how).
 *
 * @module
 */
import { type PendingSeize, SeizedTask, SeizeError } from "./seize.ts";
import { sleep } from "../syscalls/mod.ts";

/** A cgroup's freezer: its files and words. */
interface Freezer {
  dir: string;
  /** The file that freezes and thaws, and what it takes. */
  control: string;
  frozen: string;
  thawed: string;
  /** Whether the cgroup is frozen now. */
  isFrozen(): boolean;
  /** The tasks (threads) of the cgroup and its descendants. */
  tasks(): number[];
}

function readText(path: string): string {
  return Deno.readTextFileSync(path);
}

/** The tasks listed in `file` of `dir` and of every cgroup below it. */
function tasksBelow(dir: string, file: string): number[] {
  const out = readText(`${dir}/${file}`).split("\n").filter(Boolean).map(Number);
  for (const e of Deno.readDirSync(dir)) {
    if (e.isDirectory) out.push(...tasksBelow(`${dir}/${e.name}`, file));
  }
  return out;
}

/** The freezer of cgroup directory `dir` (v1 or v2), or an error naming what is missing. */
function freezerOf(dir: string): Freezer {
  const has = (f: string) => {
    try {
      return Deno.statSync(`${dir}/${f}`).isFile;
    } catch {
      return false;
    }
  };
  if (has("cgroup.freeze")) {
    return {
      dir,
      control: `${dir}/cgroup.freeze`,
      frozen: "1",
      thawed: "0",
      isFrozen: () => /^frozen 1$/m.test(readText(`${dir}/cgroup.events`)),
      tasks: () => tasksBelow(dir, "cgroup.threads"),
    };
  }
  if (has("freezer.state")) {
    return {
      dir,
      control: `${dir}/freezer.state`,
      frozen: "FROZEN",
      thawed: "THAWED",
      isFrozen: () => readText(`${dir}/freezer.state`).trim() === "FROZEN",
      tasks: () => tasksBelow(dir, "tasks"),
    };
  }
  throw new SeizeError(
    `Cannot freeze cgroup ${dir}: it has no freezer (neither cgroup.freeze nor freezer.state)`,
  );
}

/** A cgroup frozen for a dump; its tasks seized, waiting to be collected. */
export interface FrozenCgroup {
  /** The file and word that thaw it (for a guard, should criu die). */
  readonly thaw: { file: string; word: string };
  /** Its tasks, seized and asked to stop. */
  readonly seized: Map<number, PendingSeize>;
  /** How long freezing the cgroup took, in milliseconds. */
  readonly freezeMs: number;
}

/**
 * Freezes cgroup `dir` (waiting `timeoutMs` at most), seizes every task in it, and thaws it.
 * `beforeFreeze` learns how to thaw it before it is frozen. On failure the cgroup is thawed
 * and every task let go. A cgroup frozen already is refused: thawing it after would change it.
 */
export async function freezeCgroup(
  dir: string,
  timeoutMs: number,
  beforeFreeze: (thaw: { file: string; word: string }) => void | Promise<void>,
): Promise<FrozenCgroup> {
  const fz = freezerOf(dir);
  if (fz.isFrozen()) {
    throw new SeizeError(`Cannot freeze cgroup ${dir}: it is frozen already`);
  }
  const thaw = { file: fz.control, word: fz.thawed };
  await beforeFreeze(thaw);
  const seized = new Map<number, PendingSeize>();
  const t0 = performance.now();
  Deno.writeTextFileSync(fz.control, fz.frozen);
  let freezeMs: number;
  try {
    while (!fz.isFrozen()) {
      if (performance.now() - t0 > timeoutMs) {
        throw new SeizeError(`Cannot freeze cgroup ${dir}: not frozen after ${timeoutMs} ms`);
      }
      await sleep(1);
    }
    freezeMs = performance.now() - t0;
    // Test hook: criu dies with the cgroup frozen (tests/tree_test.ts): the guard thaws it.
    if (Deno.env.get("CRIU_TEST_DIE_AT") === "frozen") Deno.kill(Deno.pid, "SIGKILL");
    for (const tid of fz.tasks()) seized.set(tid, SeizedTask.begin(tid));
  } catch (e) {
    // Thawed first: a seized task reaches its ptrace stop only then, and leaves it.
    Deno.writeTextFileSync(fz.control, fz.thawed);
    for (const p of seized.values()) {
      try {
        p.finish(timeoutMs).resume();
      } catch {
        p.abandon();
      }
    }
    throw e;
  }
  // The tasks take their ptrace stops on the way out of the freezer.
  Deno.writeTextFileSync(fz.control, fz.thawed);
  return { thaw, seized, freezeMs };
}
