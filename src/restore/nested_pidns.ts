/**
 * PID namespaces nested in the tree's, made again as the tree made them (dump/nested_pidns.ts):
 * a namespace's init by its parent with CLONE_NEWPID, every task in it with its ids at every
 * level from the tree's down (clone3's set_tid, innermost first), those whose parent is outside
 * it by that parent once it joined the namespace for its children (setns on a descriptor of it
 * criu sends), and each task's namespace for its children as the dump found it.
 *
 * The images name every task by its id in the tree's namespace, as criu's do; what a task in a
 * nested one does with an id (setpgid, pidfd_open, a timer's thread) takes the id it sees
 * ({@link NestedPidNamespaces.seenBy}).
 *
 * @module
 */
import { isFieldSet } from "../images/protobuf.ts";
import { task_kobj_ids_entrySchema } from "../../proto/gen/core_pb.ts";
import { NR, O } from "../syscalls/mod.ts";
import { close, open } from "../syscalls/process.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import type { DumpImages, TaskImages } from "./images.ts";
import { sendFd } from "./install.ts";
import { RestoreError } from "./files.ts";
import { ImageError } from "../images/image.ts";

const CLONE_NEWPID = 0x20000000n;

/** How a task is made: its ids for clone3's set_tid, and whether it starts a namespace. */
export interface PidPlan {
  /** Its ids from its own namespace up to the tree's (set_tid). */
  setTid: number[];
  /** CLONE_NEWPID, or 0. */
  flags: bigint;
  /** The id clone3 returns to its maker: its id in the maker's namespace. */
  expect: number;
}

/**
 * Checks the nested PID namespaces of the images before anything is made: every task in the
 * root's namespace or in one nested in it with its ids there (ours; criu's images have none),
 * each nested namespace at one depth, with an init.
 */
export function checkPidNamespaces(tasks: readonly TaskImages[]): void {
  const root = tasks[0];
  const depths = new Map<number, number>();
  const inits = new Set<number>();
  for (const t of tasks) {
    const ps = t.pstree;
    const d = ps.nsPid.length;
    const ns = t.ids?.pidNsId; // none for a zombie (in the root's namespace: dump refuses others)
    if (ps.nsTids.length !== d * (ps.threads.filter((tid) => tid !== ps.pid).length)) {
      throw new ImageError(`Cannot restore task ${ps.pid}: its threads' nested ids are malformed`);
    }
    if (ns === undefined || root.ids.pidNsId === undefined) continue;
    if (d === 0 && ns !== root.ids.pidNsId) {
      throw new ImageError(
        `Cannot restore task ${ps.pid}: it is in another PID namespace than the root's, and the ` +
          `images hold no ids for it there`,
      );
    }
    if (d > 0 && ns === root.ids.pidNsId) {
      throw new ImageError(
        `Cannot restore task ${ps.pid}: its nested ids are in the root's namespace`,
      );
    }
    if ((depths.get(ns) ?? d) !== d) {
      throw new ImageError(`Cannot restore task ${ps.pid}: its PID namespace ${ns} has two depths`);
    }
    depths.set(ns, d);
    if (d > 0 && ps.nsPid[d - 1] === 1) inits.add(ns);
  }
  for (const [ns, d] of depths) {
    if (d > 0 && !inits.has(ns)) {
      throw new ImageError(`Cannot restore PID namespace ${ns}: its init is not in the images`);
    }
  }
}

/**
 * The id task (or thread) `tid` of process `task` has in its own PID namespace: what it sees
 * of itself (its id in the images, but for a task of a nested namespace).
 */
export function selfId(task: TaskImages, tid = task.pstree.pid): number {
  return levelIds(task, tid).at(-1)!;
}

/**
 * The ids of task (or thread) `tid` of process `task` at every level, the tree's first (ns_pid,
 * or its run of ns_tids, below it).
 */
function levelIds(task: TaskImages, tid: number): number[] {
  const ps = task.pstree;
  const d = ps.nsPid.length;
  if (tid === ps.pid) return [tid, ...ps.nsPid];
  const i = ps.threads.filter((t) => t !== ps.pid).indexOf(tid);
  return i < 0 ? [tid] : [tid, ...ps.nsTids.slice(i * d, (i + 1) * d)];
}

/** The nested PID namespaces of a restore, as tasks make them. */
export class NestedPidNamespaces {
  /** Each task (thread) of the images: its ids from the tree's level down, and its process. */
  readonly #ids = new Map<number, { ids: number[]; proc: TaskImages }>();
  /** A task made in each nested namespace, by pid_ns_id: its id as criu knows it. */
  readonly #made = new Map<number, number>();
  /** The namespace each maker's children go to now, where changed: by its real id. */
  readonly #now = new Map<number, number>();

