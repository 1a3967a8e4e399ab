/**
 * The plan of a mount namespace: how each mount of mountpoints-ID.img comes back, in an order
 * where every mount's parent and source are made before it. Pure: the dump runs it to refuse
 * what could not be made again, the restore (restore/mnt_ns.ts) carries it out.
 *
 * - the namespace's root is bound from `--root`;
 * - an external mount (`ext_key`, from `--external mnt[MOUNTPOINT]:KEY`) is bound from what the
 *   restore names KEY (`--external mnt[KEY]:PATH`);
 * - a file system an earlier mount shows already, whole or the part this one shows, is bound
 *   from there;
 * - a file system of a kind that holds no state of its own (proc, sysfs, devpts, mqueue,
 *   cgroup, ...) is mounted anew, and a tmpfs too, then filled from tmpfs-dev-DEV.tar.gz.img;
 * - anything else cannot be made again: {@link MountPlanError} names it.
 *
 * @module
 */
import { fstype, type mnt_entry } from "../../proto/gen/misc_pb.ts";
import { MS } from "../syscalls/mod.ts";

/** A mount of the namespace that could not be made again. */
export class MountPlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MountPlanError";
  }
}

/** How one mount is made. */
export type MountStep =
  | { how: "root"; entry: mnt_entry }
  | { how: "external"; entry: mnt_entry; key: string }
  | { how: "bind"; entry: mnt_entry; from: mnt_entry; sub: string }
  | { how: "new"; entry: mnt_entry; fs: string };

/**
 * How the mounts, all made private, get their propagation back once every one is made (no
 * mount made later may propagate): a peer group's first member (whose root holds the others')
 * made shared, the others joined to it (move_mount with MOVE_MOUNT_SET_GROUP); a slave joined
 * to a member of its master's group, then made a slave; unbindable ones last.
 */
export type PropagationStep =
  | { how: "shared"; entry: mnt_entry }
  | { how: "join"; from: mnt_entry; entry: mnt_entry }
  | { how: "slave"; entry: mnt_entry }
  | { how: "unbindable"; entry: mnt_entry };

/** The kinds mounted anew, by criu's fstype number: they hold nothing a mount must carry. */
const MOUNTED_ANEW = new Map<number, string>([
  [fstype.PROC, "proc"],
  [fstype.SYSFS, "sysfs"],
  [fstype.DEVTMPFS, "devtmpfs"],
  [fstype.BINFMT_MISC, "binfmt_misc"],
  [fstype.TMPFS, "tmpfs"],
  [fstype.DEVPTS, "devpts"],
  [fstype.PSTORE, "pstore"],
  [fstype.SECURITYFS, "securityfs"],
  [fstype.FUSECTL, "fusectl"],
  [fstype.DEBUGFS, "debugfs"],
  [fstype.CGROUP, "cgroup"],
  [fstype.MQUEUE, "mqueue"],
  [fstype.TRACEFS, "tracefs"],
  [fstype.CGROUP2, "cgroup2"],
]);

/** criu's fstype number of a file system type name (UNSUPPORTED when it has none). */
export function fstypeOf(name: string): number {
  for (const [n, fs] of MOUNTED_ANEW) if (fs === name) return n;
  if (name === "overlay") return fstype.OVERLAYFS;
  if (name === "autofs") return fstype.AUTOFS;
  return fstype.UNSUPPORTED;
}

/** The per-mount flags a bind remount sets (the rest are the super block's or propagation). */
export const MOUNT_FLAGS = MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.NOATIME |
  MS.NODIRATIME | MS.RELATIME | MS.STRICTATIME | MS.NOSYMFOLLOW;

/** Whether path `sub` is `dir` or lies below it. */
function within(sub: string, dir: string): boolean {
  return dir === "/" || sub === dir || sub.startsWith(`${dir}/`);
}

/** A mount, named for messages. */
export function mountName(e: mnt_entry): string {
  const kind = MOUNTED_ANEW.get(e.fstype) ?? e.fsname;
  return `mount ${e.mntId} (${kind ? `${kind} ` : ""}${e.source} at ${e.mountpoint})`;
}

/**
 * The steps that make the mounts of `entries` (in mountinfo's order) again, in that order but
 * for parents and sources first. Throws {@link MountPlanError} for a mount that could not be
 * made.
 */
