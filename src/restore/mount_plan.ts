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
  for (const e of entries) {
    if (e.flags & (MS.SHARED | MS.SLAVE | MS.UNBINDABLE) || e.sharedId || e.masterId) {
      throw new MountPlanError(
        `Cannot make ${mountName(e)} again: it is ${
          e.flags & MS.UNBINDABLE ? "unbindable" : e.sharedId ? "shared" : "a slave"
        }; mount propagation is not supported yet`,
      );
    }
  }
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
