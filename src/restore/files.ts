/**
 * Open file descriptions of a restore (`FileTable`), made in the restorer; restore/install.ts
 * hands them to the tasks.
 *
 * Every open file description of the dump is made once, here in the restorer (`FileTable`):
 * regular files opened at their offset, pipes made and refilled with their data, the
 * terminal of a shell job. `installFiles` then hands each task the descriptions it had, over
 * an abstract unix socket with SCM_RIGHTS (syscalls/socket.ts), and puts them at the dumped
 * numbers. A description shared by several tasks (an inherited pipe) stays one description,
 * shared again. The restorer's own descriptors (pages-N.img, mapped files, the exe) travel the
 * same way and are closed once the memory is back.
 *
 * ```
 *  restorer                         task (seized)
 *  FileTable: fd per file id  --SCM_RIGHTS-->  received above the dumped numbers
 *                                              --dup3--> dumped numbers, with FD_CLOEXEC
 * ```
 *
 * @module
 */
import { asRootOf } from "../tree/userns.ts";
import { exists } from "../util/exists.ts";
import { isFieldSet } from "../images/protobuf.ts";
import {
  fd_types,
  fh_entrySchema,
  type file_entry,
  type fown_entry,
  type inet_sk_entry,
  type inotify_file_entry,
  type inotify_wd_entry,
  mark_type,
  memfd_inode_entrySchema,
  packet_sock_entrySchema,
  type pidfd_entry,
  type reg_file_entry,
  reg_file_entrySchema,
  TtyType,
} from "../../proto/gen/files_pb.ts";
import { openHandle } from "../util/file_handle.ts";
import {
  close,
  Errno,
  errnoName,
  F,
  fcntl,
  ioctl,
  NR,
  O,
  open as openHere,
  pidfdOpen,
  pipe2,
  pwriteAll,
  setFileOwner,
  setFileTimes,
  strerror,
  syscall,
  tryOpen,
  withRootAt,
  withSharedMapping,
  writeAll,
} from "../syscalls/mod.ts";
import { addressOf, cString as cStringOf } from "../syscalls/ffi.ts";
import { lseek, setsockopt, SO } from "../syscalls/socket.ts";
import { makeNetlinkSocket } from "../net/netlink.ts";
import { makePacketSocket } from "../net/packet.ts";
import { makeUnixSockets, type UnixSocketImage } from "../net/unix.ts";
import { type InetSocketState, isTcpConnection, makeInetSocket } from "../net/inet.ts";
import { TCP_STATE } from "../net/tcp_state.ts";
import { connectionText } from "../net/addr.ts";
import { commonOptionsOf } from "../net/sk_opts.ts";
import { openTunFile } from "../net/tun.ts";
import { NetnsError } from "../net/in_netns.ts";
import type { RepairedConnections } from "../net/tcp_conns.ts";
import { ImageError } from "../images/image.ts";
import { readTcpStream, tcpStreamImageName } from "../images/tcp_stream.ts";
import { dirname } from "../util/path.ts";
import {
  type DumpImages,
  hostPath,
  mountNamespaces,
  outsideGid,
  outsideUid,
  readShmemRuns,
  type TaskImages,
} from "./images.ts";
import { isControllingTtyFile, isMadePty, isOtherTerminal, PtyTable } from "./ttys.ts";
import { withSocketsIn } from "../net/ns_sockets.ts";
import { type NetNamespaces, socketNsId } from "./nested_netns.ts";
import { NS_CLONE_FLAGS, NS_KINDS, OWN_NS_KINDS } from "../dump/context.ts";
import { within } from "./mount_plan.ts";

const SEEK_SET = 0;
/** Open flags that must not be replayed: they would create or truncate. */
export const NOT_REPLAYED = O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY;
/** Status flags fcntl(F_SETFL) can set. */
export const SETFL_MASK = O.APPEND | O.NONBLOCK | 0o20000 /* O_ASYNC */ | 0o40000; /* O_DIRECT */

/** A restore step failed on a named resource. */
export class RestoreError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RestoreError";
  }
}

/**
 * The terminal of this restore (a shell job gets the caller's terminal, as with criu -j): the
 * first of our stdin, stdout, stderr that is a terminal.
 */
export function ourTerminal(): string {
  for (const fd of [0, 1, 2]) {
    try {
      const link = Deno.readLinkSync(`/proc/self/fd/${fd}`);
      if (/^\/dev\/(pts\/\d+|tty\w*)$/.test(link)) return link;
    } catch {
      // closed
    }
  }
  throw new RestoreError(
    "Cannot restore a shell job's terminal: criu restore has no terminal (run it from one)",
  );
}

/** O_TMPFILE's own bit (O_TMPFILE is this with O_DIRECTORY). */
const O_TMPFILE_BIT = 0o20000000;

function openOrThrow(path: string, flags: number, what: string): number {
  // A file made with O_TMPFILE keeps that flag (and O_DIRECTORY); opened again by name, not.
  if (flags & O_TMPFILE_BIT) flags &= ~(O_TMPFILE_BIT | O.DIRECTORY);
  const fd = tryOpen(path, (flags & ~NOT_REPLAYED) | O.CLOEXEC);
  if (fd < 0) {
    throw new RestoreError(
      `Cannot open ${what} ${path}: ${strerror(-fd).toLowerCase()} (${errnoName(-fd)})`,
    );
  }
  return fd;
}

/** Reads an inet_sk_entry back into the state the restorer needs. */
export function inetState(e: inet_sk_entry): InetSocketState {
  const o = e.opts!;
  return {
    family: e.family,
    type: e.type,
    proto: e.proto,
    state: e.state,
    srcPort: e.srcPort,
    dstPort: e.dstPort,
    srcAddr: e.srcAddr,
    dstAddr: e.dstAddr,
    backlog: e.backlog,
    v6only: e.v6only ?? false,
    // Keepalive settings: criu 4 writes them in tcp_opts, older images in sk_opts.
    opts: {
      ...commonOptionsOf(o),
      keepcnt: e.tcpOpts?.keepcnt ?? o.tcpKeepcnt ?? 0,
      keepidle: e.tcpOpts?.keepidle ?? o.tcpKeepidle ?? 0,
      keepintvl: e.tcpOpts?.keepintvl ?? o.tcpKeepintvl ?? 0,
    },
    ip: {
      freebind: e.ipOpts?.freebind ?? false,
      pktinfo: e.ipOpts?.pktinfo ?? false,
      tos: e.ipOpts?.tos ?? 0,
      ttl: e.ipOpts?.ttl ?? 0,
      raw: e.type === 3 /* SOCK_RAW */
        ? {
          hdrincl: e.ipOpts?.raw?.hdrincl ?? false,
          nodefrag: e.ipOpts?.raw?.nodefrag ?? false,
          icmpFilter: e.ipOpts?.raw?.icmpvFilter ?? [],
        }
        : undefined,
    },
    tcp: e.proto === 6
      ? { cork: e.tcpOpts?.cork ?? false, nodelay: e.tcpOpts?.nodelay ?? false }
      : undefined,
    shutdown: e.shutdown ?? 0,
  };
}

