/**
 * A mount namespace of the tree's own: every mount its root task sees (/proc/ROOT/mountinfo)
 * into mountpoints-ID.img as criu writes it, ID being the namespace's id in ids-PID.img, and
 * each tmpfs's files into tmpfs-dev-DEV.tar.gz.img (tar, as criu runs it). What could not be
 * made again is refused here, by the plan the restore follows (restore/mount_plan.ts).
 *
 * @module
 */
import { walkFiles } from "../util/walk_files.ts";
import { clearField, clone, create } from "../images/protobuf.ts";
import { fstype, type mnt_entry, mnt_entrySchema } from "../../proto/gen/misc_pb.ts";
import { type MountInfo, MountinfoError, parseMountinfo } from "../util/mountinfo.ts";
import {
  AUTODETECTED_MOUNT,
  fstypeOf,
  hasTar,
  hidersOf,
  liesOn,
  mountName,
  MountPlanError,
  planMounts,
  planNested,
  planPropagation,
  within,
} from "../restore/mount_plan.ts";
import { nsLink, parseFdinfo, readProcText } from "../tree/proc.ts";
import { close, MS, O, open, pidfdGetfd, pidfdOpen, userDev } from "../syscalls/mod.ts";
import { InfectError, type RemoteSyscalls } from "../tree/infect.ts";
import type { DumpContext } from "./context.ts";
import { UnsupportedError } from "./file_types.ts";
import { openHiddenMount } from "./hidden_mount.ts";

/** The mounts of a tree's own mount namespace, ready to write. */
export interface MountNamespace {
  /** The namespace's id (ids-PID.img's mnt_ns_id). */
  id: number;
  /** The root task (its /proc/PID/root reaches the namespace's mounts). */
  pid: number;
  entries: mnt_entry[];
  /** Detached copies of its tmpfs mounts (criu's descriptors), by mount id. */
  clones: Map<number, number>;
}

/** The name `--external mnt[MOUNTPOINT]:KEY` gives the mount at `mountpoint`, if any. */
function externalKey(external: readonly string[] | undefined, mountpoint: string) {
  const prefix = `mnt[${mountpoint}]:`;
  return external?.find((x) => x.startsWith(prefix))?.slice(prefix.length);
}

/**
 * Reads the mounts of the mount namespace of task `pid` (the tree's root, frozen) and checks
 * that each can be made again. Throws UnsupportedError naming the first that cannot.
 */
export function readMountNamespace(ctx: DumpContext, pid: number, id: number): MountNamespace {
  const { entries, host } = readEntries(ctx, pid);
  checkSharing(pid, entries, host);
  try {
    planMounts(entries);
    planPropagation(entries);
  } catch (e) {
    if (e instanceof MountPlanError) {
      throw new UnsupportedError(`Cannot dump the mount namespace of task ${pid}: ${e.message}`);
    }
    throw e;
  }
  return { id, pid, entries, clones: new Map() };
}

/**
 * Reads the mounts of a mount namespace nested in the tree's own `root` (made by a task of the
 * tree, as systemd makes one for a service), through task `pid` in it, and checks that it can
 * be made again from a copy of its parent (restore/mount_plan.ts, planNested).
 */
export function readNestedMountNamespace(
  ctx: DumpContext,
  pid: number,
  id: number,
  root: MountNamespace,
): MountNamespace {
  // Its copies of external mounts are copies (criu names only the root namespace's).
  // (Copies hidden there come back hidden: the namespace is made again from a copy.)
  const { entries, host } = readEntries(ctx, pid, false);
  checkSharing(pid, entries, host);
  checkOvermounts(pid, entries);
  try {
    planNested(root.entries, entries);
  } catch (e) {
    if (e instanceof MountPlanError) {
      throw new UnsupportedError(`Cannot dump the mount namespace of task ${pid}: ${e.message}`);
    }
    throw e;
  }
  return { id, pid, entries, clones: new Map() };
}

