/**
 * Open files: `collectFiles` reads a task's descriptors, `dumpFiles` writes files.img entries,
 * fdinfo-N.img and pipes-data.img.
 *
 * Supported now: regular files and directories, character devices other than terminals (by
 * path, as criu does for /dev/null), and pipes with the data in flight. Everything else is
 * refused with the descriptor, its type and what to do.
 *
 * @module
 */
import { asRootOf, type UserNamespace } from "../tree/userns.ts";
import { create } from "../images/protobuf.ts";
import { fstype } from "../../proto/gen/misc_pb.ts";
import { dirname } from "../util/path.ts";
import {
  fd_types,
  fdinfo_entrySchema,
  fifo_entrySchema,
  file_entrySchema,
  type fown_entry,
  memfd_file_entrySchema,
  memfd_inode_entrySchema,
  netlink_sk_entrySchema,
  ns_file_entrySchema,
  packet_mclistSchema,
  packet_ringSchema,
  packet_sock_entrySchema,
  pidfd_entrySchema,
  pipe_entrySchema,
  type reg_file_entry,
  reg_file_entrySchema,
  tty_file_entrySchema,
} from "../../proto/gen/files_pb.ts";
import {
  close,
  Errno,
  errno,
  getFileOwner,
  KCMP,
  kcmp,
  kcmpEpollTarget,
  linkAt,
  O,
  open,
  pidfdGetfd,
  pidfdOpen,
  readLinkAt,
  relatedNamespace,
  withTaskFd,
} from "../syscalls/mod.ts";
import { listFds, nsLink, parseFdinfo, readProcText } from "../tree/proc.ts";
import { collectUnixSocket, UnixSocketError } from "../net/unix.ts";
import { collectInetSocket, InetSocketError } from "../net/inet.ts";
import { type UnixSocketInfo, unixSockets } from "../net/unix_diag.ts";
import { netnsOfSocket, withSocketsIn } from "../net/ns_sockets.ts";
import { collectNetlinkSocket, NetlinkSocketError } from "../net/netlink.ts";
import { collectPacketSocket, PacketSocketError } from "../net/packet.ts";
import { inetShutdowns } from "../net/inet_diag.ts";
import {
  type DumpContext,
  type NestedNet,
  NS_CLONE_FLAGS,
  NS_KINDS,
  OWN_NS_KINDS,
} from "./context.ts";
import { anonEntry, anonKind } from "./anon_files.ts";
import { ioUringEntry, ioUringKind } from "./io_uring.ts";
import {
  ANON_KINDS,
  DEFAULT_GHOST_LIMIT,
  type EpollTarget,
  type Fd,
  type FileKind,
  noOwner,
  type OpenFile,
  ownerEntry,
  skOptsEntry,
  type TaskFiles,
  UnsupportedError,
} from "./file_types.ts";
import {
  ghostOf,
  readDataSegments,
  writeDeadProcRemap,
  writeGhost,
  writeLinkRemap,
  writeRemaps,
} from "./ghost.ts";
import { collectLocks, writeLocks } from "./locks.ts";
import { peekPipe, writePipeData } from "./pipes.ts";
import { isTracker } from "./track.ts";
import { registerMemfd } from "./memfd.ts";
import { collectTty, ttyKind } from "./tty.ts";
import { checkUnixSockets, queuedClients, unixEntry, writeSkQueues } from "./unix_files.ts";
import { inetEntry } from "./inet_files.ts";
import { TUN_RDEV, tunKind, writeTunFile } from "./tun_files.ts";
import { tcpStreamImageName, writeTcpStream } from "../images/tcp_stream.ts";
import { parseMountinfo } from "../util/mountinfo.ts";
import { stateName, TCP_STATE } from "../net/tcp_state.ts";
import { endpointText, wireAddr } from "../net/addr.ts";
import { IPPROTO } from "../syscalls/socket.ts";
import { within } from "../restore/mount_plan.ts";

export {
  type Fd,
  type FileKind,
  type Ghost,
  type OpenFile,
  type PipeData,
  type TaskFiles,
  type TtyInfo,
  UnsupportedError,
} from "./file_types.ts";

/**
 * A namespace descriptor (nsfs inode `ino`): one of criu's own namespaces, which are the
 * restored tree's too, one of the root's own, or a network namespace nested in the tree's;
 * any other is refused.
 */
function nsKind(ctx: DumpContext, ino: number, what: string): FileKind {
  // One the tree's root has of its own: made again at restore (the new root's).
  for (const kind of OWN_NS_KINDS) {
    const link = `${kind}:[${ino}]`;
    if (nsLink(ctx.opts.pid, kind) !== link) continue;
    return { type: "ns", kind, nsId: ctx.nsId(link), cflag: NS_CLONE_FLAGS[kind] };
  }
  // A network namespace nested in the tree's (systemd keeps a service's in flight in a socket).
  for (const n of ctx.nestedNets.values()) {
    const link = `net:[${ino}]`;
    if (nsLink(n.pid, "net") === link) {
      return { type: "ns", kind: "net", nsId: n.id, cflag: NS_CLONE_FLAGS.net };
    }
  }
  for (const kind of NS_KINDS) {
    let own = "";
    try {
      own = Deno.readLinkSync(`/proc/self/ns/${kind}`);
    } catch {
      continue; // a kernel without that kind
    }
    if (own === `${kind}:[${ino}]`) {
      return { type: "ns", kind, nsId: ctx.nsId(own), cflag: NS_CLONE_FLAGS[kind] };
    }
  }
  throw new UnsupportedError(
    `Cannot dump ${what}: a namespace other than criu's; namespaces are not supported yet`,
  );
}

/**
 * The network namespace socket `fd` of task `pid` belongs to, when it is one nested in the
 * tree's (undefined: the root's); a socket of a namespace outside the tree is refused.
 */
function socketNamespace(
  ctx: DumpContext,
  pid: number,
  fd: number,
  what: string,
): NestedNet | undefined {
  if (!ctx.nestedNets.size) return undefined;
  const link = netnsOfSocket(pid, fd);
  if (link === nsLink(ctx.opts.pid, "net")) return undefined;
  const net = ctx.nestedNets.get(link);
  if (net) return net;
  throw new UnsupportedError(
    `Cannot dump ${what}: a socket of a network namespace none of the tree's tasks is in`,
  );
}

