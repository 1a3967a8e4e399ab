/**
 * A hold on a frozen tree while criu does what its tasks must never run into half-done: TCP
 * sockets in repair mode, where recv fails with EPERM and a send lands in the queue unsent.
 *
 * ptrace alone cannot promise it: when criu dies, the kernel lets its tracees go at once, before
 * the dump's guard (dump/guard.ts) has taken the sockets out of repair mode. So, for the time of
 * the hold, a SIGSTOP waits queued in every live process that holds such a socket (all of the
 * tree's when one is held by none: in flight in a unix queue, any may receive it): a task let
 * go stops for job control before it runs any code of its own, and the guard sends SIGCONT
 * once the sockets are right. While criu lives the signal is never delivered: the hold ends by
 * taking it back under ptrace ({@link SeizedTask.discardStop}).
 *
 * @module
 */
import { tryKill } from "../syscalls/mod.ts";
import type { FrozenTree } from "./collect.ts";
import { listFds, NoSuchTaskError } from "./proc.ts";
import type { SeizedTask } from "./seize.ts";

const SIGSTOP = 19;
const SIGCONT = 18;

/** Who continues the processes should criu die during the hold (the dump's guard). */
export interface StopWatcher {
  /** Processes `pids` are about to get a SIGSTOP. */
  stopping(pids: number[]): void;
  /** Their SIGSTOPs were taken back. */
  released(): void;
}

/** The processes of `tree` holding each socket, by inode (read once: the tree is frozen). */
export function socketHolders(tree: FrozenTree): Map<number, Set<number>> {
  const holders = new Map<number, Set<number>>();
  for (const p of tree.processes) {
    if (p.zombieExit !== undefined) continue;
    let fds: number[];
    try {
      fds = listFds(p.pid);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link = "";
      try {
        link = Deno.readLinkSync(`/proc/${p.pid}/fd/${fd}`);
      } catch {
        // closed meanwhile (it cannot be: frozen), or not ours to read
      }
      const ino = /^socket:\[(\d+)\]$/.exec(link)?.[1];
      if (!ino) continue;
      const set = holders.get(Number(ino)) ?? new Set<number>();
      set.add(p.pid);
      holders.set(Number(ino), set);
    }
  }
  return holders;
}

/**
 * The processes that could run into sockets `inodes`: those holding them (`holders`), or all
 * (undefined) when one is held by none, as a socket in flight in a unix queue may be received
 * by any.
 */
export function holdersOf(
  holders: ReadonlyMap<number, ReadonlySet<number>>,
  inodes: readonly number[],
): Set<number> | undefined {
  const out = new Set<number>();
  for (const ino of inodes) {
    const set = holders.get(ino);
    if (!set) return undefined;
    for (const pid of set) out.add(pid);
  }
  return out;
}

/**
 * Queues a SIGSTOP in every live process of `tree` (of those `only` names, when given) that
 * was not stopped already, telling `watcher` first; disposing the hold takes the signals back
 * and tells `watcher` after.
 */
export function holdStopped(
  tree: FrozenTree,
  watcher: StopWatcher,
  only?: ReadonlySet<number>,
): Disposable {
  const held: SeizedTask[] = [];
  for (const p of tree.processes) {
    if (p.zombieExit !== undefined || (only && !only.has(p.pid))) continue;
    const task = p.threads.map((tid) => tree.tasks.get(tid)).find((t) => t?.attached);
    // A process stopped before the dump stays stopped when let go: nothing to hold.
    if (task && !task.wasStopped) held.push(task);
  }
  const pids = held.map((t) => t.pid);
  watcher.stopping(pids);
  for (const pid of pids) tryKill(pid, SIGSTOP);
  return {
    [Symbol.dispose]() {
      let failure: unknown;
      for (const task of held) {
        try {
          task.discardStop();
        } catch (e) {
          if (e instanceof NoSuchTaskError) continue;
          // Never left to stop it once let go: SIGCONT removes a queued SIGSTOP.
          tryKill(task.pid, SIGCONT);
          failure ??= e;
        }
      }
      if (failure) throw failure;
      watcher.released();
    },
  };
}
