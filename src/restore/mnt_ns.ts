/**
 * The tree's own mount namespace made again. The restore helper makes the root task in a new
 * mount namespace (CLONE_NEWNS: a copy of criu's); inside it, the root task builds the
 * namespace's mounts, as the plan says (restore/mount_plan.ts), on a bind mount of `--root`,
 * then makes that its root (pivot_root) and lets criu's mounts go:
 *
 * ```
 * mount --make-rprivate /            nothing done here reaches criu's namespace
 * mount --bind ROOT ROOT             the namespace's root
 * each mount, parents first:         at ROOT/MOUNTPOINT; bound (from --root, --external
 *                                    mnt[KEY]:PATH, or the mount it shows part of) or mounted
 *                                    anew, a tmpfs then filled from its tar
 * each mount's own flags             ro, nosuid, nodev, noexec, atime (mount_setattr)
 * cd ROOT; pivot_root . .; umount -l .
 * ```
 *
 * Every other task is made inside it. criu, which cannot enter it, reaches the tree's files
 * through /proc/ROOT/root (DumpImages.fsRoot).
 *
 * @module
 */
import type { ImagesDir } from "../images/images_dir.ts";
import { asRootOf, type UserNamespace } from "../tree/userns.ts";
import {
  AT_EMPTY_PATH,
  Errno,
  errnoName,
  joinPeerGroup,
  MNT_DETACH,
  MOUNT_ATTR_SIZE,
  mountAttr,
  mountFlagsAttr,
  MOVE_MOUNT,
  MS,
  NR,
  O,
  withTaskFd,
} from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { exists } from "../util/exists.ts";
import { helperExecutable } from "../util/helper_exe.ts";
import { RemoteArena } from "./arena.ts";
import { RestoreError } from "./files.ts";
import {
  AUTODETECTED_MOUNT,
  bindsPty,
  type CgroupNsRoots,
  fstypeOf,
  hasTar,
  MOUNT_FLAGS,
  mountName,
  MountPlanError,
  type MountStep,
  type NestedPlan,
  planMounts,
  planNested,
  planPropagation,
  type PropagationStep,
  within,
} from "./mount_plan.ts";
import type { Logger } from "../log.ts";
import type { DumpImages, TaskImages } from "./images.ts";
import { type MountInfo, parseMountinfo } from "../util/mountinfo.ts";
import { nsLink, parseFdinfo, readProcText } from "../tree/proc.ts";
import { fstype, type mnt_entry } from "../../proto/gen/misc_pb.ts";
import { openPtyAt } from "./ttys.ts";

/** Where the mounts of a namespace come from, outside it. */
export interface MountSources {
  /** The directory its root is made from (`--root`). */
  root?: string;
  /** The directories external mounts are bound from, by key (`--external mnt[KEY]:PATH`). */
  external?: ReadonlyMap<string, string>;
  /** Mounts found in criu's namespace at dump are bound from there (--ext-mount-map auto). */
  extMountAuto?: boolean;
  /** The roots of the tree's own cgroup namespace: its cgroup mounts are made inside it. */
  cgroupNsRoots?: CgroupNsRoots;
  /** The images: the tmpfs tars. */
  images: ImagesDir;
  /** The tree's own user namespace: the owners in the tars are as it sees them. */
  userns?: UserNamespace;
}

/** A mount namespace ready to be made: its plan, and what it is made from. */
export interface MountNamespacePlan {
  steps: MountStep[];
  /** Their propagation, set once all are made. */
  propagation: PropagationStep[];
  root: string;
  /** What each external mount is bound from. */
  external: ReadonlyMap<mnt_entry, string>;
  /** The tar of each tmpfs made anew. */
  tars: Map<mnt_entry, string>;
  /** The tree's own user namespace: the tars are extracted in it, as its root. */
  userns?: UserNamespace;
}

/**
 * Checks that the mounts of `entries` can be made again from `src`, before anything is made:
 * the plan holds, `--root` is a directory, every external mount and every tmpfs tar is given.
 */
export function checkMountNamespace(
  entries: readonly mnt_entry[],
  src: MountSources,
): MountNamespacePlan {
  let steps: MountStep[], propagation: PropagationStep[];
  try {
    steps = planMounts(entries, src.cgroupNsRoots);
    propagation = planPropagation(entries);
  } catch (e) {
    if (e instanceof MountPlanError) throw new RestoreError(`Cannot restore: ${e.message}`);
    throw e;
  }
  if (!src.root) {
    throw new RestoreError(
      "Cannot restore: the tree had a mount namespace of its own; give the directory its " +
        "root is made from with --root",
    );
  }
  const root = directory(src.root, "--root");
  const external = new Map<mnt_entry, string>();
  const tars = new Map<mnt_entry, string>();
  for (const s of steps) {
    if (s.how === "external" && s.key === AUTODETECTED_MOUNT) {
      if (!src.extMountAuto) {
        throw new RestoreError(
          `Cannot restore ${mountName(s.entry)}: it was found bound from criu's mount ` +
            `namespace (${s.entry.source}); restore with --ext-mount-map auto`,
        );
      }
      external.set(s.entry, directoryOrFile(s.entry.source, "--ext-mount-map auto:"));
    } else if (s.how === "external") {
      const path = src.external?.get(s.key);
      if (path === undefined) {
        throw new RestoreError(
          `Cannot restore ${mountName(s.entry)}: it was external (${s.key}); give it with ` +
            `--external mnt[${s.key}]:PATH`,
        );
      }
      // A relative path is taken from the root, as criu takes it (it works from there).
      const abs = path.startsWith("/") ? path : `/${path}`;
      external.set(s.entry, directoryOrFile(abs, `--external mnt[${s.key}]`));
    } else if (s.how === "new" && hasTar(s.entry)) {
      tars.set(s.entry, tmpfsTar(src.images, s.entry));
    }
  }
  return { steps, propagation, root, external, tars, userns: src.userns };
}