/**
 * What sock_diag query `read` finds by inode in each of the tree's network namespaces, in one
 * map (socket inodes are the system's).
 */
function inEveryNet<T>(ctx: DumpContext, read: () => Map<number, T>): Map<number, T> {
  const all = read();
  for (const n of ctx.nestedNets.values()) {
    for (const [ino, v] of withSocketsIn(n.sockets, read)) all.set(ino, v);
  }
  return all;
}

/** Every unix socket of the tree's network namespaces, by inode, read on first need. */
function treeUnixSockets(ctx: DumpContext): Map<number, UnixSocketInfo> {
  return ctx.unixSockets ??= inEveryNet(ctx, unixSockets);
}

/** The shutdown bits of the inet sockets of the tree's network namespaces, by inode. */
function treeInetShutdowns(ctx: DumpContext): Map<number, number> {
  return ctx.inetShutdowns ??= inEveryNet(ctx, inetShutdowns);
}

/** Describes socket `fd` of task `pid` (inode `ino`), of nested network namespace `net`. */
function describeSocket(
  ctx: DumpContext,
  pid: number,
  fd: number,
  ino: number,
  what: string,
  net?: NestedNet,
): FileKind {
  const info = treeUnixSockets(ctx).get(ino);
  const netNsId = net?.id;
  if (!info) {
    let inet;
    try {
      // A nested namespace's connections are held behind the lock of their whole namespace.
      const policy = { ...ctx.tcpPolicy(), lockedWhole: net !== undefined };
      inet = collectInetSocket(pid, fd, ino, policy, treeInetShutdowns(ctx).get(ino));
    } catch (e) {
      if (e instanceof InetSocketError) throw new UnsupportedError(e.message);
      throw e;
    }
    if (inet?.inFlight) {
      ctx.log.warn(
        `${what}: ${inet.inFlight} connection(s) waiting to be accepted are dropped ` +
          `(--skip-in-flight)`,
      );
    }
    if (inet?.queued) {
      ctx.log.warn(
        `${what}: datagrams waiting in this socket are not carried over (as with criu)`,
      );
    }
    if (inet) return { type: "inet", ino, socket: inet, netNsId };
    let netlink;
    try {
      netlink = collectNetlinkSocket(pid, fd, what);
    } catch (e) {
      if (e instanceof NetlinkSocketError) throw new UnsupportedError(e.message);
      throw e;
    }
    if (netlink) return { type: "netlink", ino, socket: netlink, netNsId };
    let packet;
    try {
      packet = collectPacketSocket(pid, fd, ino, what);
    } catch (e) {
      if (e instanceof PacketSocketError) throw new UnsupportedError(e.message);
      throw e;
    }
    if (packet) {
      if (packet.queued) {
        ctx.log.warn(`${what}: packets waiting in this packet socket are dropped`);
      }
      return { type: "packet", ino, socket: packet, netNsId };
    }
    throw new UnsupportedError(
      `Cannot dump ${what}: only unix, inet, netlink and packet sockets are supported yet`,
    );
  }
  try {
    // Its name is a path of the tree's mount namespace, seen through its root (the root
    // task's for one in flight here).
    const root = ctx.mntNs ? `/proc/${pid === Deno.pid ? ctx.mntNs.pid : pid}/root` : "";
    return { type: "unix", ino, socket: collectUnixSocket(pid, fd, info, root), netNsId };
  } catch (e) {
    if (e instanceof UnixSocketError) throw new UnsupportedError(e.message);
    throw e;
  }
}

