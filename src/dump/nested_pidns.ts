/**
 * PID namespaces nested in the tree's (a container in the container, `unshare -pf` in the tree):
 * each task's ids below the tree's level, and each task's namespace for its children, for the
 * images (pstree.img's ns_pid and ns_tids, ids' pid_for_children_ns_id: ours, not criu's).
 *
 * The restore makes such a namespace as the tree made it: its init (1 there) with CLONE_NEWPID
 * by a parent one level up, every task in it with its ids at each level (clone3's set_tid),
 * those whose parent is outside it by that same parent, after the init. So the dump refuses,
 * by name, what that cannot make again: a namespace whose init is not a live task of the tree
 * or was not made by a parent one level up; a task in it made by another task outside it; a
 * zombie in it; a task whose children's namespace no task of the tree is in (its init is gone);
 * a process group or session in it other than the task's own or its parent's.
 *
 * @module
 */
import { fstype } from "../../proto/gen/misc_pb.ts";
import type { FrozenTree, TreeProcess } from "../tree/collect.ts";
import type { VirtualPids } from "../tree/pid_ns.ts";
import { nsLink } from "../tree/proc.ts";
import { UnsupportedError } from "./file_types.ts";
import type { MountNamespace } from "./mnt_ns.ts";

/** The tree's tasks in nested PID namespaces. */
export interface NestedPids {
  /** Ids below the tree's level of each task in a nested namespace (threads too), by tid. */
  inner: Map<number, number[]>;
  /** The namespace (`pid:[INODE]`) a process's children are made in, where not its own. */
  forChildren: Map<number, string>;
  /** The nested namespaces (`pid:[INODE]`), each with its init (a real PID). */
  namespaces: Map<string, number>;
}

/** Reads and checks the nested PID namespaces of `tree` (see the module comment). */
export function readNestedPids(tree: FrozenTree, pids: VirtualPids): NestedPids {
  const out: NestedPids = { inner: new Map(), forChildren: new Map(), namespaces: new Map() };
  const byPid = new Map(tree.processes.map((p) => [p.pid, p]));
  const depth = new Map<number, number>();
  const ns = new Map<number, string>();
  for (const p of tree.processes) {
    const inner = pids.inner(p.pid);
    depth.set(p.pid, inner.length);
    if (!inner.length) continue;
    if (p.zombieExit !== undefined) {
      throw new UnsupportedError(
        `Cannot dump zombie ${p.pid}: it is in a PID namespace nested in the tree's`,
      );
    }
    ns.set(p.pid, nsLink(p.pid, "pid"));
    for (const tid of p.threads) out.inner.set(tid, pids.inner(tid));
  }
  // Each nested namespace: its init, made by a parent one level up.
  const inits = new Map<string, TreeProcess>();
  for (const p of tree.processes) {
    const inner = out.inner.get(p.pid);
    if (inner?.at(-1) !== 1) continue;
    inits.set(ns.get(p.pid)!, p);
    if (depth.get(p.ppid) !== inner.length - 1) {
      throw new UnsupportedError(
        `Cannot dump task ${p.pid}: the init of a nested PID namespace whose parent task ` +
          `${p.ppid} is not in the namespace one level up (it joined it later)`,
      );
    }
  }
  for (const p of tree.processes) {
    const d = depth.get(p.pid)!;
    if (d) {
      const init = inits.get(ns.get(p.pid)!);
      if (!init) {
        throw new UnsupportedError(
          `Cannot dump task ${p.pid}: the init of its nested PID namespace is not in the tree`,
        );
      }
      // Made by its parent outside the namespace: the init's parent, after the init.
      if (depth.get(p.ppid)! < d && p !== init && p.ppid !== init.ppid) {
        throw new UnsupportedError(
          `Cannot dump task ${p.pid}: it is in a nested PID namespace its parent ${p.ppid} ` +
            `joined, which did not make the namespace's init`,
        );
      }
      const parent = byPid.get(p.ppid)!;
      for (
        const [what, id, theirs] of [
          ["process group", p.pgid, parent.pgid],
          ["session", p.sid, parent.sid],
        ] as const
      ) {
        if (id !== p.pid && id !== theirs) {
          throw new UnsupportedError(
            `Cannot dump task ${p.pid}: its ${what} ${id} in a nested PID namespace is ` +
              `neither its own nor its parent's`,
          );
        }
      }
    }
    if (p.zombieExit !== undefined) continue;
    const children = nsLink(p.pid, "pid_for_children");
    if (children === nsLink(p.pid, "pid")) continue;
    const init = inits.get(children);
    if (!init || depth.get(init.pid) !== d + 1) {
      throw new UnsupportedError(
        `Cannot dump task ${p.pid}: its future children get a PID namespace ` +
          `(/proc/${p.pid}/ns/pid_for_children) whose init is not a task of the tree, ` +
          `one level below it`,
      );
    }
    out.forChildren.set(p.pid, children);
  }
  for (const [link, init] of inits) out.namespaces.set(link, init.pid);
  return out;
}

