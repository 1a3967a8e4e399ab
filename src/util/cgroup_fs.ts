/**
 * cgroup hierarchies as this criu sees them: where each is mounted, and the properties criu
 * carries for each controller (its files, in the order they are written back).
 *
 * @module
 */

/** One hierarchy's cgroup of a task: controllers as /proc/PID/cgroup names them, and path. */
export interface CgroupMember {
  name: string;
  path: string;
  /**
   * In a cgroup namespace of the tree's own: the length of the path's part that is the
   * namespace's root in this hierarchy (criu's cgns_prefix); 0 or absent for none.
   */
  cgnsPrefix?: number;
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

/** Where a hierarchy is mounted here: its mount point and the cgroup it shows there. */
export interface CgroupMount {
  dir: string;
  root: string;
  v2: boolean;
}

/**
 * The cgroup hierarchies of this criu's mount namespace, by the name /proc/PID/cgroup gives
 * them ("cpu", "cpu,cpuacct", "name=systemd"; "" for cgroup2). `names` are the names to look
 * for (criu's own /proc/self/cgroup's, by default).
 */
export function cgroupMounts(
  names = parseCgroups(Deno.readTextFileSync("/proc/self/cgroup")).map((m) => m.name),
): Map<string, CgroupMount> {
  const out = new Map<string, CgroupMount>();
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
    for (const name of names) {
      if (name && name.split(",").every((c) => opts.has(c)) && !out.has(name)) {
        out.set(name, mounted);
      }
    }
  }
  return out;
}

/**
 * The directory of cgroup `path` (from its hierarchy's root) where `mount` shows it, or
 * undefined when it lies outside what that mount shows.
 */
export function cgroupDir(mount: CgroupMount, path: string): string | undefined {
  const root = mount.root === "/" ? "" : mount.root;
  if (root && path !== root && !path.startsWith(`${root}/`)) return undefined;
  return (mount.dir + path.slice(root.length)).replace(/\/+$/, "") || "/";
}

/** The properties criu carries for each v1 controller, in the order they are restored. */
export const CONTROLLER_PROPS: Record<string, readonly string[]> = {
  cpu: [
    "cpu.shares",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpu.rt_period_us",
    "cpu.rt_runtime_us",
  ],
  // limit_in_bytes before memsw.limit_in_bytes: the kernel wants them in that order.
  memory: [
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.swappiness",
    "memory.soft_limit_in_bytes",
    "memory.move_charge_at_immigrate",
    "memory.oom_control",
    "memory.use_hierarchy",
    "memory.kmem.limit_in_bytes",
    "memory.kmem.tcp.limit_in_bytes",
  ],
  cpuset: [
    "cpuset.cpus",
    "cpuset.mems",
    "cpuset.memory_migrate",
    "cpuset.cpu_exclusive",
    "cpuset.mem_exclusive",
    "cpuset.mem_hardwall",
    "cpuset.memory_spread_page",
    "cpuset.memory_spread_slab",
    "cpuset.sched_load_balance",
    "cpuset.sched_relax_domain_level",
  ],
  blkio: ["blkio.weight"],
  freezer: [],
  perf_event: [],
  net_cls: ["net_cls.classid"],
  net_prio: ["net_prio.ifpriomap"],
  pids: ["pids.max"],
  devices: ["devices.list"],
};

/** Properties of every v1 cgroup (the task lists only for their owner and mode). */
export const GLOBAL_PROPS = ["cgroup.clone_children", "notify_on_release", "cgroup.procs", "tasks"];

/**
 * Properties of every cgroup2 cgroup (the last two not of the root): criu's, and cgroup.procs
 * for its owner and mode only (a delegated cgroup's, as LXC and systemd give one away).
 */
export const GLOBAL_PROPS_V2 = [
  "cgroup.procs",
  "cgroup.subtree_control",
  "cgroup.max.descendants",
  "cgroup.max.depth",
  "cgroup.freeze",
  "cgroup.type",
];

/** The properties a dump reads of a cgroup of hierarchy `name`. */
export function propsOf(name: string, v2: boolean): string[] {
  if (v2) return GLOBAL_PROPS_V2;
  const own = name.split(",").flatMap((c) => CONTROLLER_PROPS[c] ?? []);
  return [...own, ...GLOBAL_PROPS];
}

/**
 * The root `--cgroup-root [CONTROLLER:]/PATH` options give hierarchy `name` (its controllers
 * joined by commas, "name=X" for a named one, "" for cgroup2): the last that names one of its
 * controllers, else the last without a controller; undefined without either.
 */
export function cgroupRootOf(options: readonly string[], name: string): string | undefined {
  const controllers = name.split(",");
  let global: string | undefined, own: string | undefined;
  for (const o of options) {
    const at = o.indexOf(":/");
    if (o.startsWith("/")) global = o;
    else if (at > 0 && controllers.includes(o.slice(0, at))) own = o.slice(at + 1);
  }
  return own ?? global;
}