/** Describes what `/proc/PID/fd/N` is, refusing what we cannot dump. */
function describe(ctx: DumpContext, pid: number, fd: number, mntId: number): FileKind {
  const link = `/proc/${pid}/fd/${fd}`;
  const target = Deno.readLinkSync(link);
  const what = `fd ${fd} of task ${pid} (${target})`;
  if (target.startsWith("pipe:[")) return { type: "pipe", ino: Number(target.slice(6, -1)) };
  if (target.startsWith("socket:[")) {
    const ino = Number(target.slice(8, -1));
    const net = socketNamespace(ctx, pid, fd, what);
    return net
      ? withSocketsIn(net.sockets, () => describeSocket(ctx, pid, fd, ino, what, net))
      : describeSocket(ctx, pid, fd, ino, what);
  }
  const ns = /^(\w+):\[(\d+)\]$/.exec(target);
  if (ns && ns[1] in NS_CLONE_FLAGS) return nsKind(ctx, Number(ns[2]), what);
  if (target.startsWith("anon_inode:")) {
    const name = target.slice(11).replace(/^\[|\]$/g, "");
    if (ANON_KINDS.has(name)) {
      // An inotify watch's file may be found in the tree's other mount namespaces too.
      const mine = name === "inotify" ? nsLink(pid, "mnt") : undefined;
      const elsewhere = mine === undefined ? [] : [ctx.mntNs, ...ctx.nestedMnts.values()]
        .filter((n) => n && nsLink(n.pid, "mnt") !== mine).map((n) => n!.pid);
      return anonKind(name, pid, fd, elsewhere);
    }
    if (name === "pidfd") return pidfdKind(ctx, pid, fd, link, what);
    if (name === "io_uring") return ioUringKind(ctx, pid, fd, what);
    throw new UnsupportedError(
      `Cannot dump ${what}: ${target.slice(11)} descriptors are not supported yet`,
    );
  }
  if (target.startsWith("/memfd:") && target.endsWith(" (deleted)")) {
    const ino = registerMemfd(ctx, link, target, what);
    return { type: "memfd", ino };
  }
  if (target.endsWith(" (deleted)") && target.startsWith("/")) {
    const st = Deno.statSync(link);
    const tty = ttyKind(pid, fd, target, st, what, ctx.opts.external);
    if (tty) return tty;
    const path = target.slice(0, -10);
    // /proc/N of a task that is gone, itself (its files do not read as deleted).
    const deadPid = goneProcPid(ctx, pid, path, st);
    if (deadPid !== undefined) return { type: "reg", path, mode: st.mode ?? 0, deadPid };
    if (!st.isFile) return deletedSpecial(pid, fd, link, path, st, what);
    return deletedRegular(ctx, link, path, st, what);
  }
  if (!target.startsWith("/")) {
    throw new UnsupportedError(`Cannot dump ${what}: unsupported file type`);
  }
  // criu's /proc names the tree's tasks by their real ids, which a new PID namespace changes;
  // a proc of the tree's own mount namespace names them by its ids, and is made again in it.
  const ownProc = ctx.allMounts().some((e) => e.mntId === mntId && e.fstype === fstype.PROC);
  if (ctx.pids.own && !ownProc && /^\/proc\/\d+(\/|$)/.test(target)) {
    throw new UnsupportedError(
      `Cannot dump ${what}: a /proc file by PID, of a tree in a PID namespace of its own ` +
        `(its /proc is criu's); not supported yet`,
    );
  }
  const st = Deno.statSync(link);
  // A namespace bound at a path (ip netns) names the path, not the namespace.
  ctx.nsfsDev ??= Deno.statSync("/proc/self/ns/net").dev;
  if (st.dev === ctx.nsfsDev) return nsKind(ctx, st.ino ?? 0, what);
  if (st.isFifo) return { type: "fifo", ino: st.ino ?? 0, path: target };
  if (st.isSocket) {
    throw new UnsupportedError(`Cannot dump ${what}: unix sockets are not supported yet`);
  }
  if (st.isBlockDevice) {
    throw new UnsupportedError(`Cannot dump ${what}: block devices are not supported`);
  }
  const tty = ttyKind(pid, fd, target, st, what, ctx.opts.external);
  if (tty) return tty;
  if (st.isCharDevice && st.rdev === TUN_RDEV) {
    return tunKind(pid, fd, target, st.mode ?? 0, what);
  }
  // A file of a mount criu does not see (passed from another mount namespace): its path here
  // names something else. `--external file[MNT_ID:INODE]` dumps it as one the restore is given.
  const key = `file[${mntId.toString(16)}:${(st.ino ?? 0).toString(16)}]`;
  if (ctx.opts.external?.includes(key)) {
    return { type: "reg", path: key, mode: st.mode ?? 0, ext: true };
  }
  // The tree's mounts: criu's, or those of its own mount namespace.
  ctx.ownMounts ??= new Set(
    (ctx.mntNs ? ctx.allMounts().map((e) => e.mntId) : undefined) ??
      Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter(Boolean).map((l) =>
        Number(l.split(" ")[0])
      ),
  );
  if (mntId >= 0 && !ctx.ownMounts.has(mntId)) {
    throw new UnsupportedError(
      `Cannot dump ${what}: it is on mount ${mntId}, which ${
        ctx.mntNs ? "the tree's" : "criu's"
      } mount namespace does not have; dump it as external with --external ${key}`,
    );
  }
  // The proc of a nested PID namespace is mounted again late, after the files are open.
  if (ctx.mntNs && ctx.allMounts().some((e) => e.mntId === mntId && e.pidnsInit)) {
    throw new UnsupportedError(
      `Cannot dump ${what}: it is on the proc of a PID namespace nested in the tree's ` +
        `(mount ${mntId}), which is not supported yet`,
    );
  }
  const deadPid = goneProcPid(ctx, pid, target, st);
  if (deadPid !== undefined) return { type: "reg", path: target, mode: st.mode ?? 0, deadPid };
  const shown = hiddenBy(ctx, target, mntId);
  if (shown !== undefined) {
    throw new UnsupportedError(
      `Cannot dump ${what}: it is on mount ${mntId}, which mount ${shown} hides at ${target} ` +
        `(opened again by its name it would be another mount's); not supported`,
    );
  }
  return { type: "reg", path: target, size: BigInt(st.size), mode: st.mode ?? 0 };
}

/**
 * The mount path `target` reaches instead of mount `mntId`, which the file is on, when another
 * mount hides it there (stacked on it or on a place above it). The path is taken in the mount
 * namespace that has that mount, where the restore opens it again.
 */
function hiddenBy(ctx: DumpContext, target: string, mntId: number): number | undefined {
  ctx.mountHiders ??= new Map();
  let suspect = ctx.mountHiders.get(mntId);
  if (suspect === undefined) ctx.mountHiders.set(mntId, suspect = mayBeHidden(ctx, mntId));
  if (!suspect) return undefined;
  const now = mntIdOf(ctx.hostPath(target, suspect.pid));
  return now !== undefined && now !== mntId ? now : undefined;
}

/**
 * Whether another mount may hide mount `mntId` (one at its place or above it, not one of
 * those it is mounted on): then where its paths are taken (a task of its namespace), else null.
 */
function mayBeHidden(ctx: DumpContext, mntId: number): { pid?: number } | null {
  const ns = ctx.mntNs &&
    [ctx.mntNs, ...ctx.nestedMnts.values()].find((n) => n.entries.some((e) => e.mntId === mntId));
  if (ctx.mntNs && !ns) return null;
  const places = ns
    ? ns.entries.map((e) => ({ id: e.mntId, parent: e.parentMntId, mountpoint: e.mountpoint }))
    : parseMountinfo(Deno.readTextFileSync("/proc/self/mountinfo")).map((m) => ({
      id: m.id,
      parent: m.parentId,
      mountpoint: m.mountpoint,
    }));
  const byId = new Map(places.map((m) => [m.id, m]));
  const mount = byId.get(mntId);
  if (!mount) return null;
  const above = new Set<number>();
  for (let m = byId.get(mount.parent); m && !above.has(m.id); m = byId.get(m.parent)) {
    above.add(m.id);
  }
  const suspect = places.some((o) =>
    o.id !== mntId && !above.has(o.id) && within(mount.mountpoint, o.mountpoint)
  );
  return suspect ? { pid: ns?.pid } : null;
}

/**
 * The PID of a task that is gone, when the file open as `st` is under /proc/PID of the tree's
 * /proc (`target`, as task `pid` sees it) and that path now names nothing, or another task's.
 */
