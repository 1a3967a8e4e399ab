/**
 * `collectTree`: freezes a whole process tree (every thread of every process below the root)
 * and records its shape.
 *
 * Tasks keep forking and cloning while we seize them, so the tree is walked again and again
 * until a full pass finds nothing new. Every seized task is frozen and cannot fork any more,
 * so a pass that finds nothing new proves the tree complete. A tree that keeps changing (a
 * fork bomb) is given up on after a bounded number of passes, and everything is thawed.
 *
 * @module
 */
import { Errno } from "../syscalls/mod.ts";
import { listChildren, listOwnThreads, NoSuchTaskError, parseStat, readProcText } from "./proc.ts";
import { DEFAULT_FREEZE_TIMEOUT_MS, type PendingSeize, SeizedTask } from "./seize.ts";
import { reapLater } from "./reaper.ts";

/** Passes over the tree before giving up on it ever standing still. */
const MAX_PASSES = 10;

/** One process of the tree. */
export interface TreeProcess {
  pid: number;
  /** Parent PID; 0 for the root. */
  ppid: number;
  pgid: number;
  sid: number;
  /** Thread ids, leader first. */
  threads: number[];
  /** Children PIDs, in the order found. */
  children: number[];
  /** Set for a zombie: its exit status word as /proc shows it. */
  zombieExit?: number;
}

/** A frozen tree; disposing it thaws every task still held. */
export class FrozenTree implements Disposable {
  readonly root: number;
  /** Processes, parents before children. */
  readonly processes: TreeProcess[] = [];
  /** Every seized thread, by tid. */
  readonly tasks = new Map<number, SeizedTask>();
  /** How long each task may take to stop. */
  readonly timeoutMs: number;
  /** Tasks seized already (while their cgroup was frozen), waiting to be taken. */
  readonly pending: Map<number, PendingSeize>;

  constructor(
    root: number,
    timeoutMs = DEFAULT_FREEZE_TIMEOUT_MS,
    pending = new Map<number, PendingSeize>(),
  ) {
    this.root = root;
    this.timeoutMs = timeoutMs;
    this.pending = pending;
  }

  /** The process with PID `pid`. */
  process(pid: number): TreeProcess {
    const p = this.processes.find((x) => x.pid === pid);
    if (!p) throw new Error(`Task ${pid} is not in the tree`);
    return p;
  }

  /** The seized thread `tid`. */
  task(tid: number): SeizedTask {
    const t = this.tasks.get(tid);
    if (!t) throw new Error(`Thread ${tid} is not seized`);
    return t;
  }

  /** Lets every task go as it was (children first). */
  resume(options: { stopped?: boolean } = {}): void {
    for (const t of [...this.tasks.values()].reverse()) t.resume(options);
  }

  /**
   * Every task dies with criu from now on (PTRACE_O_EXITKILL): after a complete dump, before
   * anything makes the tree unfit to go on (its connections put in repair mode for the kill).
   */
  dieWithCriu(): void {
    for (const t of this.tasks.values()) t.dieWithTracer();
  }

  /**
   * Kills every task (children first), after a complete dump. SIGKILL is final: the exits are
   * collected in the background (tree/reaper.ts) while the kernel frees the memory.
   */
  kill(): void {
    const live = [...this.processes].reverse().filter((p) => p.zombieExit === undefined);
    const tids: number[] = [];
    for (const p of live) {
      for (const tid of [...p.threads.slice(1), p.pid]) {
        const t = this.tasks.get(tid);
        if (!t?.attached) continue;
        t.sendKill();
        t.forget();
        // The kernel reports a thread-group leader only after its other threads are reaped.
        tids.push(tid);
      }
    }
    reapLater(tids);
  }

  [Symbol.dispose](): void {
    this.resume();
  }
}

function isZombie(pid: number): { exit: number } | undefined {
  try {
    const st = parseStat(readProcText(pid, "stat"));
    if (st.state === "Z" || st.state === "X") return { exit: st.exitCode };
  } catch (e) {
    if (e instanceof NoSuchTaskError) return { exit: 0 };
    throw e;
  }
  return undefined;
}

/** Seizes `tid`; false when it vanished or became a zombie meanwhile. */
function trySeize(tree: FrozenTree, tid: number): boolean {
  if (tree.tasks.has(tid)) return true;
  try {
    const early = tree.pending.get(tid);
    tree.pending.delete(tid);
    tree.tasks.set(
      tid,
      early ? early.finish(tree.timeoutMs) : SeizedTask.seize(tid, 0, tree.timeoutMs),
    );
    return true;
  } catch (e) {
    if (e instanceof NoSuchTaskError) return false;
    if (e instanceof Errno && e.code === "ESRCH") return false;
    if (isZombie(tid)) return false;
    throw e;
  }
}

