/**
 * What the dump knows about open files: the kinds it handles and the records it keeps, shared
 * by the modules that collect and write them.
 *
 * @module
 */
import { create, type MessageInitShape } from "../images/protobuf.ts";
import {
  type fown_entry,
  fown_entrySchema,
  type sk_opts_entry,
  sk_opts_entrySchema,
} from "../../proto/gen/files_pb.ts";
import { commonOptionsEntry, type CommonSocketOptions } from "../net/sk_opts.ts";
import type { FileOwner, Termios } from "../syscalls/mod.ts";
import type { InotifyWatch } from "./inotify.ts";
import type { FanotifyGroup } from "./fanotify.ts";
import type { UnixSocketState } from "../net/unix.ts";
import type { NetlinkSocketState } from "../net/netlink.ts";
import type { PacketSocketState } from "../net/packet.ts";
import type { InetSocketState } from "../net/inet.ts";
import type { RingImage } from "./io_uring.ts";

/** A resource the dump cannot handle; the dump is refused with this message. */
export class UnsupportedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsupportedError";
  }
}

/** What a descriptor refers to. */

/** A file an epoll set watches, as its fdinfo shows it. */
export interface EpollTarget {
  /** The descriptor number it was added under. */
  fd: number;
  events: number;
  data: bigint;
  target?: { pos: bigint; inode: bigint; dev: number };
  /** A descriptor of the task holding the target, when descriptor `fd` does not. */
  holder?: number;
}

export type FileKind =
  | {
    type: "reg";
    path: string;
    /** Its size, for a regular file (criu checks it at restore). */
    size?: bigint;
    mode: number;
    /** Deleted, no other name: its contents travel in the images. */
    ghost?: Ghost;
    /** Deleted, alive under another name: linked again here for the restore (--link-remap). */
    linkRemap?: string;
    /** Given to the restore (`--external file[...]`, then `--inherit-fd`); `path` is its key. */
    ext?: boolean;
    /** A /proc file of task `deadPid`, which is gone (criu's dead-process remap). */
    deadPid?: number;
  }
  /** A /dev/net/tun file: the device of the tree's namespace it is attached to, if any. */
  | { type: "tun"; path: string; mode: number; netdev?: string; detached: boolean }
  | { type: "pipe"; ino: number }
  | { type: "fifo"; ino: number; path: string; ghost?: Ghost }
  /** (`netNsId`: of a network namespace nested in the tree's, for the sockets.) */
  | { type: "netlink"; ino: number; socket: NetlinkSocketState; netNsId?: number }
  | { type: "packet"; ino: number; socket: PacketSocketState; netNsId?: number }
  /** A pidfd: the process it refers to (-1: gone), and its inode (one per dead process). */
  | { type: "pidfd"; pid: number; ino: number }
  | { type: "memfd"; ino: number }
  | { type: "fanotify"; group: FanotifyGroup }
  /** A namespace (/proc/PID/ns/KIND): its kind and its id in the images. */
  | { type: "ns"; kind: string; nsId: number; cflag: number }
  | {
    type: "tty";
    driver: TtyInfo["driver"];
    path: string;
    rdev: number;
    dev: number;
    uid: number;
    gid: number;
    mode: number;
    /** The pty index; -1 for other terminals. */
    index: number;
    /** Its tty-info id. */
    infoId: number;
  }
  | { type: "eventfd"; counter: bigint; semaphore: boolean }
  | { type: "signalfd"; sigmask: bigint }
  | {
    type: "timerfd";
    clockid: number;
    ticks: bigint;
    settimeFlags: number;
    value: [bigint, bigint];
    interval: [bigint, bigint];
  }
  | { type: "eventpoll"; tfds: EpollTarget[] }
  /** An idle io_uring instance (io_uring.ts). */
  | { type: "io_uring"; ring: RingImage }
  | { type: "inotify"; watches: InotifyWatch[] }
  | { type: "unix"; ino: number; socket: UnixSocketState; netNsId?: number }
  | { type: "inet"; ino: number; socket: InetSocketState; netNsId?: number };