function goneProcPid(
  ctx: DumpContext,
  pid: number,
  target: string,
  st: Deno.FileInfo,
): number | undefined {
  const m = /^\/proc\/(\d+)(\/|$)/.exec(target);
  if (!m) return undefined;
  const proc = ctx.hostPath("/proc", pid);
  if (st.dev !== Deno.statSync(proc).dev) return undefined;
  try {
    const now = Deno.lstatSync(ctx.hostPath(target, pid));
    if (now.ino === st.ino) return undefined;
  } catch {
    // gone
  }
  return Number(m[1]);
}

/** Reads every descriptor of task `pid` (frozen), deduplicating shared descriptions. */
export function collectFiles(ctx: DumpContext, pid: number): TaskFiles {
  const fds: Fd[] = [];
  const pidfd = pidfdOpen(pid);
  try {
    collectEach(ctx, pid, pidfd, fds);
  } finally {
    close(pidfd);
  }
  return checkEpollTargets(ctx, pid, fds);
}

/** Who gets the I/O signals of the description behind fd `fd` of task `pid`. */
function readOwner(ctx: DumpContext, pidfd: number, pid: number, fd: number): fown_entry {
  const dup = pidfdGetfd(pidfd, fd, pid);
  let owner;
  try {
    owner = getFileOwner(dup);
  } finally {
    close(dup);
  }
  // As the tree sees it: a thread or process (F_OWNER_TID, F_OWNER_PID), or a group.
  const F_OWNER_PGRP = 2;
  const what = `the owner of fd ${fd} of task ${pid}`;
  if (owner.pid > 0) {
    owner.pid = owner.type === F_OWNER_PGRP
      ? ctx.virtGroup(owner.pid, what)
      : ctx.pids.virt(owner.pid, what);
  }
  // Its uids as the tree sees them (F_GETOWNER_UIDS answers in criu's namespace); without an
  // owner there are none.
  if (owner.pid) {
    owner.uid = ctx.uid(owner.uid, what);
    owner.euid = ctx.uid(owner.euid, what);
  }
  return ownerEntry(owner);
}

function collectEach(ctx: DumpContext, pid: number, pidfd: number, fds: Fd[]): void {
  for (const fd of listFds(pid)) {
    // criu's own tracking of the task's memory (an earlier pre-dump's) is not the task's.
    if (isTracker(pid, fd)) continue;
    const { file, cloexec } = collectOne(ctx, pid, pidfd, fd);
    fds.push({ fd, file, cloexec });
  }
}

/**
 * Descriptors in flight in a unix socket's queue (SCM_RIGHTS), copies of which the peek put
 * here: their files, as those of a task (one entry per open file description across the tree),
 * written with the others. The copies stay open until the dump ends (they name the files).
 */
function collectInFlight(ctx: DumpContext, pid: number, kind: FileKind, what: string): void {
  if (kind.type !== "unix" || !kind.socket.queue.some((m) => m.fds?.length)) return;
  // A socket's queue is walked once: a unix socket in flight met again (in its own queue, or
  // its peer's: a loop) is one already collected, whose copies here only go.
  if (ctx.walkedQueues.has(kind.ino)) {
    for (const m of kind.socket.queue) ctx.inFlightFds.push(...(m.fds ?? []));
    return;
  }
  ctx.walkedQueues.add(kind.ino);
  const self = pidfdOpen(Deno.pid);
  try {
    for (const m of kind.socket.queue) {
      if (!m.fds?.length) continue;
      m.ids = m.fds.map((local: number) => {
        ctx.inFlightFds.push(local);
        const { file } = collectOne(ctx, Deno.pid, self, local);
        // A pidfd of the tree is made inside a task, late: not for a message in flight. An
        // epoll set's targets are found in the task that holds the socket
        // (checkEpollTargets), and added there at restore.
        if (file.kind.type === "eventpoll" && !ctx.inFlightEpolls.some((e) => e.file === file)) {
          ctx.inFlightEpolls.push({ file, local, pid, carrier: what });
        }
        if (file.kind.type === "pidfd" && file.kind.pid > 0) {
          throw new UnsupportedError(
            `Cannot dump ${what}: a pidfd of a live task is in flight in its queue; not ` +
              `supported yet`,
          );
        }
        if (!ctx.inFlight.includes(file)) ctx.inFlight.push(file);
        return file.id;
      });
    }
  } finally {
    close(self);
  }
}

/** One descriptor of task `pid`: its open file (shared with its twins across the tree). */
function collectOne(
  ctx: DumpContext,
  pid: number,
  pidfd: number,
  fd: number,
): { file: OpenFile; cloexec: boolean } {
  {
    const fdinfo = readProcText(pid, `fdinfo/${fd}`);
    const info = parseFdinfo(fdinfo);
    const kind = describe(ctx, pid, fd, info.mntId);
    const cloexec = (info.flags & O.CLOEXEC) !== 0;
    const flags = info.flags & ~O.CLOEXEC;
    // Descriptors of one open file description (dup, inherited, passed) share one file entry,
    // within a task and across the tree.
    const twin = ctx.openFiles.find((o) =>
      sameObject(o.kind, kind) && kcmp(o.owner.pid, pid, KCMP.FILE, o.owner.fd, fd) === 0
    );
    let file = twin;
    if (!file) {
      file = {
        id: ctx.fileId(),
        owner: { pid, fd },
        kind,
        flags,
        pos: info.pos,
        mntId: info.mntId,
        // An O_PATH descriptor does no I/O: it has no owner (and fcntl says EBADF).
        fown: flags & O.PATH ? noOwner() : readOwner(ctx, pidfd, pid, fd),
      };
      ctx.openFiles.push(file);
    }
    collectLocks(ctx, pid, fd, file.id, fdinfo);
    collectInFlight(ctx, pid, kind, `fd ${fd} of task ${pid}`);
    if (kind.type === "pipe" && !ctx.pipes.has(kind.ino)) {
      ctx.pipes.set(kind.ino, peekPipe(pid, fd, kind.ino));
    }
    if (kind.type === "fifo" && !ctx.fifos.has(kind.ino)) {
      ctx.fifos.set(kind.ino, peekPipe(pid, fd, kind.ino));
    }
    if (kind.type === "tty") {
      collectTty(ctx, pid, fd, kind, `fd ${fd} of task ${pid} (${kind.path})`);
    }
    ctx.log.debug(`task ${pid} fd ${fd}: ${kind.type} id ${file.id} flags 0${flags.toString(8)}`);
    return { file, cloexec };
  }
}