/** What a restore does with TCP connections in the images. */
export interface FileTableTcp {
  /** Restore them from their streams (`--tcp-established`). */
  established: boolean;
  /** Restore them closed (`--tcp-close`, or a dump made with it). */
  close: boolean;
  /** Where the rebuilt connections are held in repair mode until the tree resumes. */
  conns: RepairedConnections;
}

/** The fown_entry of a file entry, whichever its type. */
function ownerOf(f: file_entry): fown_entry | undefined {
  for (const sub of Object.values(f)) {
    if (sub && typeof sub === "object" && "fown" in sub && sub.fown) return sub.fown as fown_entry;
  }
  return undefined;
}

/** The open file descriptions of a dump, made in this process. */
export class FileTable implements Disposable {
  readonly #byId = new Map<number, number>();
  readonly #service = new Map<string, number>();
  readonly #dump: DumpImages;
  readonly #shellJob: boolean;
  readonly #tcp: FileTableTcp;
  readonly #ptys: PtyTable;

  constructor(
    dump: DumpImages,
    shellJob: boolean,
    tcp: FileTableTcp,
    inherited: ReadonlyMap<string, number> = new Map(),
    orphans = false,
  ) {
    this.#dump = dump;
    this.#shellJob = shellJob;
    this.#tcp = tcp;
    this.#inherited = inherited;
    this.#ptys = new PtyTable(dump, orphans);
  }

  readonly #inherited: ReadonlyMap<string, number>;
  /** Tun files that made their devices with the network namespace, by file id. */
  #madeTun = new Map<number, number>();

  /** Takes the tun files the network namespace's devices were made through (by file id). */
  adoptTunFiles(made: Map<number, number>): void {
    for (const [id, fd] of made) this.#madeTun.set(id, fd);
  }

  /** The network namespaces of the restore, for where sockets are made. */
  #nets?: NetNamespaces;

  /** Makes each socket in its network namespace as `nets` knows them. */
  useNetNamespaces(nets: NetNamespaces): void {
    this.#nets = nets;
  }

