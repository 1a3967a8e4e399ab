/**
 * The tree's tasks back in their cgroups (cgroup.img's sets, thread_core's cg_set): each process
 * moved before it makes its children (they start where it is), each thread the set of which
 * differs from its leader's moved on its own. Hierarchies are found where this criu has them
 * mounted. A cgroup that does not exist here is refused by name before anything is made (criu
 * makes it; making it would leave it behind should the restore fail); `--manage-cgroups=ignore`
 * leaves every task where it is made.
 *
 * @module
 */
import { cgroup_entrySchema } from "../../proto/gen/misc_pb.ts";
import { readImage } from "../images/image.ts";
import { exists } from "../util/exists.ts";
import { type CgroupMember, parseCgroups } from "../dump/cgroups.ts";
import { RestoreError } from "./files.ts";
import type { TaskImages } from "./images.ts";
import { readProcText } from "../tree/proc.ts";

/** Where a hierarchy is mounted here: its mount point and the cgroup it shows there. */
interface Mounted {
  dir: string;
  root: string;
  v2: boolean;
}

/** The cgroup hierarchies of this criu's mount namespace, by /proc/PID/cgroup name. */
function hierarchies(): Map<string, Mounted> {
  const out = new Map<string, Mounted>();
  const names = parseCgroups(Deno.readTextFileSync("/proc/self/cgroup")).map((m) => m.name);
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const [left, right] = line.split(" - ");
    if (!right) continue;
    const f = left.split(" ");
    const [fstype, , superOpts] = right.split(" ");
    const mounted = { dir: f[4], root: f[3], v2: fstype === "cgroup2" };
    if (fstype === "cgroup2") {
      if (!out.has("")) out.set("", mounted);
      continue;
    }
    if (fstype !== "cgroup") continue;
    const opts = new Set(superOpts.split(","));
    // The name /proc/PID/cgroup gives it: its controllers (and name=X), in that file's order.
    for (const name of names) {
      if (name && name.split(",").every((c) => opts.has(c)) && !out.has(name)) {
        out.set(name, mounted);
      }
    }
  }
  return out;
}

/** Moves restored tasks into the cgroups of their sets. */
export class CgroupMover {
  readonly #sets = new Map<number, CgroupMember[]>();
  readonly #where = hierarchies();
  /** criu's own cgroups: those of a task without a set (it was in the dumping criu's). */
  readonly #own = parseCgroups(Deno.readTextFileSync("/proc/self/cgroup"));
  #active = false;

  /** cgroup.img of `dir` (none: every task stays where it is made); nothing with `ignore`. */
  constructor(dir: string, ignore: boolean) {
    const path = `${dir}/cgroup.img`;
    if (ignore || !exists(path)) return;
    this.#active = true;
    for (const e of readImage(path, "CGROUP", cgroup_entrySchema)) {
      for (const s of e.message.sets) {
        this.#sets.set(s.id, s.ctls.map((c) => ({ name: c.name, path: c.path })));
      }
    }
  }

  /** Refuses, before anything is made, a set the images lack or a cgroup that is not here. */
  check(tasks: TaskImages[]): void {
    if (!this.#active) return;
    for (const t of tasks) {
      if (t.zombie) continue;
      for (const [tid, core] of [[t.pstree.pid, t.core] as const, ...t.threadCores]) {
        const id = core.threadCore?.cgSet;
        if (id === undefined) continue;
        // Only where it differs from criu's own: a task starts in those.
        for (const m of this.#set(id, tid)) {
          if (!this.#own.some((x) => x.name === m.name && x.path === m.path)) this.#dir(m, tid);
        }
      }
    }
  }

  /**
   * Process `pid` into the cgroups of set `id` (undefined: criu's own, where a task starts, but
   * which a parent moved since passes on to its children).
   */
  moveProcess(pid: number, id: number | undefined): void {
    if (!this.#active) return;
    const now = parseCgroups(readProcText(pid, "cgroup"));
    for (const m of id === undefined ? this.#own : this.#set(id, pid)) {
      if (now.some((x) => x.name === m.name && x.path === m.path)) continue;
      this.#write(`${this.#dir(m, pid)}/cgroup.procs`, pid, m);
    }
  }

  /** Thread `tid` of process `pid` into the cgroups of set `id` where they differ from now. */
  moveThread(pid: number, tid: number, id: number | undefined): void {
    if (!this.#active) return;
    const now = parseCgroups(readProcText(pid, `task/${tid}/cgroup`));
    for (const m of id === undefined ? this.#own : this.#set(id, tid)) {
      if (now.some((x) => x.name === m.name && x.path === m.path)) continue;
      const v2 = this.#where.get(m.name)?.v2;
      this.#write(`${this.#dir(m, tid)}/${v2 ? "cgroup.threads" : "tasks"}`, tid, m);
    }
  }

  #set(id: number, tid: number): CgroupMember[] {
    const set = this.#sets.get(id);
    if (!set) {
      throw new RestoreError(`Cannot restore task ${tid}: cgroup set ${id} is not in cgroup.img`);
    }
    return set;
  }

  /** The directory of cgroup `m` here. */
  #dir(m: CgroupMember, tid: number): string {
    const what = `the ${m.name || "cgroup2"} cgroup ${m.path} of task ${tid}`;
    const at = this.#where.get(m.name);
    if (!at) {
      throw new RestoreError(
        `Cannot restore ${what}: that hierarchy is not mounted here (restore with ` +
          `--manage-cgroups=ignore to leave the tree in criu's cgroups)`,
      );
    }
    const root = at.root === "/" ? "" : at.root;
    if (root && m.path !== root && !m.path.startsWith(`${root}/`)) {
      throw new RestoreError(`Cannot restore ${what}: it lies outside what ${at.dir} shows`);
    }
    const dir = at.dir + m.path.slice(root.length);
    if (!exists(dir)) {
      throw new RestoreError(
        `Cannot restore ${what}: ${dir} does not exist (make it, or restore with ` +
          `--manage-cgroups=ignore to leave the tree in criu's cgroups)`,
      );
    }
    return dir;
  }

  #write(file: string, tid: number, m: CgroupMember): void {
    try {
      Deno.writeTextFileSync(file, `${tid}`);
    } catch (e) {
      throw new RestoreError(
        `Cannot move task ${tid} into the ${m.name || "cgroup2"} cgroup ${m.path}: ` +
          (e as Error).message,
        { cause: e },
      );
    }
  }
}