/**
 * Finds, for every target of every epoll set of task `pid`, and of every epoll set in flight
 * in the queue of a unix socket it was the first to hold, a descriptor of the task holding it
 * (the restore adds the targets there).
 */
function checkEpollTargets(ctx: DumpContext, pid: number, fds: Fd[]): TaskFiles {
  for (const { fd, file } of fds) {
    if (file.kind.type !== "eventpoll") continue;
    findEpollTargets(pid, fds, file.kind.tfds, fd, pid, `fd ${fd} of task ${pid}`);
  }
  for (const e of ctx.inFlightEpolls.filter((x) => x.pid === pid && !x.checked)) {
    if (e.file.kind.type !== "eventpoll") continue;
    e.checked = true;
    const what = `an epoll set in flight in the queue of ${e.carrier}`;
    findEpollTargets(pid, fds, e.file.kind.tfds, e.local, Deno.pid, what);
  }
  return { fds };
}

/**
 * For each target of epoll set `efd` of task `epPid`, a descriptor of task `pid` holding it:
 * the one it was added under, or (closed since, or holding another file now) another one,
 * found with kcmp(KCMP_EPOLL_TFD). A target no descriptor holds is refused.
 */
function findEpollTargets(
  pid: number,
  fds: Fd[],
  tfds: EpollTarget[],
  efd: number,
  epPid: number,
  what: string,
): void {
  const seen = new Map<number, number>();
  for (const t of tfds) {
    const toff = seen.get(t.fd) ?? 0;
    seen.set(t.fd, toff + 1);
    const holds = (x: number) => kcmpEpollTarget(pid, x, efd, t.fd, toff, epPid);
    if (fds.some((f) => f.fd === t.fd) && holds(t.fd)) continue;
    const holder = fds.find((f) => !(epPid === pid && f.fd === efd) && holds(f.fd));
    if (!holder) {
      throw new UnsupportedError(
        `Cannot dump ${what}: epoll watches a file added as fd ${t.fd}, which task ${pid} ` +
          `holds under no descriptor now`,
      );
    }
    t.holder = holder.fd;
  }
}

function sameObject(a: FileKind, b: FileKind): boolean {
  if (ANON_KINDS.has(a.type)) return a.type === b.type;
  if (a.type === "unix" && b.type === "unix") return a.ino === b.ino;
  if (a.type === "inet" && b.type === "inet") return a.ino === b.ino;
  if (a.type === "netlink" && b.type === "netlink") return a.ino === b.ino;
  if (a.type === "packet" && b.type === "packet") return a.ino === b.ino;
  if (a.type === "pidfd" && b.type === "pidfd") return a.ino === b.ino;
  if (a.type === "pipe" && b.type === "pipe") return a.ino === b.ino;
  if (a.type === "fifo" && b.type === "fifo") return a.ino === b.ino;
  if (a.type === "memfd" && b.type === "memfd") return a.ino === b.ino;
  if (a.type === "reg" && b.type === "reg") return a.path === b.path;
  if (a.type === "tty" && b.type === "tty") return a.infoId === b.infoId;
  if (a.type === "ns" && b.type === "ns") return a.nsId === b.nsId;
  if (a.type === "io_uring" && b.type === "io_uring") return a.ring.ino === b.ring.ino;
  return false;
}

/** A reg_file_entry for a path (used for fds, mappings, cwd/root and the exe link). */
export function regFileEntry(
  id: number,
  path: string,
  opts: {
    flags: number;
    pos?: bigint;
    size?: bigint;
    mode?: number;
    mntId?: number;
    fown?: fown_entry;
    /** An external file (`--external file[...]`): the name is its key. */
    ext?: boolean;
  },
): reg_file_entry {
  return create(reg_file_entrySchema, {
    id,
    flags: opts.flags,
    pos: opts.pos ?? 0n,
    fown: opts.fown ?? noOwner(),
    name: path,
    size: opts.size,
    mode: opts.mode,
    ext: opts.ext || undefined,
    mntId: opts.mntId,
  });
}

/**
 * The mount id of what `/proc` link `link` names (a cwd, root, exe or mapping), read from the
 * fdinfo of an O_PATH descriptor of it; undefined when it cannot be opened.
 */