  /** The description of file entry `id` (made on first use). */
  file(id: number, forFd: number, pid: number): number {
    const have = this.#byId.get(id);
    if (have !== undefined) return have;
    // A socket of a network namespace nested in the tree's is made in it (unix sockets are
    // made all at once, each in its own: #unixImage).
    const f = this.#entry(id);
    const net = f.type === fd_types.UNIXSK
      ? undefined
      : this.#nets?.socketsFor(f, `fd ${forFd} of task ${pid}`);
    return net ? withSocketsIn(net, () => this.#make(id, forFd, pid)) : this.#make(id, forFd, pid);
  }

  #make(id: number, forFd: number, pid: number): number {
    const f = this.#entry(id);
    // Given by the caller (--inherit-fd fd[N]:KEY), as criu names the file: used as it is.
    const given = this.#inherited.get(inheritKey(f) || this.#externalTty(f) || "\0");
    let fd: number;
    if (given !== undefined) {
      fd = fcntl(given, F.DUPFD_CLOEXEC, 3);
    } else if (f.reg?.ext || this.#externalTty(f)) {
      const key = inheritKey(f) || this.#externalTty(f)!;
      throw new RestoreError(
        `Cannot restore fd ${forFd} of task ${pid}: it was dumped as external (${key}); give ` +
          `it with --inherit-fd fd[N]:${key}`,
      );
    } else if (f.type === fd_types.REG && this.#dump.ghosts.has(id)) {
      fd = this.#ghost(id, f);
    } else if (f.type === fd_types.REG) {
      const reg = f.reg!;
      const open = () =>
        this.#linked(id, reg) ?? openOrThrow(this.#at(reg.name, reg), reg.flags, "file");
      // A /proc file of a task gone: opened while a task with its PID exists again.
      const dead = this.#dump.deadProcs.get(id);
      if (dead !== undefined && !this.deadPid) {
        throw new RestoreError(`Cannot restore fd ${forFd} of task ${pid}: /proc/${dead} is gone`);
      }
      fd = dead !== undefined ? this.deadPid!(dead, open) : open();
      if (reg.pos > 0n) lseek(fd, reg.pos, SEEK_SET);
    } else if (f.type === fd_types.PIPE) {
      fd = this.#pipeEnd(f);
    } else if (f.type === fd_types.EVENTFD) {
      const e = f.efd!;
      const EFD_SEMAPHORE = 1, EFD_NONBLOCK = O.NONBLOCK;
      fd = Number(
        syscall(
          NR.eventfd2,
          "eventfd2",
          `fd ${forFd} of task ${pid}`,
          e.counter,
          O.CLOEXEC | (e.flags & EFD_NONBLOCK) | (e.flags & EFD_SEMAPHORE),
        ),
      );
    } else if (f.type === fd_types.SIGNALFD) {
      const g = f.sgfd!;
      const mask = new BigUint64Array([g.sigmask]);
      fd = Number(
        syscall(
          NR.signalfd4,
          "signalfd4",
          `fd ${forFd} of task ${pid}`,
          -1,
          addressOf(mask),
          8,
          O.CLOEXEC | (g.flags & O.NONBLOCK),
        ),
      );
    } else if (f.type === fd_types.TIMERFD) {
      const t = f.tfd!;
      fd = Number(
        syscall(
          NR.timerfd_create,
          "timerfd_create",
          `fd ${forFd} of task ${pid}`,
          t.clockid,
          O.CLOEXEC | (t.flags & O.NONBLOCK),
        ),
      );
      // The remaining time is relative: an absolute timer restarts counting from now. A
      // periodic timer that expired unread shows no remaining time (the kernel re-arms it on
      // read): it goes on from its interval.
      const periodic = t.isec || t.insec;
      const [vsec, vnsec] = t.vsec || t.vnsec ? [t.vsec, t.vnsec] : [t.isec, t.insec];
      const spec = new BigUint64Array([t.isec, t.insec, vsec, vnsec]);
      if (t.vsec || t.vnsec || periodic) {
        syscall(
          NR.timerfd_settime,
          "timerfd_settime",
          `fd ${forFd} of task ${pid}`,
          fd,
          0,
          addressOf(spec),
          0,
        );
      }
      if (t.ticks) {
        const TFD_IOC_SET_TICKS = 0x40085400;
        ioctl(
          fd,
          TFD_IOC_SET_TICKS,
          new Uint8Array(new BigUint64Array([t.ticks]).buffer),
          `timerfd of task ${pid}`,
        );
      }
    } else if (f.type === fd_types.MEMFD) {
      fd = this.#memfd(f, forFd < 0);
    } else if (f.type === fd_types.FIFO) {
      fd = this.#fifoEnd(f);
    } else if (f.type === fd_types.UNIXSK) {
      fd = this.#unixSocket(f);
    } else if (f.type === fd_types.INETSK) {
      fd = this.#inetSocket(f, forFd, pid);
    } else if (f.type === fd_types.INOTIFY) {
      fd = this.#inotify(f, forFd, pid);
    } else if (f.type === fd_types.NETLINKSK) {
      const n = f.nlsk!;
      fd = makeNetlinkSocket({
        protocol: n.protocol,
        portid: n.portid,
        groups: n.groups,
        dstPortid: n.dstPortid,
        dstGroup: n.dstGroup,
        opts: commonOptionsOf(n.opts),
      }, `fd ${forFd} of task ${pid} (netlink socket:[${n.ino}])`);
      const fl = n.flags & SETFL_MASK;
      if (fl) fcntl(fd, F.SETFL, fl);
    } else if (f.type === fd_types.PIDFD) {
      if (isLivePidfd(f)) {
        throw new Error(`pidfd ${id} of a live process is made inside its task (late)`);
      }
      fd = this.#deadPidfd(f.pidfd!);
    } else if (f.type === fd_types.EVENTPOLL) {
      fd = Number(
        syscall(NR.epoll_create1, "epoll_create1", `fd ${forFd} of task ${pid}`, O.CLOEXEC),
      );
    } else if (f.type === fd_types.FANOTIFY) {
      fd = this.#fanotify(f, forFd, pid);
    } else if (f.type === fd_types.PACKETSK) {
      fd = this.#packetSocket(f, forFd, pid);
    } else if (f.type === fd_types.NS) {
      fd = this.#nsFile(f, forFd, pid);
    } else if (f.type === fd_types.TUNF) {
      fd = this.#tunFile(f, forFd, pid);
    } else if (f.type === fd_types.TTY && isMadePty(f, this.#dump, this.#ptys.orphans)) {
      fd = fcntl(this.#ptys.file(f), F.DUPFD_CLOEXEC, 3);
    } else if (f.type === fd_types.TTY && isOtherTerminal(f, this.#dump)) {
      const path = this.#dump.files.get(f.tty!.regfId)?.reg?.name;
      if (!path) throw new RestoreError(`Cannot restore fd ${forFd} of task ${pid}: no path`);
      fd = openOrThrow(this.#at(path), f.tty!.flags, "terminal");
    } else if (f.type === fd_types.TTY) {
      if (!this.#shellJob) {
        throw new RestoreError(
          `Cannot restore fd ${forFd} of task ${pid}: it was a terminal; restore with --shell-job (-j)`,
        );
      }
      fd = openOrThrow(ourTerminal(), f.tty!.flags, "terminal");
    } else {
      throw new RestoreError(
        `Cannot restore fd ${forFd} of task ${pid}: file type ${
          fd_types[f.type]
        } is not supported yet`,
      );
    }
    this.#byId.set(id, fd);
    const fown = ownerOf(f);
    if (fown && (fown.pid || fown.signum)) this.#owners.push({ fd, fown });
    return fd;
  }

  readonly #owners: { fd: number; fown: fown_entry }[] = [];

  /** The key of an external terminal (`tty[RDEV:DEV]`, hex), for a TTY entry of one. */
  #externalTty(f: file_entry): string | undefined {
    if (f.type !== fd_types.TTY || !f.tty) return undefined;
    const info = this.#dump.ttys.find((t) => t.id === f.tty!.ttyInfoId);
    if (info?.type !== TtyType.EXT_TTY) return undefined;
    return `tty[${info.rdev.toString(16)}:${(info.dev ?? 0).toString(16)}]`;
  }

  /** A fanotify group with its marks (each by its path; ignored masks after the masks). */
  #fanotify(f: file_entry, forFd: number, pid: number): number {
    const e = f.ffy!;
    const what = `fd ${forFd} of task ${pid} (fanotify)`;
    const FAN_MARK_ADD = 0x1, FAN_MARK_MOUNT = 0x10, FAN_MARK_IGNORED_MASK = 0x20;
    const fd = Number(
      syscall(
        NR.fanotify_init,
        "fanotify_init",
        what,
        e.faflags, // the group keeps them as given (fdinfo shows them): close-on-exec too
        e.evflags,
      ),
    );
    fcntl(fd, F.SETFD, 1 /* FD_CLOEXEC, ours until installed */);
    try {
      // fdinfo lists the newest mark first: the last is added first.
      for (const m of [...e.mark].reverse()) {
        const path = m.type === mark_type.MOUNT ? m.me?.path : m.ie?.fHandle?.path;
        if (!path) throw new RestoreError(`Cannot restore a mark of ${what}: no path in the image`);
        const base = FAN_MARK_ADD | m.mflags | (m.type === mark_type.MOUNT ? FAN_MARK_MOUNT : 0);
        const name = cStringOf(this.#at(path));
        const mark = (flags: number, mask: number) =>
          syscall(
            NR.fanotify_mark,
            "fanotify_mark",
            `${path} for ${what}`,
            fd,
            flags,
            mask,
            -100,
            addressOf(name),
          );
        if (m.mask) mark(base, m.mask);
        if (m.ignoredMask) mark(base | FAN_MARK_IGNORED_MASK, m.ignoredMask);
      }
      const fl = e.flags & SETFL_MASK;
      if (fl) fcntl(fd, F.SETFL, fl);
      return fd;
    } catch (err) {
      close(fd);
      throw err;
    }
  }

  /** A packet socket. */
  #packetSocket(f: file_entry, forFd: number, pid: number): number {
    const e = f.psk!;
    const what = `fd ${forFd} of task ${pid} (packet socket)`;
    const ring = (r: typeof e.rxRing) =>
      r &&
      [r.blockSize, r.blockNr, r.frameSize, r.frameNr, r.retireTmo, r.sizeofPriv, r.features];
    const fd = makePacketSocket({
      type: e.type,
      protocol: e.protocol,
      ifindex: e.ifindex,
      version: e.version,
      reserve: e.reserve,
      timestamp: e.timestamp,
      copyThresh: e.copyThresh,
      auxData: e.auxData,
      origDev: e.origDev,
      vnetHdr: e.vnetHdr,
      loss: e.loss,
      mclist: e.mclist.map((m) => ({ ifindex: m.index, type: m.type, addr: m.addr })),
      fanout: isFieldSet(e, packet_sock_entrySchema.field.fanout) ? e.fanout : undefined,
      rxRing: ring(e.rxRing),
      txRing: ring(e.txRing),
      opts: commonOptionsOf(e.opts),
      queued: 0,
    }, what);
    const fl = e.flags & SETFL_MASK;
    if (fl) fcntl(fd, F.SETFL, fl);
    return fd;
  }

  /**
   * A tun file, opened in the tree's network namespace, attached to its device as it was (the
   * device made with the namespace), with the open flags of its /dev/net/tun entry.
   */
  #tunFile(f: file_entry, forFd: number, pid: number): number {
    const t = f.tunf!;
    const what = `fd ${forFd} of task ${pid} (tun file)`;
    const reg = this.#dump.regBeside.get(f.id);
    if (!reg) {
      throw new RestoreError(`Cannot restore ${what}: files.img has no /dev/net/tun for it`);
    }
    if ((reg.flags & 3) !== O.RDWR) {
      throw new RestoreError(`Cannot restore ${what}: opened other than read-write; not supported`);
    }
    const devices = this.#nets ? this.#nets.devicesOf(socketNsId(f)) : this.#dump.netns?.devices;
    const dev = t.netdev ? devices?.find((d) => d.name === t.netdev) : undefined;
    let fd = this.#madeTun.get(f.id);
    this.#madeTun.delete(f.id);
    try {
      fd ??= openTunFile(t.netdev || undefined, dev?.tun, t.detached ?? false, what);
    } catch (e) {
      if (e instanceof Errno || e instanceof NetnsError) throw new RestoreError(e.message);
      throw e;
    }
    const fl = reg.flags & SETFL_MASK;
    if (fl) fcntl(fd, F.SETFL, fl);
    return fd;
  }

  /**
   * A namespace descriptor: criu's own (the tree lived in it), or one the tree's root had of
   * its own (made again: the new root task's).
   */
  #nsFile(f: file_entry, forFd: number, pid: number): number {
    const n = f.nsf!;
    const kind = NS_KINDS.find((k) => NS_CLONE_FLAGS[k] === n.nsCflag);
    const rootIds = this.#dump.inventory.rootIds;
    const root = this.#dump.tasks[0];
    if (
      kind && OWN_NS_KINDS.has(kind) && !root.zombie && root.ids[`${kind}NsId`] === n.nsId &&
      rootIds?.[`${kind}NsId`] !== n.nsId
    ) {
      return openOrThrow(`/proc/${this.#dump.rootPid}/ns/${kind}`, n.flags, "namespace");
    }
    const nested = kind === "net" ? this.#nets?.nsPath(n.nsId) : undefined;
    if (nested) return openOrThrow(nested, n.flags, "namespace");
    if (!kind || !rootIds || rootIds[`${kind}NsId`] !== n.nsId) {
      throw new RestoreError(
        `Cannot restore fd ${forFd} of task ${pid}: a ${kind ?? "unknown"} namespace other ` +
          `than the tree's; namespaces are not supported yet`,
      );
    }
    return openOrThrow(`/proc/self/ns/${kind}`, n.flags, "namespace");
  }