/** `path`, absolute and without symlinks, if it is a directory. */
function directory(path: string, what: string): string {
  const real = directoryOrFile(path, what);
  if (!Deno.statSync(real).isDirectory) {
    throw new RestoreError(`Cannot restore: ${what} ${path} is not a directory`);
  }
  return real;
}

function directoryOrFile(path: string, what: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    throw new RestoreError(`Cannot restore: ${what} ${path} does not exist`);
  }
}

/**
 * Where path `path` of the tree lies outside its namespace, before it is made: under `--root`
 * or an external mount's directory; undefined when it lies on a mount made anew (a tmpfs's
 * files come from its tar).
 */
export function outsidePath(plan: MountNamespacePlan, path: string): string | undefined {
  let top: MountStep | undefined;
  for (const s of plan.steps) {
    // A later mount at the same place is stacked on the earlier: it shows.
    if (within(path, s.entry.mountpoint)) {
      if (!top || s.entry.mountpoint.length >= top.entry.mountpoint.length) top = s;
    }
  }
  if (!top) return undefined;
  const mp = top.entry.mountpoint;
  const rest = mp === "/" ? path : path.slice(mp.length);
  const base = (s: MountStep): string | undefined => {
    if (s.how === "root") return plan.root === "/" ? "" : plan.root;
    if (s.how === "external") return plan.external.get(s.entry);
    if (s.how === "bind") {
      const from = plan.steps.find((x) => x.entry === s.from)!;
      const b = base(from);
      return b === undefined ? undefined : b + s.sub;
    }
    return undefined;
  };
  const b = base(top);
  return b === undefined ? undefined : (b + rest) || "/";
}

/**
 * A bind's root that was removed since it was mounted, made again at `path` for the time of
 * the bind (as criu): a directory or an empty file, as its mountpoint `target` is, with its
 * mode; as the root of the tree's user namespace `userns`, if any. Removed again on disposal.
 */
function madeForBind(
  path: string,
  target: string,
  what: string,
  userns?: UserNamespace,
): Disposable {
  try {
    const st = Deno.statSync(target);
    asRootOf(userns, () => {
      if (st.isDirectory) Deno.mkdirSync(path);
      else if (st.isFile) Deno.writeFileSync(path, new Uint8Array(), { createNew: true });
      else throw new Error("it is neither a directory nor a file");
    });
    Deno.chmodSync(path, (st.mode ?? 0) & 0o7777);
  } catch (e) {
    throw new RestoreError(
      `Cannot restore ${what}: its removed root could not be made again: ${(e as Error).message}`,
    );
  }
  return { [Symbol.dispose]: () => Deno.removeSync(path) };
}

/**
 * Makes the mounts of `plan` inside the root task of `rs` (in its new mount namespace) and
 * makes them its root. Throws RestoreError naming the mount that failed. A pty whose slave a
 * mount binds (a console) is made with the mounts: its master goes into `ptys`, by the slave's
 * path in the tree, for the ptys' restore (DumpImages.premadePtys).
 *
 * With `readOnlyLater`, as criu: a mount read-only by its own flag (not its super block's),
 * found at its mountpoint, is left writable for the deleted files the restore makes on it
 * (and removes again); the mountpoints returned are for {@link makeReadOnly} once they are.
 */
export async function makeMountNamespace(
  rs: RemoteSyscalls,
  plan: MountNamespacePlan,
  log: Logger,
  ptys: Map<string, number>,
  readOnlyLater = false,
): Promise<string[]> {
  const pid = rs.task.pid;
  const calls = mountCalls(rs);
  const { arena, sys, str } = calls;
  arena.reset();
  sys(
    "the mount namespace (criu's mounts made private in it)",
    NR.mount,
    str("none"),
    str("/"),
    0,
    MS.REC | MS.PRIVATE,
    0,
  );
  // In a user namespace of its own, the namespace is built on a yard the task may reach, the
  // paths criu was given bound by criu (see MountYard); and tar reaches the task's descriptors.
  using yard = plan.userns ? new MountYard(pid) : undefined;
  if (plan.userns) openToItsNamespace(calls);
  const root = yard?.path ?? plan.root;
  const bind = (source: string, target: string, what: string) =>
    yard
      ? yard.bind(source, target, what)
      : void sys(what, NR.mount, str(source), str(target), 0, MS.BIND, 0);
  const at = (e: mnt_entry) => (e.mountpoint === "/" ? root : root + e.mountpoint);
  // Each mount made, by its root's O_PATH descriptor in the task: sources of binds, and the
  // place of remounts, whatever is stacked on it later.
  const fds = new Map<mnt_entry, number>();
  try {
    for (const s of plan.steps) {
      const e = s.entry;
      const what = mountName(e);
      arena.reset();
      if (s.how === "root") {
        await bind(plan.root, at(e), what);
      } else if (s.how === "external") {
        await bind(plan.external.get(e)!, at(e), what);
      } else if (s.how === "bind") {
        // A pty's slave (a console): the pty is made now, its master kept for its restore.
        if (bindsPty(s)) {
          const name = `${s.from.mountpoint}/${s.entry.root.slice(1)}`;
          if (!ptys.has(name)) {
            const ptmx = `/proc/${pid}/fd/${fds.get(s.from)}/ptmx`;
            ptys.set(name, openPtyAt(ptmx, Number(s.entry.root.slice(1)), name));
          }
        }
        const sub = `/proc/${pid}/fd/${fds.get(s.from)}${s.sub}`;
        using _gone = e.deleted
          ? madeForBind(sub, `/proc/${pid}/root${at(e)}`, what, plan.userns)
          : undefined;
        bindFrom(calls, fds.get(s.from)!, s.sub, at(e), what);
      } else {
        mountAnew(calls, e, s.fs, at(e), plan.tars.has(e), what);
      }
      // (The scratch room again: the calls above used it.)
      arena.reset();
      const fd = Number(sys(what, NR.open, str(at(e)), O.PATH | O.CLOEXEC, 0));
      fds.set(e, fd);
      const tar = plan.tars.get(e);
      if (tar) {
        await extractTar(tar, `/proc/${pid}/fd/${fd}`, what, plan.userns ? pid : undefined);
        readOnlyOnceFilled(calls, e, fd, what);
      }
      log.debug(`Mount ${e.mntId} made (${s.how}) at ${e.mountpoint}`);
    }
    // Each mount's own flags, exactly (a bind shows its source's until told).
    const entries = plan.steps.map((s) => s.entry);
    const later = readOnlyLater ? readOnlyAtTheirPlace(entries) : [];
    setMountFlags(calls, entries, fds, new Set(later));
    arena.reset();
    const dot = str(".");
    sys("the mount namespace's root", NR.chdir, str(root));
    sys("the mount namespace's root (pivot_root)", NR.pivot_root, dot, dot);
    sys("the mount namespace's root (criu's mounts let go)", NR.umount2, dot, MNT_DETACH);
    sys("the mount namespace's root", NR.chdir, str("/"));
    // Propagation last: pivot_root wants its mounts private, and no mount made later may
    // propagate. By descriptor (the namespace may have no /proc).
    setPropagation(calls, plan.propagation, fds, {
      pid,
      path: (source) => plan.external.get(source) ?? plan.root,
    });
    log.info(`Mount namespace made: ${plan.steps.length} mounts`);
    return later.map((e) => e.mountpoint);
  } finally {
    for (const fd of fds.values()) rs.call(NR.close, fd);
  }
}

