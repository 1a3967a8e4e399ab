/**
 * The cgroups the tree's tasks are in, written as criu writes them when a task is in other
 * cgroups than criu:
 *
 * ```
 * cgroup.img     cgroup_entry { sets: [{ id, ctls: [{ name, path }...] }...],
 *                               controllers: [{ cnames, dirs }] }
 * core-TID.img   thread_core { cg_set }
 * ```
 * A member's name is the hierarchy's controllers as /proc/PID/cgroup names them ("cpu",
 * "name=systemd"; "" for cgroup2), its path is taken from the hierarchy's root. Set 1 is criu's
 * own; a thread in the same cgroups as criu gets no set (the restore leaves it where it is made).
 *
 * Each hierarchy's dirs are the cgroups the tasks are in (the top ones named by their path from
 * the root, "" for the root itself) and every cgroup below them, each with its owner and mode
 * and the properties criu carries for its controllers (util/cgroup_fs.ts), as the files read.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  cg_controller_entrySchema,
  type cg_member_entry,
  cg_member_entrySchema,
  cg_set_entrySchema,
  type cgroup_dir_entry,
  cgroup_dir_entrySchema,
  cgroup_entrySchema,
  cgroup_permsSchema,
  cgroup_prop_entrySchema,
} from "../../proto/gen/misc_pb.ts";
import { readProcText } from "../tree/proc.ts";
import {
  cgroupDir,
  type CgroupMember,
  type CgroupMount,
  cgroupMounts,
  cgroupRootOf,
  parseCgroups,
  propsOf,
} from "../util/cgroup_fs.ts";
import type { DumpContext } from "./context.ts";
import { UnsupportedError } from "./file_types.ts";

const key = (set: CgroupMember[]) =>
  set.map((m) => `${m.name}:${m.path}:${m.cgnsPrefix ?? 0}`).join("\n");

/** The cgroup sets of the tree, by content: ids for thread_core.cg_set (set 1 is criu's). */
export class CgroupSets {
  readonly #own = key(parseCgroups(Deno.readTextFileSync("/proc/self/cgroup")));
  readonly #ids = new Map<string, number>();
  readonly #sets: CgroupMember[][] = [];
  /** The roots of the tree's own cgroup namespace, by hierarchy, when it has one. */
  #nsRoots?: Map<string, string>;

  /**
   * The tree has a cgroup namespace of its own: `inside` is what its root task reads of its
   * own /proc/self/cgroup (paths from the namespace's roots), `outside` what criu reads of it.
   * Each root is the part of the outside path the inside path does not name.
   */
  setNamespace(pid: number, inside: CgroupMember[], outside: CgroupMember[]): void {
    const roots = new Map<string, string>();
    for (const o of outside) {
      const i = inside.find((x) => x.name === o.name);
      if (!i) continue;
      const tail = i.path === "/" ? "" : i.path;
      if (!o.path.endsWith(tail)) {
        throw new UnsupportedError(
          `Cannot dump the cgroup namespace of task ${pid}: its ${o.name || "cgroup2"} cgroup ` +
            `${i.path} is not the end of ${o.path}`,
        );
      }
      roots.set(o.name, o.path.slice(0, o.path.length - tail.length).replace(/\/$/, ""));
    }
    this.#nsRoots = roots;
  }

