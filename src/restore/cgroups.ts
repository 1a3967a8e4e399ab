/**
 * The tree's cgroups (cgroup.img), as `--manage-cgroups` says, and its tasks back in them (the
 * sets, thread_core's cg_set): each process moved before it makes its children (they start
 * where it is), each thread the set of which differs from its leader's moved on its own.
 * Hierarchies are found where this criu has them mounted.
 *
 * Modes, as criu's:
 * - `soft` (the default): a cgroup missing here is made, with the properties it had; one that
 *   exists keeps its own.
 * - `full`: missing ones made, and every dumped cgroup given its properties.
 * - `strict`: every dumped cgroup must be missing here; all made with their properties.
 * - `props`: every cgroup must exist; each is given its properties.
 * - `none`: every cgroup must exist; no property is touched.
 * - `ignore`: cgroups are left alone; every task stays where it is made.
 * What a restore made is removed should it fail (once its tasks are gone).
 *
 * @module
 */
import type { ImagesDir } from "../images/images_dir.ts";
import {
  type cgroup_dir_entry,
  cgroup_entrySchema,
  type cgroup_prop_entry,
} from "../../proto/gen/misc_pb.ts";
import { type core_entry, thread_core_entrySchema } from "../../proto/gen/core_pb.ts";
import { isFieldSet } from "../images/protobuf.ts";
import { readImage } from "../images/image.ts";
import { exists } from "../util/exists.ts";

import { RestoreError } from "./files.ts";
import type { TaskImages } from "./images.ts";
import { readProcText } from "../tree/proc.ts";
import { detachMount, mountFs, nap } from "../syscalls/mod.ts";
import {
  cgroupDir,
  type CgroupMember,
  cgroupMounts,
  cgroupRootOf,
  parseCgroups,
} from "../util/cgroup_fs.ts";

import type { CgroupMode } from "./cgroup_modes.ts";
export { CGROUP_MODES, type CgroupMode } from "./cgroup_modes.ts";

/** A dumped cgroup: its hierarchy, its path from the root, and its entry. */
interface DumpedDir {
  name: string;
  path: string;
  entry: cgroup_dir_entry;
}

/** Moves restored tasks into the cgroups of their sets. */
export class CgroupMover {
  readonly #sets = new Map<number, CgroupMember[]>();
  /** The cgroup namespace roots each set names, as dumped (before --cgroup-root). */
  readonly #nsRoots = new Map<number, Map<string, string>>();
  /** criu's own cgroups: those of a task without a set (it was in the dumping criu's). */
  readonly #own = parseCgroups(Deno.readTextFileSync("/proc/self/cgroup"));
  readonly #where = cgroupMounts(this.#own.map((m) => m.name));
  /** Hierarchies criu's namespace does not mount, mounted for the restore (as criu's yard). */
  readonly #yards: string[] = [];
  readonly #mode: CgroupMode;
  /** The dumped cgroups, parents before children. */
  readonly #dirs: DumpedDir[] = [];
  /** The directories this restore made, in the order made. */
  readonly #made: string[] = [];
  #active = false;