export function mntIdOf(link: string): number | undefined {
  let fd: number;
  try {
    fd = open(link, O.PATH | O.CLOEXEC);
  } catch {
    return undefined;
  }
  try {
    return parseFdinfo(Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`)).mntId;
  } finally {
    close(fd);
  }
}

/** Appends a REG file entry to files.img. */
export function writeRegFile(files: ReturnType<DumpContext["image"]>, reg: reg_file_entry): void {
  files.entry(file_entrySchema, create(file_entrySchema, { type: fd_types.REG, id: reg.id, reg }));
}

/**
 * Writes the task's descriptors: one file entry per open file description into `files`
 * (files.img), fdinfo-`filesId`.img, and the pipe data into pipes-data.img.
 */
export function dumpFiles(
  ctx: DumpContext,
  files: ReturnType<DumpContext["image"]>,
  filesId: number,
  tf: TaskFiles,
): void {
  const fdinfo = ctx.image(`fdinfo-${filesId}.img`, "FDINFO");
  for (const { fd, file, cloexec } of tf.fds) {
    writeFileEntry(ctx, files, file);
    fdinfo.entry(
      fdinfo_entrySchema,
      create(fdinfo_entrySchema, {
        id: file.id,
        flags: cloexec ? 1 : 0,
        type: FD_TYPE[file.kind.type],
        fd,
      }),
    );
  }
}

/** Writes the files.img entry (and the images it needs) of `file`, once per dump. */
export function writeFileEntry(
  ctx: DumpContext,
  files: ReturnType<DumpContext["image"]>,
  file: OpenFile,
): void {
  if (ctx.filesWritten.has(file.id)) return;
  ctx.filesWritten.add(file.id);
  if (file.kind.type === "inotify") {
    const { pid, fd } = file.owner;
    for (const w of file.kind.watches) {
      if (w.deleted) {
        ctx.deletedWatches.push({ what: `fd ${fd} of task ${pid} (inotify)`, ...w });
      }
    }
  }
  if (file.kind.type === "reg") {
    if (file.kind.ghost) writeGhost(ctx, file.id, file.kind.ghost);
    if (file.kind.deadPid !== undefined) writeDeadProcRemap(ctx, file.id, file.kind.deadPid);
    if (file.kind.linkRemap) writeLinkRemap(ctx, files, file.id, file.kind.linkRemap);
    writeRegFile(
      files,
      regFileEntry(file.id, file.kind.path, {
        flags: file.flags,
        pos: file.pos,
        size: file.kind.size,
        mode: file.kind.mode,
        ext: file.kind.ext,
        // Which mount namespace of the tree's the file is reached in (as criu writes it).
        mntId: ctx.mntNs ? file.mntId : undefined,
        fown: file.fown,
      }),
    );
  } else if (file.kind.type === "tun") {
    writeTunFile(ctx, files, file as OpenFile & { kind: { type: "tun" } });
  } else if (file.kind.type === "memfd") {
    files.entry(
      file_entrySchema,
      create(file_entrySchema, {
        type: fd_types.MEMFD,
        id: file.id,
        memfd: create(memfd_file_entrySchema, {
          id: file.id,
          flags: file.flags,
          pos: file.pos,
          fown: file.fown,
          inodeId: file.kind.ino,
        }),
      }),
    );
  } else if (file.kind.type === "fifo") {
    const regfId = ctx.fileId();
    if (file.kind.ghost) writeGhost(ctx, regfId, file.kind.ghost);
    writeRegFile(
      files,
      regFileEntry(regfId, file.kind.path, {
        flags: file.flags,
        mntId: ctx.mntNs ? file.mntId : undefined,
      }),
    );
    files.entry(
      file_entrySchema,
      create(file_entrySchema, {
        type: fd_types.FIFO,
        id: file.id,
        fifo: create(fifo_entrySchema, { id: file.id, pipeId: file.kind.ino, regfId }),
      }),
    );
  } else if (file.kind.type === "netlink") {
    const n = file.kind.socket;
    files.entry(
      file_entrySchema,
      create(file_entrySchema, {
        type: fd_types.NETLINKSK,
        id: file.id,
        nlsk: create(netlink_sk_entrySchema, {
          id: file.id,
          ino: file.kind.ino,
          protocol: n.protocol,
          state: n.dstPortid || n.dstGroup ? 1 : 0,
          flags: file.flags,
          portid: n.portid,
          groups: n.groups,
          dstPortid: n.dstPortid,
          dstGroup: n.dstGroup,
          fown: file.fown,
          opts: skOptsEntry(n.opts),
          nsId: file.kind.netNsId,
        }),
      }),
    );
  } else if (file.kind.type === "packet") {
    const k = file.kind.socket;
    files.entry(
      file_entrySchema,
      create(file_entrySchema, {
        type: fd_types.PACKETSK,
        id: file.id,
        psk: create(packet_sock_entrySchema, {
          id: file.id,
          type: k.type,
          protocol: k.protocol,
          flags: file.flags,
          ifindex: k.ifindex,
          fown: file.fown,
          opts: skOptsEntry(k.opts),
          version: k.version,
          reserve: k.reserve,
          auxData: k.auxData,
          origDev: k.origDev,
          vnetHdr: k.vnetHdr,
          loss: k.loss,
          timestamp: k.timestamp,
          copyThresh: k.copyThresh,
          mclist: k.mclist.map((m) =>
            create(packet_mclistSchema, { index: m.ifindex, type: m.type, addr: m.addr })
          ),
          fanout: k.fanout,
          rxRing: k.rxRing && ringEntry(k.rxRing),
          txRing: k.txRing && ringEntry(k.txRing),
          nsId: file.kind.netNsId ?? ctx.nsIds(Deno.pid).netNsId,
        }),
      }),
    );
  } else if (file.kind.type === "ns") {
    files.entry(
      file_entrySchema,
      create(file_entrySchema, {
        type: fd_types.NS,
        id: file.id,
        nsf: create(ns_file_entrySchema, {
          id: file.id,
          nsId: file.kind.nsId,
          nsCflag: file.kind.cflag,
          flags: file.flags,
        }),
      }),
    );
  } else if (file.kind.type === "pidfd") {
    files.entry(
      file_entrySchema,
      create(file_entrySchema, {
        type: fd_types.PIDFD,
        id: file.id,
        pidfd: create(pidfd_entrySchema, {
          id: file.id,
          ino: file.kind.ino,
          // As criu: the flags pidfd_open() takes (it refuses O_RDWR).
          flags: file.flags & ~O.RDWR,
          nspid: file.kind.pid > 0
            ? ctx.pids.virt(file.kind.pid, `the target of pidfd ${file.id}`)
            : file.kind.pid,
          fown: file.fown,
        }),
      }),
    );
  } else if (file.kind.type === "unix") {
    ctx.queuedClients ??= queuedClients(ctx.unixSockets ?? new Map());
    files.entry(file_entrySchema, unixEntry(ctx, file, file.kind.socket, ctx.queuedClients));
    if (file.kind.socket.queue.length) ctx.skQueues.set(file.id, file.kind.socket.queue);
  } else if (file.kind.type === "inet") {
    files.entry(file_entrySchema, inetEntry(file, file.kind.ino, file.kind.socket));
    const stream = file.kind.socket.stream;
    if (stream) {
      writeTcpStream(ctx.image(tcpStreamImageName(file.kind.ino), "TCP_STREAM"), stream);
    }
  } else if (ANON_KINDS.has(file.kind.type)) {
    files.entry(file_entrySchema, anonEntry(file));
  } else if (file.kind.type === "io_uring") {
    files.entry(file_entrySchema, ioUringEntry(file, file.kind.ring));
  } else if (file.kind.type === "tty") {
    // As criu: the path of the terminal's node in a REG entry of its own (not for an external
    // one, which the restore is given).
    const regfId = file.kind.driver === "ext" ? undefined : ctx.fileId();
    if (regfId !== undefined) {
      writeRegFile(
        files,
        regFileEntry(regfId, file.kind.path, { flags: file.flags, mode: file.kind.mode }),
      );
    }
    files.entry(
      file_entrySchema,
      create(file_entrySchema, {
        type: fd_types.TTY,
        id: file.id,
        tty: create(tty_file_entrySchema, {
          id: file.id,
          ttyInfoId: file.kind.infoId,
          flags: file.flags,
          fown: file.fown,
          regfId,
        }),
      }),
    );
  } else if (file.kind.type === "pipe") {
    files.entry(
      file_entrySchema,
      create(file_entrySchema, {
        type: fd_types.PIPE,
        id: file.id,
        pipe: create(pipe_entrySchema, {
          id: file.id,
          pipeId: file.kind.ino,
          flags: file.flags,
          fown: file.fown,
        }),
      }),
    );
  }
}

/** A packet_ring of tpacket_req3's seven words. */
function ringEntry(w: number[]) {
  return create(packet_ringSchema, {
    blockSize: w[0],
    blockNr: w[1],
    frameSize: w[2],
    frameNr: w[3],
    retireTmo: w[4],
    sizeofPriv: w[5],
    features: w[6],
  });
}

const FD_TYPE: Record<FileKind["type"], fd_types> = {
  reg: fd_types.REG,
  tun: fd_types.TUNF,
  pipe: fd_types.PIPE,
  fifo: fd_types.FIFO,
  pidfd: fd_types.PIDFD,
  netlink: fd_types.NETLINKSK,
  memfd: fd_types.MEMFD,
  tty: fd_types.TTY,
  ns: fd_types.NS,
  packet: fd_types.PACKETSK,
  eventfd: fd_types.EVENTFD,
  signalfd: fd_types.SIGNALFD,
  timerfd: fd_types.TIMERFD,
  eventpoll: fd_types.EVENTPOLL,
  inotify: fd_types.INOTIFY,
  fanotify: fd_types.FANOTIFY,
  unix: fd_types.UNIXSK,
  inet: fd_types.INETSK,
  // Ours: criu has no io_uring, and refuses UND.
  io_uring: fd_types.UND,
};

/**
 * A deleted regular file open at `link` (a /proc/PID/fd or map_files link), once called
 * `path`: linked again when it lives on under another name (--link-remap), else its contents
 * carried as a ghost (up to --ghost-limit).
 */
export function deletedRegular(
  ctx: DumpContext,
  link: string,
  path: string,
  st: Deno.FileInfo,
  what: string,
): FileKind {
  if ((st.nlink ?? 0) > 0) {
    // A copy would be another inode: it lives on under another name, so it is linked again.
    if (!ctx.opts.linkRemap) {
      throw new UnsupportedError(
        `Cannot dump ${what}: its name was deleted but the file lives on under another ` +
          `name; dump with --link-remap`,
      );
    }
    // One link for each mount it is held through, made there (as criu makes them: a link is
    // made again on the mount of its name).
    const pid = Number(/^\/proc\/(\d+)\//.exec(link)?.[1]) || undefined;
    const mntId = ctx.mntNs && pid ? mntIdOf(link) : undefined;
    const key = `${st.dev}:${st.ino}${mntId === undefined ? "" : `@${mntId}`}`;
    let remap = ctx.linkRemaps.get(key);
    if (!remap) {
      // Named in the namespace of its mount (a task may hold a file of one it left).
      const at = (p: string) => pid ? ctx.filePath(p, pid, mntId) : ctx.hostPath(p);
      remap = linkRemapFor(link, dirname(path), ctx.linkRemaps.size + 1, at, ctx.userns);
      ctx.linkRemaps.set(key, remap);
      ctx.linkRemapsAt.set(remap, at(remap));
      if (mntId !== undefined) ctx.linkRemapMounts.set(remap, mntId);
    }
    return {
      type: "reg",
      path,
      size: BigInt(st.size),
      mode: st.mode ?? 0o100600,
      linkRemap: remap,
    };
  }
  // As criu: what the file takes on disk counts (its holes cost nothing).
  const limit = ctx.opts.ghostLimit ?? DEFAULT_GHOST_LIMIT;
  const used = (st.blocks ?? Math.ceil(st.size / 512)) * 512;
  if (used > limit) {
    throw new UnsupportedError(
      `Cannot dump ${what}: the deleted file holds ${used} bytes, more than the ghost ` +
        `limit of ${limit}; raise it with --ghost-limit`,
    );
  }
  const ghost = ghostOf(link, st, {
    size: st.size,
    chunks: readDataSegments(link, st.size),
    mode: st.mode ?? 0o100600,
  });
  return { type: "reg", path, size: BigInt(st.size), mode: ghost.mode, ghost };
}

/**
 * A deleted FIFO, directory, device or symlink: made again at restore from its ghost entry
 * (type, owner, mode, times, device number or symlink target), as criu does.
 */
function deletedSpecial(
  pid: number,
  fd: number,
  link: string,
  path: string,
  st: Deno.FileInfo,
  what: string,
): FileKind {
  // stat of /proc/PID/fd/N gives the open object itself: for a symlink, the link.
  const symlink = ((st.mode ?? 0) & 0o170000) === 0o120000;
  if (!st.isFifo && !st.isDirectory && !st.isCharDevice && !symlink) {
    throw new UnsupportedError(
      `Cannot dump ${what}: deleted files of this type (mode 0${(st.mode ?? 0).toString(8)}) ` +
        `are not supported`,
    );
  }
  if ((st.nlink ?? 0) > 0 && !st.isDirectory) {
    throw new UnsupportedError(
      `Cannot dump ${what}: its name was deleted but it lives on under another name; ` +
        `not supported for this file type`,
    );
  }
  const ghost = ghostOf(link, st, {
    mode: st.mode ?? 0,
    rdev: st.isCharDevice ? st.rdev ?? 0 : undefined,
    symlinkTarget: symlink ? readLinkOf(pid, fd) : undefined,
  });
  if (st.isFifo) return { type: "fifo", ino: st.ino ?? 0, path, ghost };
  return { type: "reg", path, mode: ghost.mode, ghost };
}

/**
 * A pidfd: the process it refers to must be in the dumped tree (another process could hold its
 * PID after a restore); a pidfd of a process that is gone is made again with a process that
 * dies at once.
 */
function pidfdKind(
  ctx: DumpContext,
  pid: number,
  fd: number,
  link: string,
  what: string,
): FileKind {
  const info = readProcText(pid, `fdinfo/${fd}`);
  const target = Number(/^NSpid:\s*(-?\d+)/m.exec(info)?.[1] ?? /^Pid:\s*(-?\d+)/m.exec(info)?.[1]);
  if (!Number.isInteger(target)) {
    throw new UnsupportedError(`Cannot dump ${what}: its fdinfo names no process`);
  }
  if (target > 0 && !ctx.treeTids.has(target)) {
    throw new UnsupportedError(
      `Cannot dump ${what}: a pidfd of process ${target}, which is not in the dumped tree`,
    );
  }
  // Opened again by its holder: a holder in a nested PID namespace must see its task there.
  const nested = ctx.nestedPids.inner;
  const below = (nested.get(target)?.length ?? 0) - (nested.get(pid)?.length ?? 0);
  if (
    target > 0 && nested.has(pid) &&
    (below < 0 || relatedNamespace(`/proc/${target}/ns/pid`, "parent", below) !==
        Number(Deno.statSync(`/proc/${pid}/ns/pid`).ino))
  ) {
    throw new UnsupportedError(
      `Cannot dump ${what}: a pidfd of task ${target}, which the nested PID namespace of its ` +
        `holder does not show (it came from outside)`,
    );
  }
  return { type: "pidfd", pid: target, ino: Deno.statSync(link).ino ?? 0 };
}

/** The target of the symlink task `pid` holds open as `fd` (O_PATH | O_NOFOLLOW). */
function readLinkOf(pid: number, fd: number): string {
  return withTaskFd(pid, fd, readLinkAt);
}

/**
 * Links the open file `link` to a free name `link_remap.N` in `dir` (of the tree, reached
 * through `at`), or, as criu, in the nearest directory above it that still exists (the file's
 * own may have been removed too); returns that name. In the tree's own user namespace, the
 * name is made as its root (its file systems take only names made by ids it maps).
 */
function linkRemapFor(
  link: string,
  dir: string,
  n: number,
  at: (path: string) => string,
  userns?: UserNamespace,
) {
  for (let i = n;; i++) {
    const name = `${dir === "/" ? "" : dir}/link_remap.${i}`;
    try {
      asRootOf(userns, () => linkAt(link, at(name)));
      return name;
    } catch (e) {
      if (!(e instanceof Errno)) throw e;
      if (e.errno === errno.ENOENT && dir !== "/") {
        dir = dirname(dir);
        i--;
      } else if (e.errno !== errno.EEXIST) throw e;
    }
  }
}

/**
 * A connection waiting for the ACK of its FIN (LAST_ACK, CLOSING) whose peer is in the tree's
 * own network namespace but no socket of the tree: that end is in TIME_WAIT, kept by the
 * kernel, and the namespace made again would not have it; the FIN sent again would meet a
 * reset. Refused by name.
 */
function checkTcpPeers(ctx: DumpContext): void {
  if (!ctx.ownNet) return;
  const sockets = ctx.openFiles.flatMap((f) => f.kind.type === "inet" ? [f.kind.socket] : []);
  // An IPv6 socket talking IPv4 (::ffff:a.b.c.d) meets its peer at a.b.c.d.
  const end = (a: number[], port: number) => `${wireAddr(a).join(".")}:${port}`;
  const states = new Map(
    sockets.map((s) => [`${end(s.srcAddr, s.srcPort)}>${end(s.dstAddr, s.dstPort)}`, s.state]),
  );
  const waiting: number[] = [TCP_STATE.LAST_ACK, TCP_STATE.CLOSING];
  for (const s of sockets) {
    if (s.proto !== IPPROTO.TCP || !waiting.includes(s.state)) continue;
    // A peer closed too (CLOSE) is not what answers: its TIME_WAIT end is.
    const peer = states.get(`${end(s.dstAddr, s.dstPort)}>${end(s.srcAddr, s.srcPort)}`);
    if (peer !== undefined && peer !== TCP_STATE.CLOSE) continue;
    if (!isLocalPeer(s.srcAddr, s.dstAddr)) continue;
    throw new UnsupportedError(
      `Cannot dump TCP connection ${endpointText(s.family, s.srcPort, s.srcAddr)} -> ` +
        `${endpointText(s.family, s.dstPort, s.dstAddr)} (${stateName(s.state)}): its peer, ` +
        `in the tree's network namespace, answers from TIME_WAIT, which the namespace made ` +
        `again would not have (its FIN would meet a reset)`,
    );
  }
}