/**
 * The mounts of `entries` (in the order they are made) read-only by their own flag, not their
 * super block's, that show at their mountpoint (no later one stacked on or above it): the ones
 * a restore makes read-only last.
 */
function readOnlyAtTheirPlace(entries: readonly mnt_entry[]): mnt_entry[] {
  return entries.filter((e, i) =>
    e.flags & MS.RDONLY && !(e.sbFlags & MS.RDONLY) &&
    !entries.slice(i + 1).some((o) => within(e.mountpoint, o.mountpoint))
  );
}

/**
 * Makes the mounts at `mountpoints` read-only (their own flag) in the mount namespace of task
 * `pid`, whose root is that namespace's, from outside with criu's privileges (the remount_ro
 * helper): the task may have dropped its own by then (a runc container's init keeps a few).
 */
export async function makeReadOnlyFromOutside(
  pid: number,
  mountpoints: readonly string[],
): Promise<void> {
  const userns = nsLink(pid, "user") !== nsLink(Deno.pid, "user");
  const out = await new Deno.Command(helperExecutable("remount_ro"), {
    args: [`${pid}`, userns ? "1" : "0", ...mountpoints],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  if (out.success) return;
  if (out.stdout.length >= 8) {
    const v = new DataView(out.stdout.buffer, out.stdout.byteOffset);
    const [index, err] = [v.getInt32(0, true), v.getInt32(4, true)];
    const what = index < 0 ? `the mount namespace of task ${pid}` : `mount ${mountpoints[index]}`;
    throw new RestoreError(`Cannot make ${what} read-only: ${errnoName(-err)}`);
  }
  throw new RestoreError(`Cannot make mounts read-only: the helper exited with ${out.code}`);
}

/**
 * Makes the mounts at `mountpoints` read-only (their own flag), in the task of `rs`, whose
 * root is its mount namespace's: the last step of {@link makeMountNamespace}'s `readOnlyLater`.
 */
export function makeReadOnly(rs: RemoteSyscalls, mountpoints: readonly string[]): void {
  const { arena, sys, str } = mountCalls(rs);
  for (const path of mountpoints) {
    arena.reset();
    const attr = arena.words([1n, /* MOUNT_ATTR_RDONLY */ 0n, 0n, 0n]);
    sys(`mount ${path} read-only`, NR.mount_setattr, -100, str(path), 0, attr, MOUNT_ATTR_SIZE);
  }
}

/**
 * Mounts at `target` (a path of the task) directory `sub` of the mount whose descriptor is
 * `from`, as `mount --bind` would, but through a copy of that mount alone: the directory itself,
 * not a mount made on it since (a path through the mount would cross into that one).
 */
function bindFrom(
  calls: ReturnType<typeof mountCalls>,
  from: number,
  sub: string,
  target: string,
  what: string,
): void {
  const tree = detachedCopy(calls, from, sub, what);
  try {
    attach(calls, tree, target, what);
  } finally {
    calls.sys(what, NR.close, tree);
  }
}

/**
 * A detached copy (open_tree) of directory `sub` of the mount whose descriptor is `from`, alone:
 * the first half of {@link bindFrom}, for a source that goes before the copy is mounted.
 */
function detachedCopy(
  { arena, sys, str }: ReturnType<typeof mountCalls>,
  from: number,
  sub: string,
  what: string,
): number {
  const CLONE = 1 /* OPEN_TREE_CLONE */ | O.CLOEXEC;
  const rel = sub.replace(/^\/+/, "");
  arena.reset();
  const copy = Number(sys(what, NR.open_tree, from, str(""), CLONE | AT_EMPTY_PATH));
  if (!rel) return copy;
  try {
    return Number(sys(what, NR.open_tree, copy, str(rel), CLONE));
  } finally {
    sys(what, NR.close, copy);
  }
}

/** Mounts detached tree `tree` at `target` (a path of the task). */
function attach(
  { arena, sys, str }: ReturnType<typeof mountCalls>,
  tree: number,
  target: string,
  what: string,
): void {
  arena.reset();
  sys(what, NR.move_mount, tree, str(""), -100, str(target), MOVE_MOUNT.F_EMPTY_PATH);
}

/**
 * Mounts file system `fs` anew at `target` (a path of the task) for `e`, with its flags, but
 * writable while its tar fills it (`filled`): a read-only one is made so after.
 */
function mountAnew(
  { arena, sys, str }: ReturnType<typeof mountCalls>,
  e: mnt_entry,
  fs: string,
  target: string,
  filled: boolean,
  what: string,
): void {
  arena.reset();
  const sbFlags = filled ? e.sbFlags & ~MS.RDONLY : e.sbFlags;
  const flags = sbFlags | (e.flags & MOUNT_FLAGS & ~MS.RDONLY);
  sys(what, NR.mount, str(e.source || "none"), str(target), str(fs), flags, str(e.options));
}

/** Mount `e` (descriptor `fd` in the task), filled from its tar: read-only again where it was. */
function readOnlyOnceFilled(
  { arena, sys, str }: ReturnType<typeof mountCalls>,
  e: mnt_entry,
  fd: number,
  what: string,
): void {
  if (!(e.sbFlags & MS.RDONLY)) return;
  arena.reset();
  const self = str(`/proc/self/fd/${fd}`);
  sys(what, NR.mount, 0, self, 0, MS.REMOUNT | e.sbFlags, str(e.options));
}

/** The id of the mount descriptor `fd` of task `pid` is on. */
function mountIdOf(pid: number, fd: number): number {
  return parseFdinfo(readProcText(pid, `fdinfo/${fd}`)).mntId;
}

/** A remote call in the task of `rs` that names what failed (`what`, then `tail`). */
function failing(rs: RemoteSyscalls, tail = "") {
  return (what: string, nr: number, ...args: (number | bigint)[]) => {
    const r = rs.call(nr, ...args);
    if (r < 0n) throw new RestoreError(`Cannot restore ${what}${tail}: ${errnoName(Number(-r))}`);
    return r;
  };
}

/**
 * Where the root task of a user namespace of the tree's own builds its mount namespace: the
 * paths criu was given (the root, external mounts' sources) need not be open to that
 * namespace's root (runc's root is under a directory only root may enter), so criu binds them
 * itself, from outside, with mount(8) run in the task's mount namespace; the namespace is built
 * on an empty directory of criu's the task may reach (the yard), then made the task's root.
 * Disposed of, the yard is removed (the task's mount on it went with pivot_root).
 */
class MountYard implements Disposable {
  /** The yard. */
  readonly path: string;
  readonly #pid: number;

  constructor(pid: number) {
    this.#pid = pid;
    this.path = Deno.makeTempDirSync({ prefix: "criu-mntns-" });
    Deno.chmodSync(this.path, 0o755);
  }

  /** Binds `source` (a path of criu's, the same in the task's namespace) at `target`. */
  async bind(source: string, target: string, what: string): Promise<void> {
    const out = await new Deno.Command("nsenter", {
      args: ["-t", `${this.#pid}`, "-m", "--", "mount", "--bind", "--", source, target],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim().split("\n")[0];
      throw new RestoreError(`Cannot restore ${what}: ${err}`);
    }
  }

  [Symbol.dispose](): void {
    Deno.removeSync(this.path);
  }
}

/**
 * Makes the task dumpable again (a change of its ids since, as the IPC namespace's objects are
 * made by their creators' ids, clears it): its /proc files are its own, and tar, run in its
 * user namespace, may reach its descriptors. Its own state comes back at the end.
 */
function openToItsNamespace({ sys }: ReturnType<typeof mountCalls>): void {
  const PR_SET_DUMPABLE = 4;
  sys("the task's /proc files (PR_SET_DUMPABLE)", NR.prctl, PR_SET_DUMPABLE, 1);
}

/** Remote calls for mounting in the task of `rs`: scratch room, and a call that names its failure. */
function mountCalls(rs: RemoteSyscalls) {
  const size = 4 * 4096;
  const arena = new RemoteArena(rs.task.pid, rs.scratch(size), size);
  return { arena, sys: failing(rs), str: (s: string) => arena.cstr(s) };
}

/**
 * Sets each mount's own flags to exactly its entry's (mount_setattr on its descriptor), but
 * read-only for those `writableForNow` holds.
 */
function setMountFlags(
  { arena, sys, str }: ReturnType<typeof mountCalls>,
  entries: readonly mnt_entry[],
  fds: Map<mnt_entry, number>,
  writableForNow?: ReadonlySet<mnt_entry>,
): void {
  for (const e of entries) {
    arena.reset();
    const flags = e.flags & MOUNT_FLAGS & ~(writableForNow?.has(e) ? MS.RDONLY : 0);
    const attr = arena.words(mountFlagsAttr(flags));
    const what = `the flags of ${mountName(e)}`;
    sys(what, NR.mount_setattr, fds.get(e)!, str(""), AT_EMPTY_PATH, attr, MOUNT_ATTR_SIZE);
  }
}

/**
 * Sets each mount's propagation as `steps` say, by the descriptors `fds` of the mounts:
 * mount_setattr for a kind, move_mount's MOVE_MOUNT_SET_GROUP to join a mount's group.
 */
function setPropagation(
  { arena, sys, str }: ReturnType<typeof mountCalls>,
  steps: readonly (PropagationStep | NestedPlan["propagation"][number])[],
  fds: Map<mnt_entry, number>,
  outside?: { pid: number; path: (source: mnt_entry) => string },
  parentFds?: Map<mnt_entry, number>,
): void {
  const KIND = {
    shared: MS.SHARED,
    slave: MS.SLAVE,
    unbindable: MS.UNBINDABLE,
    private: MS.PRIVATE,
  };
  for (const p of steps) {
    arena.reset();
    const what = `the sharing of ${mountName(p.entry)}`;
    const fd = fds.get(p.entry)!;
    if (p.how === "join" || p.how === "joinParent") {
      const flags = MOVE_MOUNT.SET_GROUP | MOVE_MOUNT.F_EMPTY_PATH | MOVE_MOUNT.T_EMPTY_PATH;
      const empty = str("");
      const from = p.how === "join" ? fds.get(p.from) : parentFds?.get(p.from);
      if (from === undefined) throw new RestoreError(`Cannot restore ${what}: no mount to join`);
      sys(what, NR.move_mount, from, empty, fd, empty, flags);
    } else if (p.how === "outsideSlave") {
      // Joined from criu's namespace, where what it is given keeps its sharing.
      if (!outside) throw new RestoreError(`Cannot restore ${what}: its master is outside`);
      const source = outside.path(p.source);
      try {
        withTaskFd(outside.pid, fd, (copy) => joinPeerGroup(source, copy, what));
      } catch (e) {
        if (!(e instanceof Errno)) throw e;
        throw new RestoreError(
          `Cannot restore ${what}: its master is outside, and ${source} (what it is bound ` +
            `from) is not a shared or slave mount root of the same file system (${e.code})`,
        );
      }
      const attr = arena.words(mountAttr(MS.SLAVE));
      sys(what, NR.mount_setattr, fd, str(""), AT_EMPTY_PATH, attr, MOUNT_ATTR_SIZE);
    } else {
      const attr = arena.words(mountAttr(KIND[p.how]));
      sys(what, NR.mount_setattr, fd, str(""), AT_EMPTY_PATH, attr, MOUNT_ATTR_SIZE);
    }
  }
}

/**
 * Fills a tmpfs made anew (reached at `dir`) from its tar, as criu: tar --extract. In a user
 * namespace of the tree's own (`userns`: a task of the tree in it), tar runs there as its root,
 * as criu's does: the owners in the tar are as the tree sees them, and the namespace's file
 * systems take only files made by ids it maps.
 */
async function extractTar(tar: string, dir: string, what: string, userns?: number): Promise<void> {
  using t = tarFor(tar, dir, userns);
  tarDone(await t.command.output(), what);
}

/** {@link extractTar}, waited for (a nested namespace is made between remote calls). */
function extractTarSync(tar: string, dir: string, what: string, userns?: number): void {
  using t = tarFor(tar, dir, userns);
  tarDone(t.command.outputSync(), what);
}

/**
 * The tar command extracting `tar` at `dir`, in the user namespace of task `userns` when
 * given: the image is then read from a copy its root may read (the images need not be open to
 * it), which goes when disposed of.
 */
function tarFor(tar: string, dir: string, userns?: number): Disposable & { command: Deno.Command } {
  if (userns === undefined) return { command: tarCommand(tar, dir), [Symbol.dispose]: () => {} };
  const tmp = Deno.makeTempDirSync({ prefix: "criu-tar-" });
  const drop = () => Deno.removeSync(tmp, { recursive: true });
  try {
    Deno.chmodSync(tmp, 0o755);
    const copy = `${tmp}/tmpfs.tar.gz`;
    Deno.copyFileSync(tar, copy);
    Deno.chmodSync(copy, 0o644);
    return { command: tarCommand(copy, dir, userns), [Symbol.dispose]: drop };
  } catch (e) {
    drop();
    throw e;
  }
}

/** The tar of tmpfs mount `e` among the images in `dir` (by its device, else its id). */
function tmpfsTar(dir: ImagesDir, e: mnt_entry): string {
  const names = [`tmpfs-dev-${e.rootDev}.tar.gz.img`, `tmpfs-${e.mntId}.tar.gz.img`];
  const tar = names.map((n) => dir.file(n)).find(exists);
  if (!tar) throw new RestoreError(`Cannot restore ${mountName(e)}: image ${names[0]} is missing`);
  return tar;
}

function tarCommand(tar: string, dir: string, userns?: number): Deno.Command {
  const tarArgs = ["--extract", "--gzip", "--no-unquote", "--no-wildcards"];
  tarArgs.push("--directory", dir, "--file", tar);
  // nsenter makes itself the namespace's root (uid and gid 0) once in it.
  const [cmd, args] = userns === undefined
    ? ["tar", tarArgs]
    : ["nsenter", ["--user", `--target=${userns}`, "tar", ...tarArgs]];
  return new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" });
}

function tarDone(out: Deno.CommandOutput, what: string): void {
  if (!out.success) {
    throw new RestoreError(
      `Cannot restore the files of ${what}: tar failed: ${
        new TextDecoder().decode(out.stderr).trim().split("\n")[0]
      }`,
    );
  }
}

/** The mount namespaces of a restore: who holds each (by the id the tree knows it by). */
export interface MountNamespaces {
  /** The root's own namespace's id. */
  rootId: number;
  /** The tree's id of a task in each namespace made so far, by namespace id. */
  holders: Map<number, number>;
  /** The plans of the nested ones, by id. */
  plans: Map<number, NestedPlan>;
}

/** The plans of the mount namespaces nested in the root's own, checked before anything is made. */
export function checkNestedNamespaces(dump: DumpImages): Map<number, NestedPlan> {
  const out = new Map<number, NestedPlan>();
  for (const [id, entries] of dump.nestedMnts) {
    let plan: NestedPlan;
    try {
      plan = planNested(dump.mntNs!.entries, entries);
    } catch (e) {
      if (e instanceof MountPlanError) throw new RestoreError(`Cannot restore: ${e.message}`);
      throw e;
    }
    // The tar of each tmpfs it makes anew is there before anything is made.
    for (const s of plan.extra) if (s.how === "new" && hasTar(s.entry)) tmpfsTar(dump.dir, s.entry);
    out.set(id, plan);
  }
  return out;
}

/**
 * Puts task `task` (of `rs`, just made, in the mount namespace `now` its parent is in) into
 * its own: one made already (setns through a pidfd of a task in it), or a nested one made now
 * in it (see {@link makeNested}). `realRoot` is the root task as criu knows it.
 */
export function enterMountNamespace(
  rs: RemoteSyscalls,
  dump: DumpImages,
  task: TaskImages,
  now: number,
  ns: MountNamespaces,
  realRoot: number,
  log: Logger,
): string[] {
  const want = task.ids.mntNsId;
  if (want === now || (want !== ns.rootId && !ns.plans.has(want))) return [];
  const holder = ns.holders.get(want);
  const pid = task.pstree.pid;
  const sys = failing(rs, ` of task ${pid}`);
  const join = (holder: number) => {
    const fd = sys("its mount namespace (pidfd_open)", NR.pidfd_open, holder, 0);
    try {
      sys("its mount namespace (setns)", NR.setns, fd, 0x20000 /* CLONE_NEWNS */);
    } finally {
      rs.call(NR.close, fd);
    }
  };
  if (holder !== undefined) {
    join(holder);
    return [];
  }
  // A nested one is made from a copy of the root's (its plan is against the root's), whatever
  // namespace its parent is in.
  if (now !== ns.rootId) join(ns.holders.get(ns.rootId)!);
  // Read-only mounts later, as in the root's namespace, where the task's root is the
  // namespace's (it makes them so).
  const later = (dump.files.get(task.fs.rootId)?.reg?.name ?? "/") === "/";
  const ro = makeNested(
    rs,
    dump,
    ns.plans.get(want)!,
    dump.nestedMnts.get(want)!,
    realRoot,
    log,
    later,
  );
  ns.holders.set(want, pid);
  dump.fsRoots.set(want, `/proc/${rs.task.pid}/root`);
  return ro;
}

/**
 * Makes nested mount namespace `entries` in the task of `rs` as `plan` says: a copy of its
 * parent's (unshare), made a slave of it, the copies it no longer had unmounted, its own
 * mounts made, every mount's flags and propagation set (a peer of the parent's mounts joined
 * to their group again, through a descriptor of the parent's mount held from before), then
 * checked whole against the images (by place, root, file system, flags and sharing).
 */
function makeNested(
  rs: RemoteSyscalls,
  dump: DumpImages,
  plan: NestedPlan,
  entries: mnt_entry[],
  realRoot: number,
  log: Logger,
  readOnlyLater: boolean,
): string[] {
  const pid = rs.task.pid;
  const calls = mountCalls(rs);
  const { arena, sys, str } = calls;
  if (dump.userns) openToItsNamespace(calls);
  // An O_PATH descriptor of the mount at `path`, which must be mount `id`.
  const openMount = (path: string, id: number, what: string) => {
    arena.reset();
    const fd = Number(sys(what, NR.open, str(path), O.PATH | O.CLOEXEC, 0));
    if (mountIdOf(pid, fd) !== id) {
      rs.call(NR.close, fd);
      throw new RestoreError(`Cannot restore ${what}: another mount hides it`);
    }
    return fd;
  };
  // The parent's mounts its own join (peers across the namespaces), held from before it is
  // made: each the live mount at its place, with its root.
  const parentFds = new Map<mnt_entry, number>();
  // The parent's copies bound from, and detached copies taken early (below).
  const parentCopies = new Map<mnt_entry, number>();
  const early = new Map<MountStep, number>();
  try {
    const before = parseMountinfo(readProcText(pid, "mountinfo"));
    for (const p of plan.propagation) {
      if (p.how !== "joinParent" || parentFds.has(p.from)) continue;
      const what = `${mountName(p.from)} (joined from a nested mount namespace)`;
      const l = before.filter((m) => m.mountpoint === p.from.mountpoint && m.root === p.from.root)
        .at(-1);
      if (!l) throw new RestoreError(`Cannot restore ${what}: another mount hides it`);
      parentFds.set(p.from, openMount(p.from.mountpoint, l.id, what));
    }
    arena.reset();
    sys("a nested mount namespace (unshare)", NR.unshare, 0x20000);
    sys(
      "a nested mount namespace (rslave)",
      NR.mount,
      str("none"),
      str("/"),
      0,
      MS.REC | MS.SLAVE,
      0,
    );
    // The copies as they are now, matched to the entries they stand for.
    const live = parseMountinfo(readProcText(pid, "mountinfo"));
    const liveOf = new Map<mnt_entry, MountInfo>();
    const taken = new Set<MountInfo>();
    // A copy of an external mount shows what the restore was given: its root may differ.
    const external = new Set(
      [...plan.copies].filter(([, orig]) => orig.extKey).map(([e]) => e.mountpoint),
    );
    const match = (e: mnt_entry, parentLive: MountInfo | undefined) =>
      live.find((l) =>
        !taken.has(l) && l.mountpoint === e.mountpoint &&
        (l.root === e.root || external.has(e.mountpoint)) &&
        (parentLive ? l.parentId === parentLive.id : !live.some((p) => p.id === l.parentId))
      );
    const byId = new Map(entries.map((e) => [e.mntId, e]));
    for (const e of plan.copies.keys()) {
      const l = match(e, liveOf.get(byId.get(e.parentMntId)!));
      if (!l) throw new RestoreError(`Cannot restore ${mountName(e)}: its copy is not there`);
      liveOf.set(e, l);
      taken.add(l);
    }
    const parentLive = new Map<number, MountInfo>();
    for (const [e, orig] of plan.copies) parentLive.set(orig.mntId, liveOf.get(e)!);
    // The copies of the parent's mounts its own are bound from (a pivoted root's, or one it
    // unmounted since): held from now, before any goes or a mount made hides one.
    const own = new Set(entries);
    for (const step of plan.extra) {
      if (step.how !== "bind" || own.has(step.from) || parentCopies.has(step.from)) continue;
      const from = step.from;
      const l = live.filter((x) => x.mountpoint === from.mountpoint && x.root === from.root)
        .at(-1);
      const what = `${mountName(from)} (bound into a nested mount namespace)`;
      if (!l) throw new RestoreError(`Cannot restore ${what}: its copy is not there`);
      parentCopies.set(from, openMount(from.mountpoint, l.id, what));
    }
    // A bind's root removed since, made again below `from` for the time of the bind, as
    // mount `at` is (a directory or a file).
    const removedRoot = (s: Extract<MountStep, { how: "bind" }>, from: number, at: string) =>
      s.entry.deleted
        ? madeForBind(
          `/proc/${pid}/fd/${from}/${s.sub.replace(/^\/+/, "")}`,
          `/proc/${pid}/root${at}`,
          mountName(s.entry),
          dump.userns,
        )
        : undefined;
    // Those of one that goes before its own are made: taken (detached copies) now.
    const gone = new Set(plan.umount);
    for (const step of plan.extra) {
      if (step.how !== "bind" || !gone.has(step.from)) continue;
      const from = parentCopies.get(step.from)!;
      using _gone = removedRoot(step, from, step.entry.mountpoint);
      early.set(step, detachedCopy(calls, from, step.sub, mountName(step.entry)));
    }
    for (const m of plan.umount) {
      const l = live.find((x) =>
        !taken.has(x) && x.mountpoint === m.mountpoint && x.root === m.root &&
        x.parentId === parentLive.get(m.parentMntId)?.id
      );
      if (!l) continue;
      taken.add(l);
      const what = `${mountName(m)} (a copy a nested mount namespace had not)`;
      const fd = openMount(m.mountpoint, l.id, what);
      rs.call(NR.close, fd);
      arena.reset();
      sys(what, NR.umount2, str(m.mountpoint), MNT_DETACH);
    }
    const later = new Set(readOnlyLater ? readOnlyAtTheirPlace(entries) : []);
    const fds = new Map<mnt_entry, number>();
    try {
      for (const [e, l] of liveOf) fds.set(e, openMount(e.mountpoint, l.id, mountName(e)));
      // A pivoted root is made at a place of the copy, and the rest on it there, then made the
      // root.
      const place = plan.pivot && pivotPlace(pid, dump.mntNs!.entries);
      for (const s of plan.extra) {
        const e = s.entry, what = mountName(e);
        const at = place ? `${place}${e.mountpoint === "/" ? "" : e.mountpoint}` : e.mountpoint;
        arena.reset();
        const tree = early.get(s);
        if (tree !== undefined) attach(calls, tree, at, what);
        else if (s.how === "bind") {
          const from = fds.get(s.from) ?? parentCopies.get(s.from)!;
          using _gone = removedRoot(s, from, at);
          bindFrom(calls, from, s.sub, at, what);
        }
        const tar = s.how === "new" && hasTar(e) ? tmpfsTar(dump.dir, e) : undefined;
        if (s.how === "new") mountAnew(calls, e, s.fs, at, tar !== undefined, what);
        arena.reset();
        const fd = Number(sys(what, NR.open, str(at), O.PATH | O.CLOEXEC, 0));
        fds.set(e, fd);
        if (tar) {
          extractTarSync(tar, `/proc/${pid}/fd/${fd}`, what, dump.userns ? pid : undefined);
          readOnlyOnceFilled(calls, e, fd, what);
        }
      }
      if (plan.pivot) {
        // Made the root: the copies go with the old one.
        const what = mountName(plan.pivot);
        arena.reset();
        const dot = str(".");
        sys(`${what} as the root`, NR.fchdir, fds.get(plan.pivot)!);
        sys(`${what} as the root (pivot_root)`, NR.pivot_root, dot, dot);
        sys(`${what} as the root (the copies let go)`, NR.umount2, dot, MNT_DETACH);
        arena.reset();
        sys(`${what} as the root`, NR.chdir, str("/"));
      }
      setMountFlags(calls, entries, fds, later);
      setPropagation(calls, plan.propagation, fds, undefined, parentFds);
    } finally {
      for (const fd of fds.values()) rs.call(NR.close, fd);
    }
    checkNested(dump, entries, realRoot, pid, external, later);
    log.info(`Nested mount namespace made in task ${pid}: ${entries.length} mounts`);
    return [...later].map((e) => e.mountpoint);
  } finally {
    for (const fd of [...parentFds.values(), ...parentCopies.values(), ...early.values()]) {
      rs.call(NR.close, fd);
    }
  }
}

/**
 * Where a nested namespace's own root is made before it becomes the root: a directory of the
 * copy of its parent `parent` (task `pid`'s), a mount point of it first (any will do: the
 * copy goes whole with pivot_root).
 */
function pivotPlace(pid: number, parent: readonly mnt_entry[]): string {
  const candidates = [
    ...parent.map((e) => e.mountpoint).filter((m) => m !== "/"),
    "/tmp",
    "/mnt",
    "/dev",
    "/proc",
    "/run",
    "/var",
    "/etc",
  ];
  for (const dir of candidates) {
    try {
      if (Deno.statSync(`/proc/${pid}/root${dir}`).isDirectory) return dir;
    } catch {
      // not there
    }
  }
  throw new RestoreError(
    `Cannot restore a nested mount namespace's root: its parent's has no directory to make ` +
      `it on`,
  );
}

/**
 * Compares nested namespace `entries` as made (task `pid`'s) with the images, each mount by
 * place, root, file system, own flags and sharing (peer groups named by their first member's
 * place, in the root's namespace or this one; copies of `external` mounts by place): a
 * namespace not made exactly fails the restore.
 */
function checkNested(
  dump: DumpImages,
  entries: mnt_entry[],
  realRoot: number,
  pid: number,
  external: Set<string>,
  readOnlyLater: ReadonlySet<mnt_entry>,
): void {
  const rootLive = parseMountinfo(readProcText(realRoot, "mountinfo"));
  const live = parseMountinfo(readProcText(pid, "mountinfo"));
  const namer = (outer: { sharedId: number; mountpoint: string }[], inner: typeof outer) => {
    const names = new Map<number, string>();
    for (const [tag, list] of [["N", inner], ["R", outer]] as const) {
      for (const m of [...list].sort((a, b) => a.mountpoint.localeCompare(b.mountpoint))) {
        if (m.sharedId && !names.has(m.sharedId)) names.set(m.sharedId, `${tag}${m.mountpoint}`);
      }
    }
    return (id: number) => (id ? names.get(id) ?? `?${id}` : "-");
  };
  const imageName = namer(dump.mntNs!.entries, entries);
  const liveName = namer(rootLive, live);
  const fsOf = (e: mnt_entry) => e.fstype === fstype.AUTO ? fstypeOf(e.fsname ?? "") : e.fstype;
  // What an external mount shows, and its file system, are what the restore was given.
  const what = (mp: string, root: string, fs: number) =>
    external.has(mp) ? `${mp} * *` : `${mp} ${root} ${fs}`;
  const want = entries.map((e) =>
    `${what(e.mountpoint, e.root, fsOf(e))} ${
      e.flags & MOUNT_FLAGS & ~(readOnlyLater.has(e) ? MS.RDONLY : 0)
    } ` +
    `${imageName(e.sharedId)} ${imageName(e.masterId)}`
  ).sort();
  const got = live.map((l) =>
    `${what(l.mountpoint, l.root, fstypeOf(l.type))} ${l.flags & MOUNT_FLAGS} ` +
    `${liveName(l.sharedId)} ${liveName(l.masterId)}`
  ).sort();
  const missing = want.filter((w) => !got.includes(w));
  const extra = got.filter((g) => !want.includes(g));
  if (missing.length || extra.length) {
    throw new RestoreError(
      `Cannot restore a nested mount namespace exactly: ${
        missing.length ? `missing ${missing[0]}` : `unexpected ${extra[0]}`
      }`,
    );
  }
}

/**
 * Checks the proc mounts of nested PID namespaces (`dump.lateProcs`) before anything is made:
 * each mounted by its namespace's init (a task of the images, 1 in a namespace nested in the
 * tree's, in that mount namespace) on a mount of that namespace.
 */
export function checkLateProcs(dump: DumpImages): void {
  for (const { nsId, entry } of dump.lateProcs) {
    const what = `${mountName(entry)} (the proc of a nested PID namespace)`;
    const init = dump.tasks.find((t) => t.pstree.pid === entry.pidnsInit);
    const entries = nsId === dump.mntNs?.id ? dump.mntNs.entries : dump.nestedMnts.get(nsId);
    if (
      !init || init.zombie || init.pstree.nsPid.at(-1) !== 1 || init.ids.mntNsId !== nsId ||
      entry.fstype !== fstype.PROC || !entries?.some((e) => e.mntId === entry.parentMntId)
    ) {
      throw new RestoreError(
        `Cannot restore ${what}: its init ${entry.pidnsInit} is not a nested PID namespace's ` +
          `in its mount namespace, or it is not on a mount of it`,
      );
    }
  }
}

/**
 * Mounts the proc of task `task`'s PID namespace where the images have one (see
 * {@link checkLateProcs}), from inside it (`rs`: the task is that namespace's init, just
 * made, in its mount namespace): a proc shows the PID namespace of its maker. Then checked: on
 * the mount that was at its place, its flags, options and no sharing, and its task 1 the init.
 */
export function mountLateProcs(
  rs: RemoteSyscalls,
  dump: DumpImages,
  task: TaskImages,
  log: Logger,
): void {
  const pid = rs.task.pid;
  for (const { nsId, entry: e } of dump.lateProcs) {
    if (e.pidnsInit !== task.pstree.pid || nsId !== task.ids.mntNsId) continue;
    const what = `${mountName(e)} (the proc of a nested PID namespace)`;
    const calls = mountCalls(rs);
    const { arena, sys, str } = calls;
    const entries = nsId === dump.mntNs?.id ? dump.mntNs.entries : dump.nestedMnts.get(nsId)!;
    const parent = entries.find((p) => p.mntId === e.parentMntId)!;
    const open = () => {
      arena.reset();
      return Number(sys(what, NR.open, str(e.mountpoint), O.PATH | O.CLOEXEC, 0));
    };
    let fd = open();
    const below = mountIdOf(pid, fd);
    rs.call(NR.close, fd);
    mountAnew(calls, e, "proc", e.mountpoint, false, what);
    fd = open();
    try {
      const live = parseMountinfo(readProcText(pid, "mountinfo"));
      const m = live.find((l) => l.id === mountIdOf(pid, fd));
      const under = live.find((l) => l.id === below);
      const init = Deno.readLinkSync(`/proc/${pid}/fd/${fd}/1/ns/pid`);
      const wrong = !m || !under
        ? "it is not there"
        : m.parentId !== below
        ? "it is not on the mount at its place"
        : under.mountpoint !== parent.mountpoint || under.root !== parent.root
        ? `the mount below it is not ${mountName(parent)}`
        : m.mountpoint !== e.mountpoint || m.type !== "proc" || m.root !== e.root
        ? `it is ${m.type} at ${m.mountpoint} (${m.root})`
        : (m.flags & MOUNT_FLAGS) !== (e.flags & MOUNT_FLAGS) || m.sbFlags !== e.sbFlags
        ? "its flags differ"
        : m.options !== e.options
        ? `its options are ${m.options}, not ${e.options}`
        : m.sharedId || m.masterId
        ? "it is shared or a slave"
        : init !== Deno.readLinkSync(`/proc/${pid}/ns/pid`)
        ? "it shows another PID namespace"
        : undefined;
      if (wrong) throw new RestoreError(`Cannot restore ${what} exactly: ${wrong}`);
    } finally {
      rs.call(NR.close, fd);
    }
    log.info(`Proc of the PID namespace of task ${task.pstree.pid} mounted at ${e.mountpoint}`);
  }
}