  /**
   * cgroup.img of `dir` (none: every task stays where it is made); nothing with `ignore`.
   * `roots` (--cgroup-root [CONTROLLER:]/PATH) move each hierarchy's dumped cgroups, as
   * criu: each top cgroup becomes the root given, the sets' paths below it follow.
   */
  constructor(dir: ImagesDir, mode: CgroupMode = "soft", roots: readonly string[] = []) {
    this.#mode = mode;
    const path = dir.file("cgroup.img");
    if (mode === "ignore" || !exists(path)) return;
    this.#active = true;
    for (const e of readImage(path, "CGROUP", cgroup_entrySchema)) {
      for (const s of e.message.sets) {
        this.#nsRoots.set(
          s.id,
          new Map(s.ctls.map((c) => [c.name, c.path.slice(0, c.cgnsPrefix ?? 0) || "/"])),
        );
        this.#sets.set(
          s.id,
          s.ctls.map((c) => ({ name: c.name, path: c.path, cgnsPrefix: c.cgnsPrefix })),
        );
      }
      for (const c of e.message.controllers) {
        const name = c.cnames.join(",");
        const root = cgroupRootOf(roots, name);
        for (const d of root ? c.dirs : []) this.#moveTop(name, d, root!);
        const walk = (d: cgroup_dir_entry, parent: string | undefined) => {
          const path = parent === undefined
            ? `/${d.dirName}`
            : `${parent === "/" ? "" : parent}/${d.dirName}`;
          this.#dirs.push({ name, path, entry: d });
          for (const child of d.children) walk(child, path);
        };
        for (const d of c.dirs) walk(d, undefined);
      }
    }
    this.#mountMissing();
  }

  /**
   * Mounts, each in a directory of its own, the v1 hierarchies the images name that the
   * kernel has (criu is in them) but criu's mount namespace does not show (one mounted only in
   * the tree's, say): criu mounts them in its yard too.
   */
  #mountMissing(): void {
    const named = new Set([
      ...[...this.#sets.values()].flat().map((m) => m.name),
      ...this.#dirs.map((d) => d.name),
    ]);
    for (const name of named) {
      if (!name || this.#where.has(name) || !this.#own.some((m) => m.name === name)) continue;
      const dir = Deno.makeTempDirSync({ prefix: "deno-criu-cgyard-" });
      const parts = name.split(",");
      const opts = parts.every((p) => p.startsWith("name=")) ? ["none", ...parts] : parts;
      try {
        mountFs("cgroup", dir, "cgroup", 0, opts.join(","), `the ${name} cgroup hierarchy`);
      } catch (e) {
        Deno.removeSync(dir);
        throw e;
      }
      this.#yards.push(dir);
      this.#where.set(name, { dir, root: "/", v2: false });
    }
  }

  /** Lets go of the hierarchies {@link #mountMissing} mounted. */
  [Symbol.dispose](): void {
    for (const dir of this.#yards.splice(0)) {
      try {
        detachMount(dir, `the cgroup yard ${dir}`);
        Deno.removeSync(dir);
      } catch {
        // left for the administrator: nothing of the tree depends on it
      }
    }
  }

  /**
   * The roots of the cgroup namespace a task of set `id` unshared, as the dump saw them: by
   * hierarchy name ("" for cgroup2). Undefined without cgroup.img or the set.
   */
  dumpedNamespaceRoots(id: number | undefined): ReadonlyMap<string, string> | undefined {
    return id === undefined ? undefined : this.#nsRoots.get(id);
  }

  /** Top cgroup `d` of hierarchy `name` becomes `root`; the sets' paths below it follow. */
  #moveTop(name: string, d: cgroup_dir_entry, root: string): void {
    const old = `/${d.dirName}`.replace(/\/+$/, "") || "/";
    const to = root.replace(/\/+$/, "") || "/";
    const moved = (p: string) =>
      p === old
        ? to
        : old === "/"
        ? `${to === "/" ? "" : to}${p}`
        : p.startsWith(`${old}/`)
        ? `${to === "/" ? "" : to}${p.slice(old.length)}`
        : undefined;
    for (const set of this.#sets.values()) {
      for (const m of set) {
        const p = m.name === name ? moved(m.path) : undefined;
        if (p === undefined) continue;
        if (m.cgnsPrefix && m.cgnsPrefix >= old.length) {
          m.cgnsPrefix += to.length - old.length;
        }
        m.path = p;
      }
    }
    d.dirName = to.replace(/^\/+/, "");
  }

  /**
   * Makes the missing cgroups (as the mode says) and gives them, or all, their properties;
   * {@link check} first.
   */
  make(): void {
    if (!this.#active) return;
    const create = ["soft", "full", "strict"].includes(this.#mode);
    for (const d of this.#dirs) {
      const at = this.#where.get(d.name);
      if (!at) continue; // refused by #check when a task needs it
      const dir = cgroupDir(at, d.path);
      if (dir === undefined) continue;
      let made = false;
      if (!exists(dir)) {
        if (!create) continue; // refused by #check when a task needs it
        this.#mkdirs(dir, at.dir, d);
        made = true;
      }
      // Its owner and mode, on one that was there too (as criu: a container's cgroup LXC made
      // for the restore, to be given to the container's root again).
      const p = d.entry.dirPerms;
      if (p && (made || this.#mode !== "none")) {
        Deno.chmodSync(dir, p.mode & 0o7777);
        Deno.chownSync(dir, p.uid, p.gid);
      }
      if (this.#mode === "none") continue;
      if (made || this.#mode !== "soft") this.#apply(dir, d);
    }
  }

  /** Makes `dir` and those above it missing (below `top`), each recorded as made. */
  #mkdirs(dir: string, top: string, d: DumpedDir): void {
    const missing: string[] = [];
    for (
      let at = dir;
      at.length > top.length && !exists(at);
      at = at.slice(0, at.lastIndexOf("/"))
    ) {
      missing.unshift(at);
    }
    for (const m of missing) {
      try {
        Deno.mkdirSync(m);
      } catch (e) {
        throw new RestoreError(
          `Cannot make the ${d.name || "cgroup2"} cgroup ${d.path} (${m}): ${(e as Error).message}`,
          { cause: e },
        );
      }
      this.#made.push(m);
    }
  }

  /**
   * Process `pid` into the roots of its cgroup namespace (set `id`'s paths up to their
   * cgns_prefix, "/" without one), where it is to unshare that namespace; moveProcess then
   * takes it on into its own cgroups.
   */
  enterNamespaceRoots(pid: number, id: number | undefined): void {
    if (!this.#active || id === undefined) return;
    const now = parseCgroups(readProcText(pid, "cgroup"));
    for (const m of this.#set(id, pid)) {
      const root = { name: m.name, path: m.path.slice(0, m.cgnsPrefix ?? 0) || "/" };
      if (now.some((x) => x.name === root.name && x.path === root.path)) continue;
      this.#write(`${this.#dir(root, pid)}/cgroup.procs`, pid, root);
    }
  }

  /** Removes the cgroups this restore made (its tasks gone); never throws. */
  removeMade(): void {
    for (const dir of this.#made.splice(0).reverse()) {
      for (let i = 0; i < 20; i++) {
        try {
          Deno.removeSync(dir);
          break;
        } catch {
          // tasks still leaving it: a moment
          nap(10);
        }
      }
    }
  }

  /** Properties of cgroup `d` at `dir` where they differ from now, and their owners and modes. */
  #apply(dir: string, d: DumpedDir): void {
    for (const p of d.entry.properties) {
      const file = `${dir}/${p.name}`;
      if (!exists(file)) continue;
      if (p.perms) {
        Deno.chmodSync(file, p.perms.mode & 0o7777);
        Deno.chownSync(file, p.perms.uid, p.perms.gid);
      }
      if (p.name === "cgroup.procs" || p.name === "tasks") continue;
      this.#writeProp(file, p, d);
    }
  }

  /** Writes property `p` into `file`, as the kernel takes it, unless it reads so already. */
  #writeProp(file: string, p: cgroup_prop_entry, d: DumpedDir): void {
    const now = Deno.readTextFileSync(file).replace(/\n$/, "");
    if (now === p.value) return;
    const put = (f: string, v: string) => {
      try {
        Deno.writeTextFileSync(f, v);
      } catch (e) {
        throw new RestoreError(
          `Cannot restore ${p.name} = ${JSON.stringify(p.value)} of the ${
            d.name || "cgroup2"
          } cgroup ${d.path}: ${(e as Error).message}`,
          { cause: e },
        );
      }
    };
    const dir = file.slice(0, file.lastIndexOf("/"));
    if (p.name === "devices.list") {
      // Taken back as a whole: everything denied, then each rule allowed.
      put(`${dir}/devices.deny`, "a");
      for (const rule of p.value.split("\n").filter(Boolean)) put(`${dir}/devices.allow`, rule);
    } else if (p.name === "cgroup.subtree_control") {
      const want = new Set(p.value.split(/\s+/).filter(Boolean));
      const have = new Set(now.split(/\s+/).filter(Boolean));
      const change = [
        ...[...want].filter((c) => !have.has(c)).map((c) => `+${c}`),
        ...[...have].filter((c) => !want.has(c)).map((c) => `-${c}`),
      ];
      if (change.length) put(file, change.join(" "));
    } else if (p.name === "net_prio.ifpriomap") {
      for (const line of p.value.split("\n").filter(Boolean)) put(file, line);
    } else {
      put(file, p.value);
    }
  }

  /**
   * Refuses, before anything is made, a set the images lack, or a cgroup the mode wants here
   * and is not (or is, for `strict`).
   */
  check(tasks: TaskImages[]): void {
    if (!this.#active) return;
    if (this.#mode === "strict") {
      for (const d of this.#dirs) {
        const at = this.#where.get(d.name);
        const dir = at && cgroupDir(at, d.path);
        // criu's own cgroups (and those above them) are there, whatever the mode.
        const mine = this.#own.some((o) =>
          o.name === d.name && (o.path === d.path || o.path.startsWith(`${d.path}/`))
        );
        if (dir && d.path !== "/" && !mine && exists(dir)) {
          throw new RestoreError(
            `Cannot restore the ${d.name || "cgroup2"} cgroup ${d.path}: it exists already ` +
              `(--manage-cgroups=strict)`,
          );
        }
      }
    }
    const creates = ["soft", "full", "strict"].includes(this.#mode);
    for (const t of tasks) {
      if (t.zombie) continue;
      for (const [tid, core] of [[t.pstree.pid, t.core] as const, ...t.threadCores]) {
        const id = cgSetOf(core);
        if (id === undefined) continue;
        // Only where it differs from criu's own: a task starts in those.
        for (const m of this.#set(id, tid)) {
          if (this.#own.some((x) => x.name === m.name && x.path === m.path)) continue;
          // There, or to be made (dumped, in a hierarchy mounted here): #dir refuses it else.
          const dumped = this.#dirs.some((d) => d.name === m.name && d.path === m.path);
          if (!creates || !dumped || !this.#where.has(m.name)) this.#dir(m, tid);
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
    const dir = cgroupDir(at, m.path);
    if (dir === undefined) {
      throw new RestoreError(`Cannot restore ${what}: it lies outside what ${at.dir} shows`);
    }
    if (!exists(dir)) {
      throw new RestoreError(
        `Cannot restore ${what}: ${dir} does not exist (make it, have it made with ` +
          `--manage-cgroups=soft, or restore with ` +
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

/**
 * The cgroup set of a thread's core, undefined when it has none (it was in the dumping criu's
 * cgroups): proto2 reads an unset cg_set as 0, which no set has.
 */
export function cgSetOf(core: core_entry): number | undefined {
  const tc = core.threadCore;
  return tc && isFieldSet(tc, thread_core_entrySchema.field.cgSet) ? tc.cgSet : undefined;
}