/** Whether a peer at `dst` is in the socket's own network namespace: loopback, or itself. */
function isLocalPeer(src: number[], dst: number[]): boolean {
  const [a, b] = [wireAddr(src), wireAddr(dst)];
  if (a.join(".") === b.join(".")) return true;
  if (b.length === 1) return (b[0] & 0xff) === 127;
  return b[0] === 0 && b[1] === 0 && b[2] === 0 && b[3] === 0x01000000;
}

/** Writes what the files of the whole tree carry besides their entries. */
export function dumpFileData(ctx: DumpContext, files: ReturnType<DumpContext["image"]>): void {
  // Files only in flight in unix queues (no task holds them) have entries too.
  for (const f of ctx.inFlight) writeFileEntry(ctx, files, f);
  checkUnixSockets(ctx, files);
  checkTcpPeers(ctx);
  if (ctx.memfds.size) {
    const img = ctx.image("memfd.img", "MEMFD_INODE");
    for (const m of ctx.memfds.values()) img.entry(memfd_inode_entrySchema, m);
  }
  writeLocks(ctx);
  writeRemaps(ctx);
  writeSkQueues(ctx);
  writePipeData(ctx, "fifo-data.img", "FIFO_DATA", ctx.fifos);
  writePipeData(ctx, "pipes-data.img", "PIPES_DATA", ctx.pipes);
}