export function planMounts(entries: readonly mnt_entry[]): MountStep[] {
  const byId = new Map(entries.map((e) => [e.mntId, e]));
  const tops = entries.filter((e) => e.parentMntId === e.mntId || !byId.has(e.parentMntId));
  if (tops.length !== 1 || tops[0].mountpoint !== "/") {
    throw new MountPlanError(
      `The mount namespace has ${tops.length} mounts without a parent in it ` +
        `(${tops.map((e) => e.mountpoint).join(", ")}); one, at /, was expected`,
    );
  }
  const root = tops[0];
  // mountinfo's order (the order they were made in), each after its parent.
  const order = [root, ...entries.filter((e) => e !== root)];
  const steps: MountStep[] = [{ how: "root", entry: root }];
  const made = new Set<mnt_entry>([root]);
  const pending = order.slice(1);
  // Each time, the first mount (in that order) that can be made now.
  while (pending.length) {
    let i = 0, step: MountStep | undefined;
    for (; i < pending.length; i++) {
      const e = pending[i];
      step = made.has(byId.get(e.parentMntId)!) ? stepOf(e, made, pending) : undefined;
      if (step) break;
    }
    if (!step) {
      // One whose parent is made: it is the one stuck (the others wait for it).
      const e = pending.find((x) => made.has(byId.get(x.parentMntId)!)) ?? pending[0];
      throw new MountPlanError(
        e.fstype === fstype.UNSUPPORTED && e.rootDev === root.rootDev
          ? `Cannot make ${mountName(e)} again: it shows ${e.root}, outside the namespace's ` +
            `root (${root.root}); name it external with --external mnt[${e.mountpoint}]:KEY`
          : MOUNTED_ANEW.has(e.fstype)
          ? `Cannot make ${mountName(e)} again: it shows only ${e.root} of a file system no ` +
            `other mount of the namespace shows whole`
          : `Cannot make ${mountName(e)} again: ${
            e.fsname || "its file system"
          } is not supported; name it external with --external mnt[${e.mountpoint}]:KEY`,
      );
    }
    steps.push(step);
    made.add(pending[i]);
    pending.splice(i, 1);
  }
  return steps;
}

/** How `e` is made now, or undefined to wait for a mount it may be bound from. */
function stepOf(
  e: mnt_entry,
  made: Set<mnt_entry>,
  pending: readonly mnt_entry[],
): MountStep | undefined {
  if (e.extKey) return { how: "external", entry: e, key: e.extKey };
  const covers = (m: mnt_entry) => m !== e && m.rootDev === e.rootDev && within(e.root, m.root);
  const from = [...made].find(covers);
  if (from) {
    return {
      how: "bind",
      entry: e,
      from,
      sub: e.root.slice(from.root === "/" ? 0 : from.root.length),
    };
  }
  // Another mount of the file system, not made yet, may show it whole.
  if (pending.some((m) => covers(m) && m.root !== e.root)) return undefined;
  const fs = MOUNTED_ANEW.get(e.fstype);
  if (fs && e.root === "/") return { how: "new", entry: e, fs };
  return undefined;
}

/**
 * The steps that give the mounts of `entries` their propagation again (after
 * {@link planMounts}'s). Throws {@link MountPlanError} for sharing that could not be made:
 * a master outside the namespace, a group whose members no one member's root holds.
 */
export function planPropagation(entries: readonly mnt_entry[]): PropagationStep[] {
  const groups = new Map<number, mnt_entry[]>();
  for (const e of entries) {
    if (e.sharedId) groups.set(e.sharedId, [...(groups.get(e.sharedId) ?? []), e]);
  }
  // The member each group is set from: the one whose root holds every other's (same file
  // system: the kernel sets a group only from a wider root).
  const leaders = new Map<number, mnt_entry>();
  const leaderOf = (id: number, members: readonly mnt_entry[]) => {
    let lead = leaders.get(id);
    if (lead) return lead;
    lead = [...members].sort((a, b) => a.root.length - b.root.length)[0];
    for (const m of members) {
      if (m.rootDev !== lead.rootDev || !within(m.root, lead.root)) {
        throw new MountPlanError(
          `Cannot make the sharing of ${mountName(m)} again: its peer group ${id} holds ` +
            `mounts of which none shows all the others; not supported yet`,
        );
      }
    }
    leaders.set(id, lead);
    return lead;
  };
  const masterOf = (e: mnt_entry) => {
    const peers = groups.get(e.masterId);
    if (!peers) {
      throw new MountPlanError(
        `Cannot make ${mountName(e)} again: it is a slave of peer group ${e.masterId}, ` +
          `which is outside the namespace (external masters are not supported yet)`,
      );
    }
    const lead = leaderOf(e.masterId, peers);
    if (e.rootDev !== lead.rootDev || !within(e.root, lead.root)) {
      throw new MountPlanError(
        `Cannot make ${mountName(e)} again: no mount of its master's peer group ` +
          `${e.masterId} shows all it shows; not supported yet`,
      );
    }
    return lead;
  };
  const steps: PropagationStep[] = [];
  const done = new Set<number>();
  // A group whose members are slaves is set once its master's group is.
  const setGroup = (id: number, seen: number[]) => {
    if (done.has(id)) return;
    if (seen.includes(id)) {
      throw new MountPlanError(`Peer groups ${seen.join(", ")} are each other's masters`);
    }
    const members = groups.get(id)!;
    const lead = leaderOf(id, members);
    if (lead.masterId) {
      setGroup(lead.masterId, [...seen, id]);
      steps.push({ how: "join", from: masterOf(lead), entry: lead }, { how: "slave", entry: lead });
    }
    steps.push({ how: "shared", entry: lead });
    for (const m of members) if (m !== lead) steps.push({ how: "join", from: lead, entry: m });
    done.add(id);
  };
  for (const id of groups.keys()) setGroup(id, []);
  for (const e of entries) {
    if (e.masterId && !e.sharedId) {
      const from = masterOf(e);
      setGroup(e.masterId, []);
      steps.push({ how: "join", from, entry: e }, { how: "slave", entry: e });
    }
  }
  for (const e of entries) if (e.flags & MS.UNBINDABLE) steps.push({ how: "unbindable", entry: e });
  return steps;
}