/**
 * Refuses a tmpfs two nested mount namespaces share and the root's does not have (one made
 * from the other, unshare there): each is made again from a copy of the root's, where that
 * tmpfs would be two, each with a copy of the files.
 */
export function checkNestedTmpfs(root: MountNamespace, nested: MountNamespace[]): void {
  const rootDevs = new Set(root.entries.map((e) => e.rootDev));
  const seen = new Map<number, MountNamespace>();
  for (const n of nested) {
    for (const e of n.entries) {
      if (e.fstype !== fstype.TMPFS || rootDevs.has(e.rootDev)) continue;
      const other = seen.get(e.rootDev);
      if (other && other !== n) {
        throw new UnsupportedError(
          `Cannot dump the mount namespace of task ${n.pid}: its tmpfs at ${e.mountpoint} is ` +
            `also task ${other.pid}'s, in another nested mount namespace, and not in the ` +
            `root's; not supported yet`,
        );
      }
      seen.set(e.rootDev, n);
    }
  }
}

/**
 * Refuses, in a nested mount namespace (made from a copy of its parent's, which a hidden copy
 * would not be found in by its place), a mount another one hides (overmounted).
 */
function checkOvermounts(pid: number, entries: readonly mnt_entry[]): void {
  for (const m of entries) {
    const hider = hidersOf(entries, m)[0];
    if (hider) {
      throw new UnsupportedError(
        `Cannot dump the mount namespace of task ${pid}: ${mountName(m)} is hidden by ` +
          `${mountName(hider)} (overmounted) in a nested mount namespace; not supported yet`,
      );
    }
  }
}

/**
 * The options of mount `m` with their ids (uid=, gid=, as mountinfo shows them to criu) as
 * the tree sees them: its tasks mount it again in their user namespace, as criu's do.
 */
function treeOptions(ctx: DumpContext, m: MountInfo): string {
  if (!ctx.userns) return m.options;
  const what = `mount ${m.id} at ${m.mountpoint}`;
  return m.options.split(",").map((o) => {
    const id = /^(uid|gid)=(\d+)$/.exec(o);
    if (!id) return o;
    const n = Number(id[2]);
    return `${id[1]}=${id[1] === "uid" ? ctx.uid(n, what) : ctx.gid(n, what)}`;
  }).join(",");
}

/** The mounts task `pid` sees, as entries, and criu's own. */
function readEntries(
  ctx: DumpContext,
  pid: number,
  external = true,
): { entries: mnt_entry[]; host: MountInfo[] } {
  let mounts: MountInfo[];
  try {
    mounts = parseMountinfo(readProcText(pid, "mountinfo"));
  } catch (e) {
    if (e instanceof MountinfoError) throw new UnsupportedError(e.message);
    throw e;
  }
  const host = parseMountinfo(Deno.readTextFileSync("/proc/self/mountinfo"));
  const entries = mounts.map((m) => {
    // --enable-fs, and ramfs (filled from its tar, as a tmpfs): mounted anew, by name.
    const auto = m.type === "ramfs" ||
      (ctx.opts.enableFs?.includes(m.type) && fstypeOf(m.type) === fstype.UNSUPPORTED);
    const type = auto ? fstype.AUTO : fstypeOf(m.type);
    return create(mnt_entrySchema, {
      fstype: type,
      mntId: m.id,
      rootDev: m.kdev,
      parentMntId: m.parentId,
      flags: m.flags,
      root: m.root,
      // As criu: a bind of what was removed since is bound from it made again, then removed.
      deleted: m.deleted || undefined,
      mountpoint: m.mountpoint,
      source: m.source,
      // As criu: a devpts is always a new instance.
      options: m.type === "devpts" && !m.options.split(",").includes("newinstance")
        ? [treeOptions(ctx, m), "newinstance"].filter(Boolean).join(",")
        : treeOptions(ctx, m),
      sharedId: m.sharedId,
      masterId: m.masterId,
      sbFlags: m.sbFlags,
      // Written for mounts made anew by name (fstype AUTO); else for messages only.
      fsname: (type === fstype.UNSUPPORTED && m.mountpoint !== "/") || auto ? m.type : undefined,
      extKey: external ? externalKey(ctx.opts.external, m.mountpoint) : undefined,
    });
  });
  if (ctx.opts.extMountAuto && external) autoExternal(ctx, entries, host);
  for (const e of entries) {
    if (e.fstype !== fstype.AUTO || e.fsname === "ramfs" || e.extKey) continue;
    if ([...Deno.readDirSync(`/proc/${pid}/root${e.mountpoint}`)].length) {
      throw new UnsupportedError(
        `Cannot dump ${mountName(e)}: it holds files, which a ${e.fsname} mounted anew ` +
          `(--enable-fs) would not have`,
      );
    }
  }
  return { entries, host };
}

