/**
 * The cgroups the tree's tasks are in (membership only: no cgroup's properties are carried),
 * written as criu writes them when a task is in other cgroups than criu:
 *
 * ```
 * cgroup.img     cgroup_entry { sets: [{ id, ctls: [{ name, path }...] }...],
 *                               controllers: [{ cnames, dirs: the directories the sets use }] }
 * core-TID.img   thread_core { cg_set }
 * ```
 * A member's name is the hierarchy's controllers as /proc/PID/cgroup names them ("cpu",
 * "name=systemd"; "" for cgroup2), its path is taken from the hierarchy's root. Set 1 is criu's
 * own; a thread in the same cgroups as criu gets no set (the restore leaves it where it is made).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  cg_controller_entrySchema,
  type cg_member_entry,
  cg_member_entrySchema,
  cg_set_entrySchema,
  type cgroup_dir_entry,
  cgroup_dir_entrySchema,
  cgroup_entrySchema,
} from "../../proto/gen/misc_pb.ts";
import { readProcText } from "../tree/proc.ts";
import type { DumpContext } from "./context.ts";

/** One hierarchy's cgroup of a task: controllers as /proc/PID/cgroup names them, and path. */
export interface CgroupMember {
  name: string;
  path: string;
}

/** Parses /proc/PID/cgroup ("ID:CONTROLLERS:PATH" lines), sorted by name. */
export function parseCgroups(text: string): CgroupMember[] {
  const out: CgroupMember[] = [];
  for (const line of text.split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (m) out.push({ name: m[1], path: m[2] });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

const key = (set: CgroupMember[]) => set.map((m) => `${m.name}:${m.path}`).join("\n");

/** The cgroup sets of the tree, by content: ids for thread_core.cg_set (set 1 is criu's). */
export class CgroupSets {
  readonly #own = key(parseCgroups(Deno.readTextFileSync("/proc/self/cgroup")));
  readonly #ids = new Map<string, number>();
  readonly #sets: CgroupMember[][] = [];

  /** The set of thread `tid` of process `pid`: its id, or undefined when it is criu's own. */
  setOf(pid: number, tid: number): number | undefined {
    const set = parseCgroups(readProcText(pid, `task/${tid}/cgroup`));
    const k = key(set);
    if (k === this.#own) return undefined;
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
      set.map((m) => create(cg_member_entrySchema, { name: m.name, path: m.path }));
    // Each hierarchy of the sets, with the directories they use.
    const dirs = new Map<string, Set<string>>();
    for (const set of this.#sets) {
      for (const m of set) {
        if (!dirs.has(m.name)) dirs.set(m.name, new Set());
        dirs.get(m.name)!.add(m.path);
      }
    }
    ctx.image("cgroup.img", "CGROUP").entry(
      cgroup_entrySchema,
      create(cgroup_entrySchema, {
        sets: [...this.#ids.entries()].map(([, id], i) =>
          create(cg_set_entrySchema, { id, ctls: members(this.#sets[i]) })
        ),
        controllers: [...dirs.entries()].map(([name, paths]) =>
          create(cg_controller_entrySchema, { cnames: [name], dirs: dirTree([...paths]) })
        ),
      }),
    );
  }
}

/** The directories of `paths` ("/a/b") as a tree of cgroup_dir_entry, root's children first. */
function dirTree(paths: string[]): cgroup_dir_entry[] {
  const roots: cgroup_dir_entry[] = [];
  for (const path of paths) {
    let level = roots;
    for (const name of path.split("/").filter(Boolean)) {
      let d = level.find((x) => x.dirName === name);
      if (!d) {
        d = create(cgroup_dir_entrySchema, { dirName: name });
        level.push(d);
      }
      level = d.children;
    }
  }
  return roots;
}