/**
 * Marks each proc mount of a nested PID namespace in `namespaces` (the tree's mount
 * namespaces) with its namespace's init (`pidns_init`, its PID in the tree's namespace): the
 * restore mounts it again from that init once it is made, on the mount below it (a proc shows
 * the namespace of its task 1). Refused: one with mounts on it or beside it, a bind of part of
 * one, one shared, a slave or on a shared mount (its copies would propagate), or in a mount
 * namespace its init is not in.
 */
export function markNestedProcs(
  nested: NestedPids,
  pids: VirtualPids,
  namespaces: readonly MountNamespace[],
): void {
  if (!nested.namespaces.size) return;
  // Each proc's namespace, by its super block (every mount of it shows the same): told through
  // a mount of it that nothing hides at its place.
  const byDev = new Map<number, string>();
  for (const ns of namespaces) {
    for (const e of ns.entries) {
      const hidden = ns.entries.some((c) =>
        c.parentMntId === e.mntId && c.mountpoint === e.mountpoint
      );
      if (e.fstype !== fstype.PROC || hidden || byDev.has(e.rootDev)) continue;
      try {
        byDev.set(e.rootDev, Deno.readLinkSync(`/proc/${ns.pid}/root${e.mountpoint}/1/ns/pid`));
      } catch {
        // no task 1 there to tell
      }
    }
  }
  for (const ns of namespaces) {
    const mntLink = nsLink(ns.pid, "mnt");
    for (const e of ns.entries) {
      if (e.fstype !== fstype.PROC) continue;
      const init = nested.namespaces.get(byDev.get(e.rootDev) ?? "");
      if (init === undefined) continue;
      const refuse = (why: string) =>
        new UnsupportedError(
          `Cannot dump mount ${e.mntId} (proc at ${e.mountpoint}): it is the proc of a PID ` +
            `namespace nested in the tree's, ${why}, which is not supported`,
        );
      const on = ns.entries.find((c) => c.parentMntId === e.mntId);
      if (on) throw refuse(`with mount ${on.mntId} at ${on.mountpoint} on it`);
      if (e.root !== "/") throw refuse(`bound from its ${e.root}`);
      if (e.sharedId || e.masterId) throw refuse("shared or a slave");
      const beside = ns.entries.find((o) =>
        o !== e && o.mountpoint === e.mountpoint && o.parentMntId === e.parentMntId
      );
      if (beside) throw refuse(`with mount ${beside.mntId} at its place on the same mount`);
      const parent = ns.entries.find((p) => p.mntId === e.parentMntId);
      if (!parent || parent.sharedId) throw refuse("on a shared mount (or none)");
      if (nsLink(init, "mnt") !== mntLink) {
        throw refuse("in a mount namespace other than its init's");
      }
      e.pidnsInit = pids.virt(init);
    }
  }
}