/**
 * Seizes `tid` and asks it to stop without waiting (trySeize waits); a task that cannot be
 * asked is left to trySeize, which tells why.
 */
function beginSeize(tree: FrozenTree, tid: number): void {
  if (tree.tasks.has(tid) || tree.pending.has(tid)) return;
  try {
    tree.pending.set(tid, SeizedTask.begin(tid));
  } catch {
    // gone, a zombie, traced by another: trySeize says so
  }
}

/** One pass: seizes what is new; returns whether anything was. */
function pass(tree: FrozenTree): boolean {
  let changed = false;
  const queue = [tree.root];
  const seen = new Set<number>();
  while (queue.length) {
    const pid = queue.shift()!;
    if (seen.has(pid)) continue;
    seen.add(pid);
    let proc = tree.processes.find((p) => p.pid === pid);
    // A process is frozen once its leader is; one that died meanwhile is a zombie, or gone.
    const leaderHeld = proc?.zombieExit === undefined && trySeize(tree, pid);
    if (!leaderHeld) {
      if (pid === tree.root) throw new Error(`Cannot dump task ${pid}: it is a zombie or gone`);
      if (proc) continue;
      let st;
      try {
        st = parseStat(readProcText(pid, "stat"));
      } catch (e) {
        if (e instanceof NoSuchTaskError) continue; // reaped already: not part of the tree
        throw e;
      }
      tree.processes.push({
        pid,
        ppid: st.ppid,
        pgid: st.pgid,
        sid: st.sid,
        threads: [pid],
        children: [],
        zombieExit: st.exitCode,
      });
      changed = true;
      continue;
    }
    // Every new thread asked to stop first: each stops while the next is asked, and is seen
    // stopped at once (a wait that found one running would sleep some 0.1 ms).
    // (A thread seized is one of its own: its stat is not read again.)
    const own = listOwnThreads(pid, (tid) => tree.tasks.has(tid));
    for (const tid of own) beginSeize(tree, tid);
    for (const tid of own) {
      if (!tree.tasks.has(tid)) {
        if (trySeize(tree, tid)) changed = true;
      }
    }
    // Those that appeared meanwhile are for the next pass.
    const threads = own.filter((t) => tree.tasks.has(t));
    const st = parseStat(readProcText(pid, "stat"));
    const children = [...new Set(threads.flatMap((t) => listChildren(pid, t)))];
    if (!proc) {
      proc = {
        pid,
        ppid: pid === tree.root ? 0 : st.ppid,
        pgid: st.pgid,
        sid: st.sid,
        threads,
        children,
      };
      tree.processes.push(proc);
      changed = true;
    } else if (
      proc.threads.length !== threads.length || proc.children.length !== children.length
    ) {
      proc.threads = threads;
      proc.children = children;
      changed = true;
    }
    proc.pgid = st.pgid;
    proc.sid = st.sid;
    // The children asked to stop now, before each is taken in turn.
    for (const child of children) beginSeize(tree, child);
    queue.push(...children);
  }
  return changed;
}

/**
 * Freezes the tree rooted at `root`, each task given `timeoutMs` to stop; tasks of `pending`
 * were seized already (a frozen cgroup's). On failure every task seized so far is thawed.
 */
export function collectTree(
  root: number,
  timeoutMs = DEFAULT_FREEZE_TIMEOUT_MS,
  pending = new Map<number, PendingSeize>(),
): FrozenTree {
  const tree = new FrozenTree(root, timeoutMs, pending);
  try {
    for (let i = 0; i < MAX_PASSES; i++) {
      if (!pass(tree)) {
        tree.processes.sort((a, b) => depth(tree, a) - depth(tree, b));
        for (const p of tree.processes) {
          p.threads.sort((a, b) => (a === p.pid ? -1 : b === p.pid ? 1 : a - b));
        }
        return tree;
      }
    }
    throw new Error(`Cannot freeze the tree of task ${root}: it keeps changing`);
  } catch (e) {
    tree.resume();
    throw e;
  } finally {
    // Seized early but not in the tree (or the collection failed): let go, as they were.
    releasePending(pending, timeoutMs);
  }
}

/** Lets every task of `pending` go as it was (each waited for `timeoutMs` at most first). */
export function releasePending(pending: Map<number, PendingSeize>, timeoutMs: number): void {
  for (const p of pending.values()) {
    try {
      p.finish(timeoutMs).resume();
    } catch {
      p.abandon();
    }
  }
  pending.clear();
}

function depth(tree: FrozenTree, p: TreeProcess): number {
  let d = 0;
  for (let cur = p; cur.pid !== tree.root && d < 1000; d++) {
    const parent = tree.processes.find((x) => x.children.includes(cur.pid));
    if (!parent) break;
    cur = parent;
  }
  return d;
}
