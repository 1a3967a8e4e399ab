/**
 * How each task comes back in its session. A task is born in its parent's session, and only
 * setsid() leaves one; so a task whose session is not its parent's is made, as criu does, in
 * one of two ways:
 *
 * - born early: its parent, a session leader, made it before calling setsid() (the task
 *   stayed in the session its parent was born in), so the parent makes it again before its
 *   own setsid(), and must itself be born in that session (the same, one level up);
 * - through a helper: it was handed to a reaper (the PID namespace's init, or a subreaper)
 *   when its parent died. A helper task in its session makes it and goes once the tree is
 *   made; the kernel hands the task to the same reaper. The helper is made by the session's
 *   leader, or, the leader gone, by the reaper, as the leader again (its PID, setsid()).
 *   Subreapers become so only after the helpers went (a task may have been orphaned before
 *   its ancestor became one), but for those that are the reapers of the helpers' tasks.
 *
 * Pure: it reads the images and plans; the restore carries it out. What fits neither way is
 * refused by name.
 *
 * @module
 */
import type { TaskImages } from "./images.ts";

/** A helper that makes tasks in their session, then goes. */
export interface SessionHelper {
  /** The session. */
  sid: number;
  /** The task that makes the helper: the session's leader, or its tasks' reaper. */
  maker: number;
  /** The helper's PID: the session's when its leader is gone (it calls setsid), else any. */
  pid?: number;
  /** The tasks it makes, in the images' order. */
  members: number[];
}

/** How the tasks come back in their sessions. */
export interface SessionPlan {
  /** By session leader: the children it makes before it calls setsid(). */
  early: Map<number, number[]>;
  helpers: SessionHelper[];
  /** The tasks a helper makes (their parents skip them). */
  byHelper: Set<number>;
  /**
   * Subreapers that become so before the helpers go (the reapers of their tasks); the others
   * only after, so that the tasks go past them, as they had.
   */
  earlySubreapers: Set<number>;
}

/** A task whose session could not be made again. */
export class SessionPlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SessionPlanError";
  }
}

/**
 * The session plan of `tasks` (the root first). `pidNs`: the root is the init of a PID
 * namespace of its own (orphans go to it).
 */
export function planSessions(tasks: readonly TaskImages[], pidNs: boolean): SessionPlan {
  const byPid = new Map(tasks.map((t) => [t.pstree.pid, t]));
  const root = tasks[0];
  const early = new Map<number, number[]>();
  const born = new Map<number, number>();
  const helpers = new Map<string, SessionHelper>();
  const byHelper = new Set<number>();

  /** The steps that have `t` born in session `sid`, or why it cannot be. */
  const bornIn = (t: TaskImages, sid: number): [TaskImages, TaskImages][] | string => {
    const p = byPid.get(t.pstree.ppid);
    if (t === root || !p) return "the tree's root is born in criu's session";
    if (p.pstree.sid === sid) return [];
    const name = `its parent ${p.pstree.pid}`;
    if (p.pstree.sid !== p.pstree.pid) return `${name} is in session ${p.pstree.sid}`;
    if (p.zombie) return `${name} is a zombie`;
    const was = born.get(p.pstree.pid);
    if (was !== undefined && was !== sid) {
      return `${name} would have to be born in sessions ${was} and ${sid}`;
    }
    const up = was === undefined ? bornIn(p, sid) : [];
    return typeof up === "string" ? up : [...up, [p, t]];
  };

  /** `maker` and its ancestors, nearest first: where an orphan of its helper is handed. */
  const chainOf = (maker: TaskImages): TaskImages[] => {
    const chain: TaskImages[] = [];
    for (let x: TaskImages | undefined = maker; x; x = byPid.get(x.pstree.ppid)) {
      chain.push(x);
      if (x === root) break;
    }
    return chain;
  };
  const earlySubreapers = new Set<number>();
  const reapers: { member: TaskImages; chain: TaskImages[]; reaper: TaskImages }[] = [];

  for (const t of tasks.slice(1)) {
    const ps = t.pstree;
    const p = byPid.get(ps.ppid);
    if (ps.sid === ps.pid || !p || p.pstree.sid === ps.sid) continue;
    const steps = bornIn(t, ps.sid);
    if (typeof steps !== "string") {
      for (const [parent, child] of steps) {
        born.set(parent.pstree.pid, ps.sid);
        const list = early.get(parent.pstree.pid) ?? [];
        if (!list.includes(child.pstree.pid)) list.push(child.pstree.pid);
        early.set(parent.pstree.pid, list);
      }
      continue;
    }
    const why = (tail: string) =>
      new SessionPlanError(
        `Cannot restore task ${ps.pid}: it is in session ${ps.sid} but its parent ${ps.ppid} ` +
          `is not (${steps}), and ${tail}`,
      );
    const leader = byPid.get(ps.sid);
    if (t.core.threadCore?.pdeathSig) {
      throw why(`a task handed on through a helper must not have a parent-death signal`);
    }
    const maker = leader ?? p;
    const chain = chainOf(maker);
    // Handed to its parent: a subreaper made so before the helper goes, or the namespace's init.
    if (chain.includes(p) && p.core.tc?.childSubreaper) earlySubreapers.add(p.pstree.pid);
    else if (!(pidNs && p === root)) {
      throw why(`its parent would not be the reaper a helper of the session hands it to`);
    }
    reapers.push({ member: t, chain, reaper: p });
    const key = `${maker.pstree.pid}:${ps.sid}`;
    let h = helpers.get(key);
    if (!h) {
      h = { sid: ps.sid, maker: maker.pstree.pid, pid: leader ? undefined : ps.sid, members: [] };
      helpers.set(key, h);
    }
    h.members.push(ps.pid);
    byHelper.add(ps.pid);
  }
  for (const { member, chain, reaper } of reapers) {
    const first = chain.find((x) => earlySubreapers.has(x.pstree.pid)) ??
      (pidNs ? root : undefined);
    if (first !== reaper) {
      throw new SessionPlanError(
        `Cannot restore task ${member.pstree.pid}: a helper of session ${member.pstree.sid} ` +
          `would hand it to ${first?.pstree.pid ?? "a task outside the tree"}, not to its ` +
          `parent ${reaper.pstree.pid} (subreapers in between)`,
      );
    }
  }
  return { early, helpers: [...helpers.values()], byHelper, earlySubreapers };
}