/** Refuses a peer group with members outside the tree's namespaces (criu's). */
function checkSharing(pid: number, entries: mnt_entry[], host: MountInfo[]): void {
  // A peer group with members outside the namespace (criu's) could not be joined again.
  const ours = new Set(host.map((m) => m.sharedId));
  const outside = entries.find((e) => e.sharedId && ours.has(e.sharedId));
  if (outside) {
    throw new UnsupportedError(
      `Cannot dump the mount namespace of task ${pid}: ${mountName(outside)} shares peer ` +
        `group ${outside.sharedId} with mounts outside it (external sharing); not supported yet`,
    );
  }
}

/**
 * --ext-mount-map auto, as criu: a mount (not the root, not named external) showing a file
 * system criu's namespace has mounted too, at a root holding this one's, is external: bound
 * again at restore from its path in criu's namespace, which its source says. A shared one only
 * with --enable-external-sharing, a slave only with --enable-external-masters.
 */
function autoExternal(ctx: DumpContext, entries: mnt_entry[], host: MountInfo[]): void {
  const root = entries.find((e) =>
    e.mountpoint === "/" && !entries.some((p) => p.mntId === e.parentMntId)
  );
  for (const e of entries) {
    if (e === root || e.extKey) continue;
    if (e.sharedId && !ctx.opts.externalSharing) continue;
    if (e.masterId && !ctx.opts.externalMasters) continue;
    const covers = (h: MountInfo) => h.kdev === e.rootDev && within(e.root, h.root);
    const match = host.filter(covers).sort((a, b) => b.root.length - a.root.length)[0];
    if (!match) continue;
    const rest = match.root === "/" ? e.root : e.root.slice(match.root.length);
    e.extKey = AUTODETECTED_MOUNT;
    e.source = (match.mountpoint === "/" ? "" : match.mountpoint) + (rest === "/" ? "" : rest) ||
      "/";
  }
}

/**
 * Writes mountpoints-ID.img (children before parents, as criu) and the files of every tmpfs
 * made anew into tmpfs-dev-DEV.tar.gz.img, read through /proc/PID/root while the tree is frozen.
 */
export async function writeMountNamespace(
  ctx: DumpContext,
  ns: MountNamespace,
  parent?: MountNamespace,
): Promise<void> {
  writeMountEntries(ctx, ns);
  for (const e of tarredTmpfs(ns, parent)) {
    const fd = ns.clones.get(e.mntId);
    await dumpTmpfs(
      ctx,
      // An unbindable one, which cannot be copied, is read at its place.
      fd === undefined
        ? shown(`/proc/${ns.pid}/root${e.mountpoint}`, e)
        : `/proc/${Deno.pid}/fd/${fd}`,
      e,
    );
  }
}

/**
 * The tmpfs (and ramfs) mounts of `ns` made anew at restore, whose files go in a tar: by its
 * own plan, or, for a namespace nested in `parent`, those it made itself.
 */
function tarredTmpfs(ns: MountNamespace, parent?: MountNamespace): mnt_entry[] {
  const steps = parent ? planNested(parent.entries, ns.entries).extra : planMounts(ns.entries);
  return steps.filter((s) => s.how === "new" && hasTar(s.entry)).map((s) => s.entry);
}

