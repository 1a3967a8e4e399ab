/**
 * Real and virtual task ids. A tree whose root is the init of a PID namespace of its own sees
 * its tasks by other ids (virtual: 1 for the root) than criu does (real: as this /proc shows
 * them). Images carry virtual ids, as criu's do; /proc, ptrace, signals and cgroups take real
 * ones. For a tree in criu's own PID namespace both are the same.
 *
 * The ids come from /proc/PID/status: NSpid, NSpgid and NSsid list a task's ids from the PID
 * namespace of this /proc down to the task's own; the tree's level is the root's last. A task
 * in a PID namespace nested in the tree's has ids below that level too: its inner ids
 * ({@link VirtualPids.inner}), which the images carry besides (pstree.img, ours).
 *
 * @module
 */
import { relatedNamespace } from "../syscalls/mod.ts";
import { NoSuchTaskError, readProcText } from "./proc.ts";

/** A task's ids at every level, as /proc/PID/status lists them (outermost first). */
interface Levels {
  pid: number[];
  pgid: number[];
  sid: number[];
}

function levels(status: string): Levels {
  const field = (name: string) =>
    (new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1] ?? "").trim().split(/\s+/)
      .filter(Boolean).map(Number);
  return { pid: field("NSpid"), pgid: field("NSpgid"), sid: field("NSsid") };
}

/** The virtual ids of a dumped tree's tasks (and of tasks in its PID namespace). */
export class VirtualPids {
  /** Whether the root is the init of a PID namespace of its own. */
  readonly own: boolean;
  /** The level of the tree's PID namespace in NSpid (0: criu's own). */
  readonly #level: number;
  /** The inode of the tree's PID namespace. */
  readonly #ino: number;
  /** Each task's ids at every level, read once. */
  readonly #levels = new Map<number, Levels>();
  readonly #virt = new Map<number, number>();
  readonly #groups = new Map<number, { pgid: number; sid: number }>();

  private constructor(own: boolean, level: number, ns: string) {
    this.own = own;
    this.#level = level;
    this.#ino = Number(/\[(\d+)\]/.exec(ns)?.[1] ?? 0);
  }

  /** Task `real`'s ids at every level (throws NoSuchTaskError once it is gone). */
  #levelsOf(real: number): Levels {
    let l = this.#levels.get(real);
    if (!l) this.#levels.set(real, l = levels(readProcText(real, "status")));
    return l;
  }

  /**
   * The ids of the tree rooted at `root`. A root in a PID namespace other than criu's must be
   * its init (as criu requires): the namespace is made again around it.
   */
  static of(root: number): VirtualPids {
    const ns = Deno.readLinkSync(`/proc/${root}/ns/pid`);
    const l = levels(readProcText(root, "status"));
    const own = ns !== Deno.readLinkSync(`/proc/self/ns/pid`);
    const level = Math.max(0, l.pid.length - 1);
    return new VirtualPids(own, own ? level : 0, ns);
  }

  /** Ids of a tree in criu's PID namespace: virtual and real are the same. */
  static identity(): VirtualPids {
    return new VirtualPids(false, 0, "");
  }

  /** The level of the tree's namespace below criu's. */
  get depth(): number {
    return this.#level;
  }

  /**
   * Task `real`'s id in the tree's PID namespace; undefined when it has none there (a task
   * outside it, or gone).
   */
  tryVirt(real: number): number | undefined {
    if (!this.own) return real;
    const known = this.#virt.get(real);
    if (known !== undefined) return known;
    let l: Levels;
    try {
      l = this.#levelsOf(real);
    } catch (e) {
      if (e instanceof NoSuchTaskError) return undefined;
      throw e;
    }
    // In the tree's namespace itself: at its depth, and that namespace (a zombie's link may
    // not be readable; its depth then decides); or in one nested in it.
    if (l.pid.length < this.#level + 1) return undefined;
    const below = l.pid.length - 1 - this.#level;
    try {
      if (relatedNamespace(`/proc/${real}/ns/pid`, "parent", below) !== this.#ino) return undefined;
    } catch {
      // gone or a zombie
    }
    const v = l.pid[this.#level];
    this.#virt.set(real, v);
    this.#groups.set(real, { pgid: l.pgid[this.#level] ?? 0, sid: l.sid[this.#level] ?? 0 });
    return v;
  }

  /**
   * Task `real`'s ids in the PID namespaces nested in the tree's, from the tree's child down to
   * its own (none for a task in the tree's namespace). For a task of the tree.
   */
  inner(real: number): number[] {
    return this.#levelsOf(real).pid.slice(this.#level + 1);
  }

  /** Task `real`'s id in the tree's PID namespace; `what` names it in the error otherwise. */
  virt(real: number, what = `task ${real}`): number {
    const v = this.tryVirt(real);
    if (v === undefined) {
      throw new OutsideNamespaceError(`${what} is outside the PID namespace of the tree`);
    }
    return v;
  }

  /**
   * The process group and session of process `real` in the tree's namespace (0 for one whose
   * leader is outside it), from its own status: a group may have lost its leader.
   */
  groups(real: number, pgid: number, sid: number): { pgid: number; sid: number } {
    if (!this.own) return { pgid, sid };
    this.tryVirt(real);
    return this.#groups.get(real) ?? { pgid: 0, sid: 0 };
  }
}

/** A task id the dump needs has no value in the tree's PID namespace. */
export class OutsideNamespaceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OutsideNamespaceError";
  }
}

/** Restore: the real id of each task made, by its id in the images (the same without a namespace). */
export class RealPids {
  /** Whether the tree comes back in a PID namespace of its own. */
  readonly own: boolean;
  readonly #real = new Map<number, number>();

  constructor(own: boolean) {
    this.own = own;
  }

  /** Task `virt` of the images was made as `real`. */
  set(virt: number, real: number): void {
    this.#real.set(virt, real);
  }

  /** The real id of task `virt` of the images, once made. */
  real(virt: number): number {
    if (!this.own) return virt;
    const r = this.#real.get(virt);
    if (r === undefined) throw new Error(`Task ${virt} of the images was not made`);
    return r;
  }
}