/** The contents and attributes of an open file that was deleted. */
export interface Ghost {
  /** Its inode, which every description of it shares (one ghost image per inode). */
  dev: number;
  /** Its device in the kernel's encoding, as criu writes it (major << 20 | minor). */
  kdev: number;
  ino: number;
  size: number;
  /** Its data segments (holes between them stay holes). */
  chunks: { off: number; data: Uint8Array }[];
  mode: number;
  uid: number;
  gid: number;
  atime: { sec: bigint; nsec: number };
  mtime: { sec: bigint; nsec: number };
  /** A device's number (userspace encoding). */
  rdev?: number;
  /** A symlink's target. */
  symlinkTarget?: string;
}

/** Largest deleted file whose contents a dump carries, unless --ghost-limit says otherwise. */
export const DEFAULT_GHOST_LIMIT = 1 << 20;

/** Anonymous-inode files that are state, not names: one object per open file description. */
export const ANON_KINDS = new Set([
  "eventfd",
  "signalfd",
  "timerfd",
  "eventpoll",
  "inotify",
  "fanotify",
]);

/** One open file description, shared by the descriptors that point at it. */
export interface OpenFile {
  id: number;
  /** The first descriptor found pointing at it (for kcmp). */
  owner: { pid: number; fd: number };
  kind: FileKind;
  /** Open flags without O_CLOEXEC. */
  flags: number;
  pos: bigint;
  mntId: number;
  /** Who gets its I/O signals (F_SETOWN_EX, F_SETSIG), as fown_entry. */
  fown: fown_entry;
}

/** One descriptor of a task. */
export interface Fd {
  fd: number;
  file: OpenFile;
  /** FD_CLOEXEC. */
  cloexec: boolean;
}

/** Pipe contents captured at dump time, by pipe inode. */
export interface PipeData {
  ino: number;
  data: Uint8Array;
  /** Pipe buffer size (F_GETPIPE_SZ). */
  size: number;
}

/** A terminal as the kernel describes it, for tty-info.img. */
export interface TtyInfo {
  /** tty-info id (criu's): a pty's index times two, plus one for the master side. */
  id: number;
  driver: "ptm" | "pts" | "ctty" | "console" | "vt" | "ext";
  /** The path the descriptor names (/dev/ptmx, /dev/pts/N, /dev/tty...). */
  path: string;
  rdev: number;
  /** The device of the node (devpts for a slave). */
  dev: number;
  uid: number;
  gid: number;
  /** The pty index; -1 for other terminals. */
  index: number;
  sid: number;
  pgrp: number;
  exclusive: boolean;
  /** A pty master whose slave may not be opened (unlockpt not called). */
  locked: boolean;
  /** A pty master in packet mode. */
  packet: boolean;
  /** Hung up (a slave whose master closed): nothing more can be read. */
  hungUp: boolean;
  /** A pty master whose slave was opened and is closed everywhere now. */
  slaveClosed?: boolean;
  /** /dev/tty: the terminal it stands for (its holder's controlling terminal), as a dev_t. */
  ctty?: number;
  /** A slave whose master is outside the tree: the shell's terminal (--shell-job). */
  external?: boolean;
  termios?: Termios;
  lockedTermios?: Termios;
  winsize?: [number, number, number, number];
  /** The first descriptor found on it. */
  holder: { pid: number; fd: number };
  /** A copy of that descriptor, kept during the dump for a pty's queues. */
  dupFd?: number;
}

/** A task's descriptors, ready to write. */
export interface TaskFiles {
  fds: Fd[];
}

/** The fown_entry of a file's owner (F_GETOWN_EX, F_GETSIG, F_GETOWNER_UIDS). */
export function ownerEntry(o: FileOwner): fown_entry {
  return create(fown_entrySchema, {
    uid: o.uid,
    euid: o.euid,
    signum: o.signum,
    pidType: o.type,
    pid: o.pid,
  });
}

/** The fown_entry of a file without owner or signal. */
export function noOwner(): ReturnType<typeof create<typeof fown_entrySchema>> {
  return create(fown_entrySchema, { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 });
}

/** A socket's sk_opts_entry: its common options, and the `more` fields of its kind. */
export function skOptsEntry(
  o: CommonSocketOptions,
  more: MessageInitShape<typeof sk_opts_entrySchema> = {},
): sk_opts_entry {
  return create(sk_opts_entrySchema, { ...commonOptionsEntry(o), ...more });
}