  constructor(dump: DumpImages) {
    for (const t of dump.tasks) {
      for (const tid of new Set([t.pstree.pid, ...t.pstree.threads])) {
        this.#ids.set(tid, { ids: levelIds(t, tid), proc: t });
      }
    }
  }

  /** How deep below the tree's namespace task `t` is. */
  depth(t: TaskImages): number {
    return t.pstree.nsPid.length;
  }

  /** Whether `t` is the init of a nested namespace (made with CLONE_NEWPID). */
  isInit(t: TaskImages): boolean {
    return t.pstree.nsPid.at(-1) === 1;
  }

  /**
   * How the process of `maker` (seized as `rs`, the images' `parent`) makes `child` (a task, or
   * with `thread` a thread of its own): its namespace for children set first where needed.
   */
  plan(rs: RemoteSyscalls, parent: TaskImages, child: number, thread = false): PidPlan {
    const ids = this.#ids.get(child)?.ids ?? [child];
    const d = this.depth(parent);
    const expect = ids[d];
    const setTid = [...ids].reverse();
    const task = this.#ids.get(child)?.proc;
    if (thread || !task) return { setTid, flags: 0n, expect };
    // A new namespace is made below the maker's own; a child goes to its own namespace, the
    // maker's or one made already, whatever the maker's previous child needed.
    const init = this.isInit(task) && ids.length === d + 2;
    // (A zombie has no ids: it is in its maker's namespace, as the dump wants.)
    const ns = init ? parent.ids.pidNsId : (task.ids ?? parent.ids).pidNsId;
    this.#childrenIn(rs, parent, ns);
    return { setTid, flags: init ? CLONE_NEWPID : 0n, expect };
  }

  /** Task `t` of the images was made as `real` (criu's id). */
  made(t: TaskImages, real: number): void {
    const ns = t.ids?.pidNsId;
    if (this.depth(t) && ns !== undefined && !this.#made.has(ns)) this.#made.set(ns, real);
  }

  /** Once `parent` made its children: its namespace for children as the dump found it. */
  finish(rs: RemoteSyscalls, parent: TaskImages): void {
    const f = task_kobj_ids_entrySchema.field.pidForChildrenNsId;
    const want = isFieldSet(parent.ids, f) ? parent.ids.pidForChildrenNsId : parent.ids.pidNsId!;
    this.#childrenIn(rs, parent, want);
  }

  /** Makes namespace `id` the one the children of `parent` (of `rs`) are made in. */
  #childrenIn(rs: RemoteSyscalls, parent: TaskImages, id: number | undefined): void {
    const real = rs.task.pid;
    if (id === undefined || (this.#now.get(real) ?? parent.ids.pidNsId) === id) return;
    const holder = id === parent.ids.pidNsId ? real : this.#made.get(id);
    if (holder === undefined) {
      throw new RestoreError(
        `Cannot restore the children of task ${parent.pstree.pid}: their PID namespace ${id} ` +
          `is not made yet`,
      );
    }
    const fd = open(`/proc/${holder}/ns/pid`, O.RDONLY | O.CLOEXEC);
    try {
      const there = sendFd(rs, fd, `the PID namespace ${id}`);
      const ret = rs.call(NR.setns, there, Number(CLONE_NEWPID));
      rs.call(NR.close, there);
      if (ret < 0n) {
        throw new RestoreError(
          `Cannot put the children of task ${parent.pstree.pid} in PID namespace ${id} ` +
            `(setns): errno ${-ret}`,
        );
      }
    } finally {
      close(fd);
    }
    this.#now.set(real, id);
  }

  /**
   * The id task `viewer` knows task `id` of the images by (`id` itself in the tree's
   * namespace); `what` names it should `viewer` not see it.
   */
  seenBy(viewer: TaskImages, id: number, what: string): number {
    const d = this.depth(viewer);
    if (d === 0 || id === 0) return id;
    const target = this.#ids.get(id);
    // Seen from below the tree's level only where the target descends from a task of the
    // viewer's namespace (namespaces nest as processes do).
    let up = target?.proc;
    while (up && this.depth(up) > d) up = this.#ids.get(up.pstree.ppid)?.proc;
    if (!target || !up || up.ids?.pidNsId !== viewer.ids.pidNsId) {
      throw new RestoreError(
        `Cannot restore ${what} of task ${viewer.pstree.pid}: task ${id} is outside its PID ` +
          `namespace`,
      );
    }
    return target.ids[d];
  }
}

const ofDump = new WeakMap<DumpImages, NestedPidNamespaces>();

/** The nested PID namespaces of the restore of `dump` (one for each). */
export function pidNamespacesOf(dump: DumpImages): NestedPidNamespaces {
  let n = ofDump.get(dump);
  if (!n) ofDump.set(dump, n = new NestedPidNamespaces(dump));
  return n;
}