/** mountpoints-ID.img of namespace `ns`: its mounts, children before parents (as criu). */
export function writeMountEntries(ctx: DumpContext, ns: MountNamespace): void {
  const image = ctx.image(`mountpoints-${ns.id}.img`, "MNTS");
  for (const e of [...ns.entries].reverse()) {
    const out = clone(mnt_entrySchema, e);
    // Named in the images only for a file system mounted anew by name (fstype AUTO).
    if (e.fstype !== fstype.AUTO) clearField(out, mnt_entrySchema.field.fsname);
    image.entry(mnt_entrySchema, out);
  }
}

/**
 * A detached copy of each tmpfs (and ramfs) mount of the namespace (nested in `parent`, its
 * own), made inside task `rs` of it (open_tree can copy only a mount of the caller's
 * namespace) and taken here: its files whole, with those other mounts hide below it. Kept in
 * `ns.clones` until the dump ends.
 */
export async function cloneTmpfsMounts(
  ctx: DumpContext,
  rs: RemoteSyscalls,
  ns: MountNamespace,
  parent?: MountNamespace,
): Promise<void> {
  const pid = rs.task.pid;
  // The helper copies in the namespace's own user namespace when it is not criu's.
  const userns = nsLink(pid, "user") !== nsLink(Deno.pid, "user");
  const pidfd = pidfdOpen(pid);
  try {
    for (const e of tarredTmpfs(ns, parent)) {
      // Its files whole, through a mount of its file system showing all of it at its place:
      // itself, unless one stacked on it hides it there.
      const visible = [e, ...ns.entries].find((m) =>
        m.rootDev === e.rootDev && m.root === "/" &&
        mountAt(`/proc/${pid}/root${m.mountpoint}`) === m.mntId
      );
      let fd: number;
      if (!visible) {
        // Hidden (overmounted): copied where what hides it, and what lies on it at its
        // place, are unmounted (in a private copy of the namespace).
        const hiders = unmountedToShow(ns.entries, e);
        try {
          fd = await openHiddenMount(pid, userns, e.mountpoint, hiders.map((m) => m.mountpoint));
        } catch (err) {
          throw new UnsupportedError(
            `Cannot dump ${mountName(e)}: another mount hides it, and it could not be ` +
              `copied: ${(err as Error).message}`,
          );
        }
      } else {
        const copy = await copyVisible(rs, pidfd, userns, visible, e);
        // An unbindable mount cannot be copied: read where it is (below, by its place).
        if (copy === undefined) continue;
        fd = copy;
      }
      ctx.inFlightFds.push(fd); // closed when the dump ends
      // A mount stacked at its place would be copied instead.
      shown(`/proc/self/fd/${fd}`, e);
      ns.clones.set(e.mntId, fd);
    }
  } finally {
    close(pidfd);
  }
}

/**
 * A copy of `visible` (the mount showing tmpfs `e` whole), made by task `rs` (open_tree) and
 * taken through `pidfd`; undefined for an unbindable mount, which cannot be copied.
 */
async function copyVisible(
  rs: RemoteSyscalls,
  pidfd: number,
  userns: boolean,
  visible: mnt_entry,
  e: mnt_entry,
): Promise<number | undefined> {
  let there: number;
  try {
    there = rs.cloneMount(visible.mountpoint);
  } catch (err) {
    if (!(err instanceof InfectError)) throw err;
    if (e.flags & MS.UNBINDABLE) return undefined;
    // A task without CAP_SYS_ADMIN (a runc container's) may not copy it: the helper does,
    // entered into its namespace with criu's privileges.
    return await openHiddenMount(rs.task.pid, userns, visible.mountpoint, []).catch(() => {
      throw err;
    });
  }
  try {
    return pidfdGetfd(pidfd, there, rs.task.pid);
  } finally {
    rs.closeFd(there);
  }
}

/**
 * The mounts to unmount, in turn and by their places, for the place of `e` to reach it: those
 * that hide it and those stacked on it there. One that lies on another at another place goes
 * with it (lazily); of those stacked at one place, the upper goes first; shallow places first.
 */