  /** The ptys of the images, made together on first need. */
  get ptys(): PtyTable {
    return this.#ptys;
  }

  /**
   * Gives each description its owner for I/O signals (F_SETOWN_EX with the uids of whoever set
   * it, F_SETSIG). Called once every task and process group exists: an owner names one, by
   * its id in the images; `real` gives the id criu knows it by.
   */
  applyOwners(real: (virt: number) => number): void {
    // Every socket of a shared port is bound: each gets its own SO_REUSEPORT back.
    for (const { fd, on } of this.#reuseport.splice(0)) {
      setsockopt(fd, SO.REUSEPORT, new Uint8Array(new Int32Array([on ? 1 : 0]).buffer));
    }
    for (const { fd, fown } of this.#owners) {
      try {
        setFileOwner(fd, {
          type: fown.pidType,
          pid: fown.pid && real(fown.pid),
          signum: fown.signum,
          uid: outsideUid(this.#dump, fown.uid, "a file's owner"),
          euid: outsideUid(this.#dump, fown.euid, "a file's owner"),
        });
      } catch (e) {
        throw new RestoreError(
          `Cannot give a file its owner (${["thread", "process", "process group"][fown.pidType]} ` +
            `${fown.pid}): ${(e as Error).message}`,
          { cause: e },
        );
      }
    }
  }

  /** Deleted files made again, by ghost id: where each sits until the restore is over. */
  readonly #ghostPaths = new Map<number, string>();
  /** The same, as names of the tree, with the mount each is on when the images say. */
  readonly #ghostNames = new Map<number, PlacedName>();

  /**
   * A deleted file again. Its inode is made once per ghost (contents, holes kept, size, owner,
   * mode, then times), beside the path it had; every description of it gets a hard link at its
   * own path, opened as the task had it and unlinked at once, so that the descriptions share
   * one inode and each shows its own name. The ghost itself goes when the table closes.
   */
  #ghost(id: number, f: file_entry, reg = f.reg!): number {
    return asRootOf(this.#dump.userns, () => this.#ghostMade(id, reg));
  }

  #ghostMade(id: number, reg: reg_file_entry): number {
    const g = this.#dump.ghosts.get(id)!;
    const name = this.#at(reg.name, reg);
    if ((g.entry.mode & 0o170000) !== 0o100000) {
      // A directory, device or symlink: made again at its name for the restore (GhostSpecials).
      const fd = openOrThrow(name, reg.flags, "deleted file");
      if (reg.pos > 0n) lseek(fd, reg.pos, SEEK_SET);
      return fd;
    }
    const free = (base: string) => {
      let path = base;
      for (let i = 0; exists(path); i++) path = `${base}.criu-ghost-${g.id}-${i}`;
      return path;
    };
    const e = g.entry;
    const fill = (fd: number) => {
      for (const c of g.chunks) pwriteAll(fd, c.data, c.off, `deleted file ${reg.name}`);
      syscall(NR.ftruncate, "ftruncate", `deleted file ${reg.name}`, fd, g.size);
      const what = `deleted file ${reg.name}`;
      const [uid, gid] = [outsideUid(this.#dump, e.uid, what), outsideGid(this.#dump, e.gid, what)];
      syscall(NR.fchown, "fchown", what, fd, uid, gid);
      syscall(NR.fchmod, "fchmod", `deleted file ${reg.name}`, fd, e.mode & 0o7777);
    };
    const times = (path: string) => {
      if (!e.mtim) return;
      const ts = (t?: { tvSec: bigint; tvUsec: bigint }) => ({
        sec: t?.tvSec ?? 0n,
        nsec: Number(t?.tvUsec ?? 0n) * 1000,
      });
      setFileTimes(path, ts(e.atim), ts(e.mtim));
    };
    // Made with O_TMPFILE (it never had a name) and open once: made so again, in its
    // directory, with its flags (which say O_TMPFILE).
    const sharers = [...this.#dump.ghosts.entries()].filter(([, x]) => x === g).length;
    if (reg.flags & O_TMPFILE_BIT && sharers === 1 && !this.#ghostPaths.has(g.id)) {
      const dir = reg.name.slice(0, reg.name.lastIndexOf("/")) || "/";
      const fd = tryOpen(this.#at(dir, reg), (reg.flags & ~NOT_REPLAYED) | O.CLOEXEC, 0o600);
      if (fd < 0) {
        throw new RestoreError(
          `Cannot make deleted file ${reg.name} again (O_TMPFILE in ${dir}): ` +
            `${strerror(-fd).toLowerCase()} (${errnoName(-fd)})`,
        );
      }
      try {
        fill(fd);
        times(`/proc/self/fd/${fd}`);
        if (reg.pos > 0n) lseek(fd, reg.pos, SEEK_SET);
      } catch (err) {
        close(fd);
        throw err;
      }
      return fd;
    }
    let ghost = this.#ghostPaths.get(g.id);
    if (ghost === undefined) {
      ghost = free(`${name}.criu-ghost-${g.id}`);
      const fd = openHere(ghost, O.WRONLY | O.CREAT | O.EXCL | O.CLOEXEC, 0o600);
      this.#ghostPaths.set(g.id, ghost);
      this.#ghostNames.set(g.id, {
        name: reg.name + ghost.slice(name.length),
        mntId: mntIdOf(reg),
      });
      try {
        fill(fd);
      } finally {
        close(fd);
      }
      times(ghost);
    }
    const path = free(name);
    try {
      Deno.linkSync(ghost, path);
    } catch (err) {
      // A name on another mount of the same file system (a bind in a nested mount
      // namespace): the ghost linked through a mount that shows both, else from where the
      // namespace of this one shows it.
      if ((err as { code?: string }).code !== "EXDEV") throw err;
      const at = this.#ghostNames.get(g.id)!;
      const here = { name: reg.name + path.slice(name.length), mntId: mntIdOf(reg) };
      const both = this.#showingBoth(at, here);
      if (both) Deno.linkSync(both.from, both.to);
      else Deno.linkSync(this.#at(at.name), path);
    }
    try {
      const fd = openOrThrow(path, reg.flags, "deleted file");
      if (reg.pos > 0n) lseek(fd, reg.pos, SEEK_SET);
      return fd;
    } finally {
      Deno.removeSync(path);
    }
  }

  readonly #used = new Set<number>();

  /**
   * Runs `open` while task `pid` (of the tree's PID namespace) exists again for a moment:
   * set by the restore for the task whose files are being made.
   */
  deadPid?: (pid: number, open: () => number) => number;

  /** The nested mount namespace of the task whose files are being made, if it has one. */
  #nsId?: number;

  /** The files made from now on are task `task`'s (their paths are of its mount namespace). */
  forTask(task: TaskImages): void {
    this.#nsId = this.#dump.fsRoots.has(task.ids.mntNsId) ? task.ids.mntNsId : undefined;
  }

  /**
   * Where path `path` of the tree is reached from here (its own mount namespace's, if any):
   * in the namespace whose mount file `reg` was on, when the images say (criu's mnt_id), else
   * in the current task's.
   */
  #at(path: string, reg?: reg_file_entry): string {
    return this.#atMount(path, reg && mntIdOf(reg));
  }

  /** Where criu reaches `path` of the mount namespace of mount `mntId` (else the current one). */
  #atMount(path: string, mntId?: number): string {
    const ns = mntId === undefined ? undefined : mountNamespaces(this.#dump).get(mntId);
    return hostPath(this.#dump, path, ns ?? this.#nsId);
  }

  /** True the first time it is asked about file `id` (one-time set-up of shared objects). */
  firstUse(id: number): boolean {
    if (this.#used.has(id)) return false;
    this.#used.add(id);
    return true;
  }

  /** A read-only (or `flags`) descriptor of `path` for the restorer's own use, shared. */
  service(path: string, flags: number, what: string): number {
    const key = `${flags}:${path}`;
    let fd = this.#service.get(key);
    if (fd === undefined) {
      fd = openOrThrow(path, flags, what);
      this.#service.set(key, fd);
    }
    return fd;
  }

  #entry(id: number): file_entry {
    const f = this.#dump.files.get(id);
    if (!f) throw new RestoreError(`File ${id} is missing from files.img`);
    return f;
  }

  readonly #pipes = new Map<number, [number, number]>();
  /** inotify instances made, whose watches are added by `addWatches`. */
  readonly #watchers: { fd: number; ify: inotify_file_entry; pid: number }[] = [];

  /** An inotify instance, its watches to come once every file of the tree is made. */
  #inotify(f: file_entry, forFd: number, pid: number): number {
    const ify = f.ify!;
    const fd = Number(
      syscall(
        NR.inotify_init1,
        "inotify_init1",
        `fd ${forFd} of task ${pid}`,
        O.CLOEXEC | (ify.flags & O.NONBLOCK),
      ),
    );
    this.#watchers.push({ fd, ify, pid });
    return fd;
  }

  /**
   * The watches of every inotify instance, at their numbers, once the files of the tree are all
   * made and the names the restore gave deleted files are gone: the restore's own work then
   * queues no event. A watch without a path is on a deleted file, found by its inode: the ghost
   * made of it, or (a link remap, or the inode alive elsewhere) its file handle.
   */
  addWatches(): void {
    if (this.#watchers.length === 0) return;
    const targets = new Map<string, number>();
    try {
      for (const { ify, pid } of this.#watchers) {
        for (const w of ify.wd) {
          if (w.fHandle?.path) continue;
          const key = `${w.sDev}:${w.iIno}`;
          if (targets.has(key)) continue;
          const fd = this.#deletedInode(w);
          if (fd === undefined) {
            throw new RestoreError(
              `Cannot restore inotify watch ${w.wd} of task ${pid}: the deleted file it ` +
                `watches (inode ${w.iIno}) is not there`,
            );
          }
          targets.set(key, fd);
        }
      }
      this.#dropGhostNames();
      for (const { fd, ify, pid } of this.#watchers) {
        for (const w of [...ify.wd].sort((a, b) => a.wd - b.wd)) {
          // In the namespace of the mount that showed it (another than the holder's, when
          // the dump found it there).
          const h = w.fHandle;
          const path = h?.path
            ? this.#atMount(h.path, isFieldSet(h, fh_entrySchema.field.mntId) ? h.mntId : undefined)
            : `/proc/self/fd/${targets.get(`${w.sDev}:${w.iIno}`)}`;
          // The next number handed out, as the watch had it (the kernel hands them out rising).
          syscall(
            NR.ioctl,
            "ioctl(INOTIFY_IOC_SETNEXTWD)",
            `inotify of task ${pid}`,
            fd,
            0x40044900,
            w.wd,
          );
          const got = Number(
            syscall(
              NR.inotify_add_watch,
              "inotify_add_watch",
              w.fHandle?.path ?? `deleted inode ${w.iIno}`,
              fd,
              addressOf(cStringOf(path)),
              w.mask,
            ),
          );
          if (got !== w.wd) {
            throw new RestoreError(
              `Cannot restore inotify watch ${w.wd} of task ${pid}: got number ${got}`,
            );
          }
        }
      }
    } finally {
      for (const fd of targets.values()) close(fd);
    }
  }

  /** An O_PATH descriptor of the deleted file a watch is on, or undefined. */
  #deletedInode(w: inotify_wd_entry): number | undefined {
    for (const [id, g] of this.#dump.ghosts) {
      if (g.entry.dev !== w.sDev || BigInt(g.entry.ino ?? 0) !== BigInt(w.iIno)) continue;
      // Through the description a task holds: no other name of the inode may die after the
      // watch is on it (the last name of a deleted file dying ends its watches).
      const file = this.#byId.get(id);
      if (file === undefined) return undefined;
      const fd = tryOpen(`/proc/self/fd/${file}`, O.PATH | O.CLOEXEC);
      return fd < 0 ? undefined : fd;
    }
    const h = w.fHandle;
    if (!h) return undefined;
    const handle = new Uint8Array(new BigUint64Array(h.handle).buffer).subarray(0, h.bytes);
    return openHandle(w.sDev, h.type, handle);
  }

  /**
   * A deleted file still linked elsewhere, opened through the link the dump gave it: under its
   * old name when that is free (so that it reads "NAME (deleted)" again), else as the link.
   */
  #linked(id: number, reg: reg_file_entry): number | undefined {
    const link = this.#dump.linked.get(id);
    if (!link) return undefined;
    // In the tree's user namespace, names are made as its root (its file systems take only
    // those of ids they map).
    return asRootOf(this.#dump.userns, () => this.#linkedMade(link, reg));
  }

  #linkedMade(link: reg_file_entry, reg: reg_file_entry): number {
    const placedLink = { name: link.name, mntId: linkMount(link, reg) };
    const placed = { name: reg.name, mntId: mntIdOf(reg) };
    const [from, to] = [
      this.#atMount(link.name, placedLink.mntId),
      this.#atMount(reg.name, placed.mntId),
    ];
    // Its directories may be gone too: made for the moment, as criu does.
    const made: string[] = [];
    for (let dir = dirname(to); !exists(dir); dir = dirname(dir)) made.unshift(dir);
    // The name made (through a mount that shows both, when the link is on another mount of
    // the file system: a bind in a nested mount namespace).
    let named = to;
    try {
      for (const dir of made) Deno.mkdirSync(dir);
      try {
        Deno.linkSync(from, to);
      } catch (err) {
        const both = (err as { code?: string }).code === "EXDEV" &&
          this.#showingBoth(placedLink, placed);
        if (!both) throw err;
        Deno.linkSync(both.from, both.to);
        named = both.to;
      }
    } catch {
      removeDirs(made);
      return openOrThrow(from, reg.flags, "file"); // the old name is taken again
    }
    try {
      return openOrThrow(to, reg.flags, "file");
    } finally {
      Deno.removeSync(named);
      removeDirs(made);
    }
  }

  /**
   * Where criu reaches names `a` and `b` (on two mounts of one file system) through one mount
   * of the tree's namespaces that shows both, if one does.
   */
  #showingBoth(a: PlacedName, b: PlacedName): { from: string; to: string } | undefined {
    const all = [
      ...(this.#dump.mntNs?.entries ?? []),
      ...[...this.#dump.nestedMnts.values()].flat(),
    ];
    const byId = new Map(all.map((e) => [e.mntId, e]));
    // A name's path in its file system: its mount's root, then its place below the mount.
    const inFs = (r: PlacedName) => {
      const m = r.mntId === undefined ? undefined : byId.get(r.mntId);
      if (!m || !within(r.name, m.mountpoint)) return undefined;
      const rest = m.mountpoint === "/" ? r.name : r.name.slice(m.mountpoint.length);
      return { dev: m.rootDev, path: `${m.root === "/" ? "" : m.root}${rest}` };
    };
    const [fa, fb] = [inFs(a), inFs(b)];
    if (!fa || !fb || fa.dev !== fb.dev) return undefined;
    const w = all.find((m) =>
      m.rootDev === fa.dev && within(fa.path, m.root) && within(fb.path, m.root)
    );
    if (!w) return undefined;
    const place = (p: string) =>
      `${w.mountpoint === "/" ? "" : w.mountpoint}${p.slice(w.root === "/" ? 0 : w.root.length)}`;
    return {
      from: this.#atMount(place(fa.path), w.mntId),
      to: this.#atMount(place(fb.path), w.mntId),
    };
  }

  /**
   * A file in flight in a unix queue: made like any other; a unix socket named by its inode
   * (made with the others, then sent).
   */
  #inFlight(id: number): number | { unix: number } {
    const f = this.#entry(id);
    if (f.type === fd_types.UNIXSK) return { unix: f.usk!.ino };
    return this.file(id, -1, 0);
  }

  /** pidfds of processes that are gone, by the inode they shared. */
  readonly #deadPidfds = new Map<number, number>();

  /**
   * A pidfd of a process that is gone: of a process made for it and killed at once (one per
   * dumped inode, so that pidfds of one dead process stay one).
   */
  #deadPidfd(e: pidfd_entry): number {
    let base = this.#deadPidfds.get(e.ino);
    if (base === undefined) {
      const child = new Deno.Command("sleep", { args: ["600"], stdin: "null", stdout: "null" })
        .spawn();
      try {
        base = pidfdOpen(child.pid, e.flags & O.NONBLOCK);
      } finally {
        child.kill("SIGKILL");
      }
      this.#deadPidfds.set(e.ino, base);
    }
    return fcntl(base!, F.DUPFD_CLOEXEC, 3);
  }

  /** memfds made here, by inode id. */
  readonly #memfds = new Map<bigint, number>();

  /** memfd inodes whose memfd_create() description went to a read-write entry already. */
  readonly #memfdOriginalGiven = new Set<bigint>();

  /**
   * A memfd description: the inode is made once (name, contents, size, owner and mode, then
   * seals). As criu does, the first read-write descriptor, and every writable mapping, get the
   * memfd_create() description itself: it does not count as open for writing, so that
   * execveat() of the memfd works as before. Other entries are opened through /proc with their
   * flags and offset.
   */
  #memfd(f: file_entry, mapping: boolean, access?: number): number {
    const m = f.memfd!;
    const ino = BigInt(m.inodeId);
    let base = this.#memfds.get(ino);
    const inode = this.#dump.memfds.get(ino);
    if (!inode) throw new RestoreError(`memfd inode ${ino} is missing from memfd.img`);
    const what = `memfd ${inode.name}`;
    if (base === undefined) {
      const MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2, MFD_HUGETLB = 4, HUGE_SIZE = 0x3f << 26;
      // A hugetlb memfd (criu's images keep anonymous hugetlb memory so too): its page size
      // in the flags' top bits, as mmap's; it takes no write(2): filled through a mapping.
      const huge = inode.hugetlbFlag ? MFD_HUGETLB | (inode.hugetlbFlag & HUGE_SIZE) : 0;
      const name = cStringOf(inode.name);
      base = Number(
        syscall(
          NR.memfd_create,
          "memfd_create",
          inode.name,
          addressOf(name),
          MFD_CLOEXEC | MFD_ALLOW_SEALING | huge,
        ),
      );
      this.#memfds.set(ino, base);
      if (huge) {
        syscall(NR.ftruncate, "ftruncate", what, base, inode.size);
        const fd = base;
        withSharedMapping(
          base,
          inode.size,
          what,
          (bytes) => writeShmemImage(this.#dump, BigInt(inode.shmid), fd, what, bytes),
        );
      } else writeShmemImage(this.#dump, BigInt(inode.shmid), base, what);
      syscall(NR.ftruncate, "ftruncate", what, base, inode.size);
      syscall(
        NR.fchown,
        "fchown",
        what,
        base,
        outsideUid(this.#dump, inode.uid, what),
        outsideGid(this.#dump, inode.gid, what),
      );
      if (isFieldSet(inode, memfd_inode_entrySchema.field.mode)) {
        syscall(NR.fchmod, "fchmod", what, base, inode.mode);
      }
      const F_ADD_SEALS = 1033;
      if (inode.seals) fcntl(base, F_ADD_SEALS, inode.seals);
    }
    const flags = (access === undefined ? m.flags & ~NOT_REPLAYED : access) | O.CLOEXEC;
    const rw = (flags & 3) === O.RDWR;
    if (rw && (mapping || !this.#memfdOriginalGiven.has(ino))) {
      if (!mapping) this.#memfdOriginalGiven.add(ino);
      const fd = fcntl(base, F.DUPFD_CLOEXEC, 3);
      if (!mapping) {
        fcntl(fd, F.SETFL, m.flags & SETFL_MASK);
        lseek(fd, m.pos, SEEK_SET);
      }
      return fd;
    }
    const fd = openHere(`/proc/self/fd/${base}`, flags);
    if (m.pos > 0n) lseek(fd, m.pos, SEEK_SET);
    return fd;
  }

  /**
   * A descriptor of memfd file `id` to map it through, with `access` (O_RDONLY or O_RDWR) when
   * the images say how the mapping's descriptor was opened.
   */
  mappedMemfd(id: number, access?: number): number {
    const key = `memfd-map:${id}:${access}`;
    let fd = this.#service.get(key);
    if (fd === undefined) {
      fd = this.#memfd(this.#entry(id), true, access);
      this.#service.set(key, fd);
    }
    return fd;
  }

  /**
   * A descriptor of file `id` to map it through, opened with `flags` (the mapping's access):
   * a deleted file through its ghost or its link remap, any other by its name (shared).
   */
  mappedFile(id: number, flags: number): number {
    const reg = this.#entry(id).reg;
    if (!reg) throw new RestoreError(`File ${id} of a mapping is missing from files.img`);
    const key = `map:${flags}:${id}`;
    let fd = this.#service.get(key);
    if (fd !== undefined) return fd;
    const as = { ...reg, flags, pos: 0n };
    if (this.#dump.ghosts.has(id)) fd = this.#ghost(id, this.#entry(id), as);
    else fd = this.#linked(id, as) ?? this.service(this.#at(reg.name, reg), flags, "mapped file");
    this.#service.set(key, fd);
    return fd;
  }

  /** Named pipes opened here, by inode: a read-write descriptor that keeps each alive. */
  readonly #fifos = new Map<number, number>();

  /**
   * An end of a named pipe. Opening one end of a FIFO blocks until the other is open, so a
   * read-write descriptor is opened first (it never blocks); it also refills the queued data.
   */
  #fifoEnd(f: file_entry): number {
    const fe = f.fifo!;
    const reg = this.#dump.files.get(fe.regfId ?? 0)?.reg;
    if (!reg) throw new RestoreError(`The path of FIFO ${fe.pipeId} is missing from files.img`);
    let keeper = this.#fifos.get(fe.pipeId);
    if (keeper === undefined) {
      keeper = openOrThrow(this.#at(reg.name, reg), O.RDWR | O.NONBLOCK, "FIFO");
      this.#fifos.set(fe.pipeId, keeper);
      const content = this.#dump.fifoData.get(fe.pipeId);
      if (content?.size) fcntl(keeper, F.SETPIPE_SZ, content.size);
      if (content?.data.length) writeAll(keeper, content.data, `FIFO ${reg.name}`);
    }
    const fd = openOrThrow(this.#at(reg.name, reg), reg.flags | O.NONBLOCK, "FIFO");
    fcntl(fd, F.SETFL, reg.flags & SETFL_MASK);
    return fd;
  }

  /** Unix sockets made here, by inode (a pair is made at once). */
  readonly #unix = new Map<number, number>();

  #unixImage(f: file_entry, referenced: Set<number>): UnixSocketImage {
    const u = f.usk!;
    return {
      ino: u.ino,
      type: u.type,
      state: u.state,
      peer: u.peer,
      name: u.name,
      backlog: u.backlog,
      shutdown: u.shutdown ?? 0,
      opts: commonOptionsOf(u.opts),
      // Descriptors in flight are opened here and sent with their message.
      queue: (this.#dump.skQueues.get(f.id) ?? []).map((m) => ({
        data: m.data,
        fds: m.rights.map((id) => this.#inFlight(id)),
      })),
      pending: !referenced.has(f.id),
      external: (u.uflags & USK_EXTERN) !== 0,
      ns: this.#nets?.socketsFor(f, `unix socket:[${u.ino}]`),
      file: u.filePerms || u.nameDir || u.deleted
        ? {
          mode: u.filePerms?.mode,
          uid: u.filePerms && outsideUid(this.#dump, u.filePerms.uid, `socket ${u.name}`),
          gid: u.filePerms && outsideGid(this.#dump, u.filePerms.gid, `socket ${u.name}`),
          dir: u.nameDir,
          deleted: u.deleted ?? false,
        }
        : undefined,
    };
  }

  /** A unix socket; every unix socket of the dump is made on the first one asked for. */
  #unixSocket(f: file_entry): number {
    const u = f.usk!;
    if (!this.#unix.size) {
      // (A socket only in flight is no connection waiting to be accepted.)
      const referenced = new Set([
        ...this.#dump.tasks.flatMap((t) => t.fds.map((x) => x.id)),
        ...[...this.#dump.skQueues.values()].flat().flatMap((m) => m.rights),
      ]);
      const all = [...this.#dump.files.values()].filter((x) => x.usk);
      const images = all.map((x) => this.#unixImage(x, referenced));
      // Bound and connected at their names in the tree's own mount namespace, if it has one;
      // their files made as the root of its user namespace, if it has one (a file system of
      // that namespace refuses files of ids it does not map).
      const made = asRootOf(
        this.#dump.userns,
        () =>
          this.#dump.fsRoot
            ? withRootAt(this.#dump.fsRoot, () => makeUnixSockets(images))
            : makeUnixSockets(images),
      );
      for (const [ino, fd] of made) {
        this.#unix.set(ino, fd);
      }
    }
    const fd = this.#unix.get(u.ino);
    if (fd === undefined) throw new RestoreError(`Unix socket:[${u.ino}] could not be made`);
    const fl = u.flags & SETFL_MASK;
    if (fl) fcntl(fd, F.SETFL, fl);
    return fd;
  }

  /** Sockets bound with SO_REUSEPORT for a shared port: their own setting, given back last. */
  readonly #reuseport: { fd: number; on: boolean }[] = [];

  /** Ports bound by more than one inet socket of the dump (family, address, port, type). */
  #sharedPortSet?: Set<string>;
  #sharedPorts(): Set<string> {
    if (!this.#sharedPortSet) {
      const seen = new Set<string>();
      this.#sharedPortSet = new Set();
      for (const f of this.#dump.files.values()) {
        if (!f.isk || !f.isk.srcPort) continue;
        const key = portKey(inetState(f.isk));
        if (seen.has(key)) this.#sharedPortSet.add(key);
        seen.add(key);
      }
    }
    return this.#sharedPortSet;
  }

  /** A TCP or UDP socket, bound, listening or connected again. */
  #inetSocket(f: file_entry, forFd: number, pid: number): number {
    const isk = f.isk!;
    const what = `fd ${forFd} of task ${pid} (socket:[${isk.ino}])`;
    let state = inetState(isk);
    const conn = isTcpConnection(state);
    let fd;
    try {
      if (conn && this.#tcp.close) {
        // Closed as criu closes it: unbound, and shut down both ways (the kernel records it
        // on an unconnected socket), so that reading gives end-of-file and writing EPIPE.
        state = { ...state, state: TCP_STATE.CLOSE, srcPort: 0, dstPort: 0, shutdown: 3 };
      } else if (conn && !this.#tcp.established) {
        throw new RestoreError(
          `Cannot restore ${what}: it was TCP connection ${connectionText(state)}; restore with ` +
            `--tcp-established (or --tcp-close to restore it closed)`,
        );
      } else if (conn) {
        state.stream = readTcpStream(
          this.#dump.dir.file(tcpStreamImageName(isk.ino)),
          state.state,
        );
      }
      const shared = this.#sharedPorts().has(portKey(state));
      fd = makeInetSocket(state, what, shared);
      if (shared) this.#reuseport.push({ fd, on: state.opts.reuseport });
    } catch (e) {
      if (e instanceof ImageError || e instanceof RestoreError) throw e;
      const msg = e instanceof Error ? e.message : String(e);
      throw new RestoreError(msg.includes(what) ? msg : `Cannot restore ${what}: ${msg}`);
    }
    if (state.stream) {
      const ns = this.#nets?.socketsFor(f, what);
      this.#tcp.conns.hold(fd, isk.ino, state.stream, state.opts, ns);
    }
    const fl = isk.flags & SETFL_MASK;
    if (fl) fcntl(fd, F.SETFL, fl);
    return fd;
  }

  /** One end of a pipe made here and refilled with its dumped data. */
  #pipeEnd(f: file_entry): number {
    const pe = f.pipe!;
    let ends = this.#pipes.get(pe.pipeId);
    if (!ends) {
      ends = pipe2(O.CLOEXEC);
      this.#pipes.set(pe.pipeId, ends);
      const content = this.#dump.pipeData.get(pe.pipeId);
      if (content?.size) {
        try {
          fcntl(ends[1], F.SETPIPE_SZ, content.size);
        } catch (e) {
          throw new RestoreError(
            `Cannot give pipe ${pe.pipeId} its size of ${content.size} bytes`,
            {
              cause: e,
            },
          );
        }
      }
      if (content?.data.length) writeAll(ends[1], content.data, `pipe ${pe.pipeId}`);
    }
    // Each file entry is its own description: a second one of the same end is a reopen.
    const end = (pe.flags & O.ACCMODE) === O.RDONLY ? 0 : 1;
    let fd = ends[end];
    if ([...this.#byId.values()].includes(fd)) {
      fd = openHere(`/proc/self/fd/${ends[end]}`, (end ? O.WRONLY : O.RDONLY) | O.CLOEXEC);
    }
    const fl = pe.flags & SETFL_MASK;
    if (fl) fcntl(fd, F.SETFL, fl);
    return fd;
  }

  /** Removes the names the deleted files made again had during the restore. */
  #dropGhostNames(): void {
    for (const path of this.#ghostPaths.values()) {
      try {
        Deno.removeSync(path);
      } catch {
        // gone already
      }
    }
    this.#ghostPaths.clear();
    this.#ghostNames.clear();
  }

  /** Closes every descriptor made. Idempotent. */
  close(): void {
    const all = new Set([
      ...this.#byId.values(),
      ...this.#service.values(),
      ...[...this.#pipes.values()].flat(),
    ]);
    for (const fd of [...this.#fifos.values(), ...this.#memfds.values()]) all.add(fd);
    for (const fd of this.#deadPidfds.values()) all.add(fd);
    for (const fd of this.#madeTun.values()) all.add(fd);
    for (const fd of all) close(fd);
    this.#deadPidfds.clear();
    this.#madeTun.clear();
    this.#byId.clear();
    this.#service.clear();
    this.#pipes.clear();
    this.#unix.clear();
    this.#fifos.clear();
    this.#memfds.clear();
    this.#ptys.close();
    this.#dropGhostNames();
    this.#watchers.length = 0; // their descriptors are in #byId
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Writes the dumped pages of shmem object `shmid` (shared memory, a memfd) at their offsets
 * into `fd`; returns the number of pages.
 */
export function writeShmemImage(
  dump: DumpImages,
  shmid: bigint,
  fd: number,
  what: string,
  into?: Uint8Array,
): number {
  const content = dump.shmem.get(shmid);
  if (!content) return 0;
  return readShmemRuns(content, (offset, bytes) => {
    if (into) into.set(bytes, Number(offset));
    else pwriteAll(fd, bytes, offset, what);
  });
}

/**
 * How criu names a file for --inherit-fd: `pipe:[INO]`, `socket:[INO]`, or a regular file's
 * path without its leading slash.
 */
export function inheritKey(f: file_entry): string {
  if (f.pipe) return `pipe:[${f.pipe.pipeId}]`;
  if (f.usk) return `socket:[${f.usk.ino}]`;
  if (f.isk) return `socket:[${f.isk.ino}]`;
  if (f.reg) return f.reg.name.replace(/^\//, "");
  return "";
}

/** unix_sk_entry uflags: a socket outside the tree (criu's USK_EXTERN). */
export const USK_EXTERN = 1;

/** Whether file entry `f` is a pidfd of a live process (made inside its task, after the tree). */
export function isLivePidfd(f: file_entry | undefined): boolean {
  return f?.type === fd_types.PIDFD && (f.pidfd?.nspid ?? 0) > 0;
}

/** The key of the port an inet socket binds: family, address, port and socket type. */
function portKey(s: InetSocketState): string {
  return `${s.family}/${s.type}/${s.srcAddr.join(".")}/${s.srcPort}`;
}

/** The PID a /proc path names, when it names a task's own directory (/proc/PID/...). */
function procPidOf(path: string): number | undefined {
  const m = /^\/proc\/(\d+)(\/|$)/.exec(path);
  return m ? Number(m[1]) : undefined;
}

/** Whether `path` is a /proc file of a task of the dump (it names that task once restored). */
export function isTreeProcFile(path: string, dump: DumpImages): boolean {
  const pid = procPidOf(path);
  return pid !== undefined &&
    dump.tasks.some((t) => t.pstree.pid === pid || t.pstree.threads.includes(pid));
}

/**
 * Whether file entry `f` is made inside its task once every task exists (restoreLateFiles):
 * a pidfd of a live task, or a /proc file of a task of the dump.
 */
export function isLateFile(
  f: file_entry | undefined,
  dump: DumpImages,
  task?: TaskImages,
): boolean {
  return isLivePidfd(f) || isControllingTtyFile(f, dump) ||
    (f?.type === fd_types.REG && !!f.reg && !dump.ghosts.has(f.id) &&
      (isTreeProcFile(f.reg.name, dump) ||
        (task !== undefined && onAnotherNestedNamespace(f.reg, dump, task))));
}

/**
 * Whether file `reg` of task `task` is on a mount of a nested mount namespace other than the
 * task's: that namespace is made by a task of its own, perhaps after this one, so the file is
 * opened once every task exists (and handed to the task).
 */
export function onAnotherNestedNamespace(
  reg: reg_file_entry,
  dump: DumpImages,
  task: TaskImages,
): boolean {
  if (!isFieldSet(reg, reg_file_entrySchema.field.mntId)) return false;
  const ns = mountNamespaces(dump).get(reg.mntId);
  return ns !== undefined && ns !== task.ids?.mntNsId && dump.nestedMnts.has(ns);
}

/** Removes directories `dirs` (made parents first), deepest first; never throws. */
function removeDirs(dirs: readonly string[]): void {
  for (const dir of [...dirs].reverse()) {
    try {
      Deno.removeSync(dir);
    } catch {
      // not empty, or gone
    }
  }
}

/** A name of the tree, with the mount it is on when the images say. */
interface PlacedName {
  name: string;
  mntId?: number;
}

/** The mount file entry `reg` was on, when the images say (criu's mnt_id). */
function mntIdOf(reg: reg_file_entry): number | undefined {
  return isFieldSet(reg, reg_file_entrySchema.field.mntId) ? reg.mntId : undefined;
}

/**
 * The mount link remap `link` of file `reg` is on: its own (ours name it), else the file's (criu
 * names none: it makes its links on the mount of the file's name).
 */
export function linkMount(link: reg_file_entry, reg?: reg_file_entry): number | undefined {
  return mntIdOf(link) ?? (reg && mntIdOf(reg));
}