  /** The set of thread `tid` of process `pid`: its id, or undefined when it is criu's own. */
  setOf(pid: number, tid: number): number | undefined {
    const set = parseCgroups(readProcText(pid, `task/${tid}/cgroup`));
    for (const m of this.#nsRoots ? set : []) {
      const root = this.#nsRoots!.get(m.name) ?? "";
      if (root && m.path !== root && !m.path.startsWith(`${root}/`)) {
        throw new UnsupportedError(
          `Cannot dump thread ${tid}: its ${m.name || "cgroup2"} cgroup ${m.path} lies outside ` +
            `its cgroup namespace's root ${root}`,
        );
      }
      m.cgnsPrefix = root.length;
    }
    const k = key(set);
    // In a cgroup namespace of its own, a task records its set even where it is criu's: the
    // restore unshares the namespace at the roots the set names.
    if (k === this.#own && !this.#nsRoots) return undefined;
    let id = this.#ids.get(k);
    if (id === undefined) {
      id = this.#ids.size + 2;
      this.#ids.set(k, id);
      this.#sets.push(set);
    }
    return id;
  }

  /** cgroup.img, when a thread of the tree is in other cgroups than criu. */
  write(ctx: DumpContext): void {
    if (!this.#sets.length) return;
    const members = (set: CgroupMember[]): cg_member_entry[] =>
      set.map((m) =>
        create(cg_member_entrySchema, {
          name: m.name,
          path: m.path,
          cgnsPrefix: m.cgnsPrefix || undefined,
        })
      );
    // Each hierarchy of the sets, with the directories they use.
    const dirs = new Map<string, Set<string>>();
    for (const set of this.#sets) {
      for (const m of set) {
        if (!dirs.has(m.name)) dirs.set(m.name, new Set());
        dirs.get(m.name)!.add(m.path);
      }
    }
    // --cgroup-root: a hierarchy's cgroups from that root down (empty ones too), as criu; in a
    // cgroup namespace of the tree's own, all it sees (from the namespace's root down).
    for (const [name, paths] of dirs) {
      const root = cgroupRootOf(ctx.opts.cgroupRoots ?? [], name) || this.#nsRoots?.get(name);
      if (root) paths.add(root);
    }
    const mounts = cgroupMounts([...dirs.keys()]);
    ctx.image("cgroup.img", "CGROUP").entry(
      cgroup_entrySchema,
      create(cgroup_entrySchema, {
        sets: [...this.#ids.entries()].map(([, id], i) =>
          create(cg_set_entrySchema, { id, ctls: members(this.#sets[i]) })
        ),
        controllers: [...dirs.entries()].map(([name, paths]) =>
          create(cg_controller_entrySchema, {
            cnames: name.split(","),
            dirs: dumpDirs(name, mounts.get(name), [...paths]),
          })
        ),
      }),
    );
  }
}

/**
 * The cgroups `paths` of hierarchy `name` and everything below them, as criu dumps them: the
 * top ones (no one below another) named by their path from the root. Without the hierarchy
 * mounted here, the paths alone.
 */
function dumpDirs(
  name: string,
  mount: CgroupMount | undefined,
  paths: string[],
): cgroup_dir_entry[] {
  const tops = paths.filter((p) => !paths.some((q) => q !== p && under(p, q)));
  return tops.map((top) => {
    const rel = top.replace(/^\/+/, "");
    const dir = mount && cgroupDir(mount, top);
    if (!dir) return create(cgroup_dir_entrySchema, { dirName: rel });
    return readDir(dir, rel, propsOf(name, mount!.v2));
  });
}

/** Whether cgroup `p` lies below cgroup `q`. */
function under(p: string, q: string): boolean {
  return q === "/" ? p !== "/" : p.startsWith(`${q}/`);
}

/** Directory `dir` as cgroup `dirName`: owner, mode, properties, and what is below it. */
function readDir(dir: string, dirName: string, props: string[]): cgroup_dir_entry {
  const st = Deno.statSync(dir);
  const perms = (s: Deno.FileInfo) =>
    create(cgroup_permsSchema, { mode: s.mode ?? 0, uid: s.uid ?? 0, gid: s.gid ?? 0 });
  const properties = [];
  for (const prop of props) {
    const file = `${dir}/${prop}`;
    let value: string;
    let pst: Deno.FileInfo;
    try {
      pst = Deno.statSync(file);
      // The task lists are carried for their owner and mode only.
      value = prop === "cgroup.procs" || prop === "tasks"
        ? ""
        : Deno.readTextFileSync(file).replace(/\n$/, "");
    } catch {
      continue; // not on this kernel (or this cgroup: the root has no cgroup.freeze)
    }
    properties.push(create(cgroup_prop_entrySchema, { name: prop, value, perms: perms(pst) }));
  }
  const children = [...Deno.readDirSync(dir)].filter((e) => e.isDirectory)
    .map((e) => e.name).sort()
    .map((child) => readDir(`${dir}/${child}`, child, props));
  return create(cgroup_dir_entrySchema, {
    dirName,
    properties,
    dirPerms: perms(st),
    children,
  });
}