function unmountedToShow(entries: readonly mnt_entry[], e: mnt_entry): mnt_entry[] {
  const byId = new Map(entries.map((m) => [m.mntId, m]));
  const all = [
    ...hidersOf(entries, e),
    ...entries.filter((m) => m.mountpoint === e.mountpoint && m.parentMntId === e.mntId),
  ];
  return all.filter((m) =>
    !liesOn(byId, m, (p) => all.includes(p) && p.mountpoint !== m.mountpoint)
  ).sort((a, b) =>
    a.mountpoint.length - b.mountpoint.length ||
    (liesOn(byId, b, (p) => p === a) ? 1 : liesOn(byId, a, (p) => p === b) ? -1 : 0)
  );
}

/** The id of the mount `path` reaches (the top one at a mountpoint). */
function mountAt(path: string): number | undefined {
  let fd;
  try {
    fd = open(path, O.PATH | O.CLOEXEC);
  } catch {
    return undefined;
  }
  try {
    return parseFdinfo(Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`)).mntId;
  } finally {
    close(fd);
  }
}

/**
 * `path`, which must show mount `e`'s file system (a copy of it, or its place in the root
 * task's namespace): refused when another mount hides it there.
 */
function shown(path: string, e: mnt_entry): string {
  if (Deno.statSync(path).dev !== userDev(e.rootDev)) {
    throw new UnsupportedError(
      `Cannot dump ${mountName(e)}: another mount hides it; not supported yet`,
    );
  }
  return path;
}

/**
 * tar's --owner-map and --group-map for the files of tmpfs mount `e` at `dir`: each owner as
 * the tree sees it (criu's tar holds them so, made inside the tree's user namespace); an owner
 * it does not map is refused. The map files go when disposed of.
 */
function ownerMaps(ctx: DumpContext, dir: string, e: mnt_entry): Disposable & { args: string[] } {
  const uids = new Set<number>(), gids = new Set<number>();
  walkFiles(dir, (_, st) => {
    uids.add(st.uid!);
    gids.add(st.gid!);
  });
  const what = `the files of ${mountName(e)}`;
  const tmp = Deno.makeTempDirSync({ prefix: "criu-tar-ids-" });
  const write = (name: string, ids: Set<number>, inside: (id: number) => number) => {
    const path = `${tmp}/${name}`;
    Deno.writeTextFileSync(path, [...ids].map((id) => `+${id} x:${inside(id)}\n`).join(""));
    return path;
  };
  try {
    return {
      args: [
        `--owner-map=${write("owners", uids, (id) => ctx.uid(id, what))}`,
        `--group-map=${write("groups", gids, (id) => ctx.gid(id, what))}`,
      ],
      [Symbol.dispose]: () => Deno.removeSync(tmp, { recursive: true }),
    };
  } catch (err) {
    Deno.removeSync(tmp, { recursive: true });
    throw err;
  }
}

/** tar of the files of tmpfs mount `e`, read at `dir` (a detached copy of it, or the mount). */
async function dumpTmpfs(ctx: DumpContext, dir: string, e: mnt_entry): Promise<void> {
  const name = `tmpfs-dev-${e.rootDev}.tar.gz.img`;
  using maps = ctx.userns ? ownerMaps(ctx, dir, e) : undefined;
  const out = await new Deno.Command("tar", {
    args: [
      ...(maps?.args ?? []),
      "--create",
      "--gzip",
      "--no-unquote",
      "--no-wildcards",
      "--one-file-system",
      "--check-links",
      "--preserve-permissions",
      "--sparse",
      "--numeric-owner",
      "--directory",
      dir,
      ".",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new UnsupportedError(
      `Cannot dump the files of ${mountName(e)}: tar failed: ${
        new TextDecoder().decode(out.stderr).trim().split("\n")[0]
      }`,
    );
  }
  ctx.image(name, "RAW").raw(out.stdout);
}
