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
import { create } from "@bufbuild/protobuf";
import {
  eventfd_file_entrySchema,
  eventpoll_file_entrySchema,
  eventpoll_tfd_entrySchema,
  fd_types,
  fdinfo_entrySchema,
  fh_entrySchema,
  fifo_entrySchema,
  file_entrySchema,
  file_lock_entrySchema,
  fown_entrySchema,
  ghost_file_entrySchema,
  inotify_file_entrySchema,
  inotify_wd_entrySchema,
  memfd_file_entrySchema,
  memfd_inode_entrySchema,
  pipe_data_entrySchema,
  pipe_entrySchema,
  type reg_file_entry,
  reg_file_entrySchema,
  remap_file_path_entrySchema,
  remap_type,
  signalfd_entrySchema,
  sk_opts_entrySchema,
  sk_packet_entrySchema,
  type sk_shutdown,
  termios_entrySchema,
  timerfd_entrySchema,
  timevalSchema,
  tty_file_entrySchema,
  tty_info_entrySchema,
  tty_pty_entrySchema,
  TtyType,
  unix_sk_entrySchema,
  winsize_entrySchema,
} from "../../proto/gen/files_pb.ts";
import {
  close,
  errno,
  F,
  fcntl,
  ioctl,
  KCMP,
  kcmp,
  O,
  pipe2,
  SPLICE_F_NONBLOCK,
  tee,
  tryOpen,
  tryRead,
} from "../syscalls/mod.ts";
import { listFds, parseFdinfo, readProcText } from "../tree/proc.ts";
import {
  collectUnixSocket,
  TCP_LISTEN,
  UnixSocketError,
  type UnixSocketState,
} from "../net/unix.ts";
import { unixSockets } from "../net/unix_diag.ts";
import { type InotifyWatch, inotifyWatches } from "./inotify.ts";
import { dumpShmemObject } from "./shmem.ts";
import type { DumpContext } from "./context.ts";

/** A resource the dump cannot handle; the dump is refused with this message. */
export class UnsupportedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsupportedError";
  }
}

/** What a descriptor refers to. */
export type FileKind =
  | { type: "reg"; path: string; size: bigint; mode: number; ghost?: Ghost }
  | { type: "pipe"; ino: number }
  | { type: "fifo"; ino: number; path: string }
  | { type: "memfd"; ino: number }
  | { type: "tty"; path: string; rdev: number; index: number }
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
  | { type: "eventpoll"; tfds: { fd: number; events: number; data: bigint }[] }
  | { type: "inotify"; watches: InotifyWatch[] }
  | { type: "unix"; ino: number; socket: UnixSocketState };

/** The contents and attributes of an open file that was deleted. */
export interface Ghost {
  data: Uint8Array;
  mode: number;
  uid: number;
  gid: number;
  atime: Date | null;
  mtime: Date | null;
}

/** Largest deleted file whose contents a dump carries, unless --ghost-limit says otherwise. */
export const DEFAULT_GHOST_LIMIT = 1 << 20;

/** Anonymous-inode files that are state, not names: one object per open file description. */
const ANON_KINDS = new Set(["eventfd", "signalfd", "timerfd", "eventpoll", "inotify"]);

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
  /** tty-info id: the pty index with the low bit for the master side (0: slave). */
  id: number;
  rdev: number;
  index: number;
  sid: number;
  pgrp: number;
  exclusive: boolean;
  /** struct termios2: iflag, oflag, cflag, lflag, line, cc[19], ispeed, ospeed. */
  termios: {
    iflag: number;
    oflag: number;
    cflag: number;
    lflag: number;
    line: number;
    cc: number[];
    ispeed: number;
    ospeed: number;
  };
  winsize: [number, number, number, number];
}

/** A task's descriptors, ready to write. */
export interface TaskFiles {
  fds: Fd[];
}

const MAJOR_TTY = new Set([4, 5, 128, 136]);
/** Unix98 pty slaves: majors 136..143 (/dev/pts/N). */
const isPtySlave = (maj: number) => maj >= 136 && maj <= 143;

/** The major number of a Linux dev_t (bits 8-19 and 32-43). */
function major(rdev: number): number {
  return ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
}

const LOCK_FLAG: Record<string, number> = { POSIX: 1, FLOCK: 2, OFDLCK: 1024 };

/** Locks held through descriptor `fd` (fdinfo "lock:" lines), refused without `-l`. */
function collectLocks(ctx: DumpContext, pid: number, fd: number, fileId: number): void {
  const text = readProcText(pid, `fdinfo/${fd}`);
  for (
    const m of text.matchAll(
      /^lock:\s*\d+:\s*(\w+)\s+(\w+)\s+(\w+)\s+(-?\d+)\s+\S+\s+(\d+)\s+(\d+|EOF)/gm,
    )
  ) {
    const [, kind, mode, rw, , start, end] = m;
    const flag = LOCK_FLAG[kind];
    if (!ctx.opts.fileLocks) {
      throw new UnsupportedError(
        `Cannot dump fd ${fd} of task ${pid}: it holds a ${kind} lock; dump with --file-locks (-l)`,
      );
    }
    if (flag === undefined || mode !== "ADVISORY") {
      throw new UnsupportedError(
        `Cannot dump fd ${fd} of task ${pid}: ${mode} ${kind} locks are not supported`,
      );
    }
    const s = BigInt(start);
    // A lock shows on every descriptor of its file; record it once (POSIX: once per process).
    const key = `${kind}:${flag === 1 ? pid : 0}:${fileId}:${start}:${end}`;
    if (ctx.lockKeys.has(key)) continue;
    ctx.lockKeys.add(key);
    ctx.locks.push(
      create(file_lock_entrySchema, {
        flag,
        type: rw === "WRITE" ? 1 : 0,
        pid,
        fd,
        start: s,
        len: end === "EOF" ? 0n : BigInt(end) - s + 1n,
      }),
    );
  }
}

/** Describes what `/proc/PID/fd/N` is, refusing what we cannot dump. */
function describe(ctx: DumpContext, pid: number, fd: number): FileKind {
  const link = `/proc/${pid}/fd/${fd}`;
  const target = Deno.readLinkSync(link);
  const what = `fd ${fd} of task ${pid} (${target})`;
  const shellJob = ctx.opts.shellJob ?? false;
  if (target.startsWith("pipe:[")) return { type: "pipe", ino: Number(target.slice(6, -1)) };
  if (target.startsWith("socket:[")) {
    const ino = Number(target.slice(8, -1));
    ctx.unixSockets ??= unixSockets();
    const info = ctx.unixSockets.get(ino);
    if (!info) {
      throw new UnsupportedError(
        `Cannot dump ${what}: only unix sockets are supported yet (TCP/UDP come with ` +
          `--tcp-established support)`,
      );
    }
    try {
      return { type: "unix", ino, socket: collectUnixSocket(pid, fd, info) };
    } catch (e) {
      if (e instanceof UnixSocketError) throw new UnsupportedError(e.message);
      throw e;
    }
  }
  if (target.startsWith("anon_inode:")) {
    const name = target.slice(11).replace(/^\[|\]$/g, "");
    if (ANON_KINDS.has(name)) return anonKind(name, pid, fd);
    throw new UnsupportedError(
      `Cannot dump ${what}: ${target.slice(11)} descriptors are not supported yet`,
    );
  }
  if (target.startsWith("/memfd:") && target.endsWith(" (deleted)")) {
    const st = Deno.statSync(link);
    const ino = st.ino ?? 0;
    if (!ctx.memfds.has(ino)) {
      const own = tryOpen(link, O.RDONLY | O.CLOEXEC);
      if (own < 0) throw new UnsupportedError(`Cannot open ${what} to read it (errno ${-own})`);
      let seals = 0;
      try {
        seals = fcntl(own, 1034 /* F_GET_SEALS */);
      } catch {
        seals = 0; // made without MFD_ALLOW_SEALING: F_SEAL_SEAL only
      } finally {
        close(own);
      }
      ctx.memfds.set(
        ino,
        create(memfd_inode_entrySchema, {
          name: target.slice(7, -10),
          uid: st.uid ?? 0,
          gid: st.gid ?? 0,
          size: BigInt(st.size),
          shmid: ino,
          seals,
          inodeId: BigInt(ino),
        }),
      );
      dumpShmemObject(ctx, BigInt(ino), link);
    }
    return { type: "memfd", ino };
  }
  if (target.endsWith(" (deleted)") && target.startsWith("/")) {
    const st = Deno.statSync(link);
    if (!st.isFile) {
      throw new UnsupportedError(
        `Cannot dump ${what}: deleted files other than regular ones are not supported`,
      );
    }
    const limit = ctx.opts.ghostLimit ?? DEFAULT_GHOST_LIMIT;
    if (st.size > limit) {
      throw new UnsupportedError(
        `Cannot dump ${what}: the deleted file holds ${st.size} bytes, more than the ghost ` +
          `limit of ${limit}; raise it with --ghost-limit`,
      );
    }
    const ghost: Ghost = {
      data: Deno.readFileSync(link),
      mode: st.mode ?? 0o100600,
      uid: st.uid ?? 0,
      gid: st.gid ?? 0,
      atime: st.atime,
      mtime: st.mtime,
    };
    return {
      type: "reg",
      path: target.slice(0, -10),
      size: BigInt(st.size),
      mode: ghost.mode,
      ghost,
    };
  }
  if (!target.startsWith("/")) {
    throw new UnsupportedError(`Cannot dump ${what}: unsupported file type`);
  }
  const st = Deno.statSync(link);
  if (st.isFifo) return { type: "fifo", ino: st.ino ?? 0, path: target };
  if (st.isSocket) {
    throw new UnsupportedError(`Cannot dump ${what}: unix sockets are not supported yet`);
  }
  if (st.isBlockDevice) {
    throw new UnsupportedError(`Cannot dump ${what}: block devices are not supported`);
  }
  const maj = major(st.rdev ?? 0);
  if (st.isCharDevice && (MAJOR_TTY.has(maj) || isPtySlave(maj))) {
    if (!shellJob) {
      throw new UnsupportedError(
        `Cannot dump ${what}: it is a terminal; dump a shell job with --shell-job (-j)`,
      );
    }
    if (!isPtySlave(maj) || !/^\/dev\/pts\/\d+$/.test(target)) {
      throw new UnsupportedError(`Cannot dump ${what}: only pseudo-terminals are supported`);
    }
    const rdev = st.rdev ?? 0;
    return { type: "tty", path: target, rdev, index: Number(target.slice(9)) };
  }
  return { type: "reg", path: target, size: BigInt(st.size), mode: st.mode ?? 0 };
}

/** The state of an eventfd, signalfd, timerfd or epoll descriptor, from its fdinfo. */
function anonKind(name: string, pid: number, fd: number): FileKind {
  const x = parseFdinfo(readProcText(pid, `fdinfo/${fd}`)).extra;
  const pair = (v: string | undefined): [bigint, bigint] => {
    const m = /\((\d+),\s*(\d+)\)/.exec(v ?? "");
    return m ? [BigInt(m[1]), BigInt(m[2])] : [0n, 0n];
  };
  switch (name) {
    case "eventfd":
      return {
        type: "eventfd",
        counter: BigInt("0x" + (x.get("eventfd-count") ?? "0").trim()),
        semaphore: x.get("eventfd-semaphore") === "1",
      };
    case "signalfd":
      return { type: "signalfd", sigmask: BigInt("0x" + (x.get("sigmask") ?? "0")) };
    case "timerfd":
      return {
        type: "timerfd",
        clockid: Number(x.get("clockid") ?? 0),
        ticks: BigInt(x.get("ticks") ?? "0"),
        settimeFlags: parseInt(x.get("settime flags") ?? "0", 8),
        value: pair(x.get("it_value")),
        interval: pair(x.get("it_interval")),
      };
    case "inotify": {
      const watches = inotifyWatches(readProcText(pid, `fdinfo/${fd}`));
      const lost = watches.find((w) => !w.path);
      if (lost) {
        throw new UnsupportedError(
          `Cannot dump fd ${fd} of task ${pid} (inotify): the file of watch ${lost.wd} ` +
            `(inode ${lost.ino}) cannot be found`,
        );
      }
      return { type: "inotify", watches };
    }
    default: {
      const text = readProcText(pid, `fdinfo/${fd}`);
      const tfds = [
        ...text.matchAll(/^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)/gm),
      ]
        .map((m) => ({ fd: Number(m[1]), events: parseInt(m[2], 16), data: BigInt("0x" + m[3]) }));
      return { type: "eventpoll", tfds };
    }
  }
}

/** Reads every descriptor of task `pid` (frozen), deduplicating shared descriptions. */
export function collectFiles(ctx: DumpContext, pid: number): TaskFiles {
  const fds: Fd[] = [];
  for (const fd of listFds(pid)) {
    const kind = describe(ctx, pid, fd);
    const info = parseFdinfo(readProcText(pid, `fdinfo/${fd}`));
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
      };
      ctx.openFiles.push(file);
    }
    fds.push({ fd, file, cloexec });
    collectLocks(ctx, pid, fd, file.id);
    if (kind.type === "pipe" && !ctx.pipes.has(kind.ino)) {
      ctx.pipes.set(kind.ino, peekPipe(pid, fd, kind.ino));
    }
    if (kind.type === "fifo" && !ctx.fifos.has(kind.ino)) {
      ctx.fifos.set(kind.ino, peekPipe(pid, fd, kind.ino));
    }
    if (kind.type === "tty" && !ctx.ttys.has(kind.rdev)) {
      ctx.ttys.set(kind.rdev, readTty(pid, fd, kind));
    }
    ctx.log.debug(`task ${pid} fd ${fd}: ${kind.type} id ${file.id} flags 0${flags.toString(8)}`);
  }
  for (const { fd, file } of fds) {
    if (file.kind.type !== "eventpoll") continue;
    for (const t of file.kind.tfds) {
      if (!fds.some((f) => f.fd === t.fd)) {
        throw new UnsupportedError(
          `Cannot dump fd ${fd} of task ${pid}: epoll watches fd ${t.fd}, which the task ` +
            `no longer has open`,
        );
      }
    }
  }
  return { fds };
}

function sameObject(a: FileKind, b: FileKind): boolean {
  if (ANON_KINDS.has(a.type)) return a.type === b.type;
  if (a.type === "unix" && b.type === "unix") return a.ino === b.ino;
  if (a.type === "pipe" && b.type === "pipe") return a.ino === b.ino;
  if (a.type === "fifo" && b.type === "fifo") return a.ino === b.ino;
  if (a.type === "memfd" && b.type === "memfd") return a.ino === b.ino;
  if (a.type === "reg" && b.type === "reg") return a.path === b.path;
  if (a.type === "tty" && b.type === "tty") return a.rdev === b.rdev;
  return false;
}

const TCGETS2 = 0x802c542a, TIOCGWINSZ = 0x5413, TIOCGSID = 0x5429, TIOCGPGRP = 0x540f;
const TIOCGEXCL = 0x80045440;

/** Reads a terminal's settings through a descriptor of our own on the same tty. */
function readTty(
  pid: number,
  fd: number,
  kind: { path: string; rdev: number; index: number },
): TtyInfo {
  const path = `/proc/${pid}/fd/${fd}`;
  const own = tryOpen(path, O.RDONLY | O.NOCTTY | O.NONBLOCK | O.CLOEXEC);
  if (own < 0) {
    throw new UnsupportedError(`Cannot open terminal ${kind.path} through ${path} (errno ${-own})`);
  }
  try {
    const t = new Uint8Array(44);
    ioctl(own, TCGETS2, t, kind.path);
    const tv = new DataView(t.buffer);
    const ws = new Uint16Array(4);
    ioctl(own, TIOCGWINSZ, new Uint8Array(ws.buffer), kind.path);
    const int = new Int32Array(1);
    const sid = tryIoctl(own, TIOCGSID, int) ? int[0] : 0;
    const pgrp = tryIoctl(own, TIOCGPGRP, int) ? int[0] : 0;
    const exclusive = tryIoctl(own, TIOCGEXCL, int) ? int[0] !== 0 : false;
    return {
      id: kind.index << 1,
      rdev: kind.rdev,
      index: kind.index,
      sid,
      pgrp,
      exclusive,
      termios: {
        iflag: tv.getUint32(0, true),
        oflag: tv.getUint32(4, true),
        cflag: tv.getUint32(8, true),
        lflag: tv.getUint32(12, true),
        line: t[16],
        cc: [...t.subarray(17, 36)],
        ispeed: tv.getUint32(36, true),
        ospeed: tv.getUint32(40, true),
      },
      winsize: [ws[0], ws[1], ws[2], ws[3]],
    };
  } finally {
    close(own);
  }
}

function tryIoctl(fd: number, req: number, out: Int32Array): boolean {
  try {
    ioctl(fd, req, new Uint8Array(out.buffer), "tty");
    return true;
  } catch {
    return false;
  }
}

/**
 * Copies the bytes queued in a pipe without consuming them: a new read end is opened through
 * /proc (same pipe), and tee(2) duplicates the queue into a private pipe we then drain.
 */
function peekPipe(pid: number, fd: number, ino: number): PipeData {
  const path = `/proc/${pid}/fd/${fd}`;
  const src = tryOpen(path, O.RDONLY | O.NONBLOCK | O.CLOEXEC);
  if (src < 0) {
    throw new UnsupportedError(`Cannot open pipe ${ino} through ${path} (errno ${-src})`);
  }
  const [r, w] = pipe2(O.CLOEXEC | O.NONBLOCK);
  try {
    const size = fcntl(src, F.GETPIPE_SZ);
    fcntl(w, F.SETPIPE_SZ, size);
    const n = tee(src, w, size, SPLICE_F_NONBLOCK);
    if (n < 0 && n !== -errno.EAGAIN) {
      throw new UnsupportedError(`Cannot copy the data of pipe ${ino} (errno ${-n})`);
    }
    const data = new Uint8Array(Math.max(n, 0));
    let off = 0;
    while (off < data.length) {
      const got = tryRead(r, data.subarray(off));
      if (got <= 0) throw new UnsupportedError(`Cannot read the data of pipe ${ino}`);
      off += got;
    }
    return { ino, data, size };
  } finally {
    close(src);
    close(r);
    close(w);
  }
}

const NO_OWNER = () => create(fown_entrySchema, { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 });

/** A reg_file_entry for a path (used for fds, mappings, cwd/root and the exe link). */
export function regFileEntry(
  id: number,
  path: string,
  opts: { flags: number; pos?: bigint; size?: bigint; mode?: number; mntId?: number },
): reg_file_entry {
  return create(reg_file_entrySchema, {
    id,
    flags: opts.flags,
    pos: opts.pos ?? 0n,
    fown: NO_OWNER(),
    name: path,
    mntId: opts.mntId ?? -1,
    size: opts.size,
    mode: opts.mode,
  });
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
  const seen = ctx.filesWritten;
  const fdinfo = ctx.image(`fdinfo-${filesId}.img`, "FDINFO");
  for (const { fd, file, cloexec } of tf.fds) {
    if (!seen.has(file.id)) {
      seen.add(file.id);
      if (file.kind.type === "reg") {
        if (file.kind.ghost) writeGhost(ctx, file.id, file.kind.ghost);
        writeRegFile(
          files,
          regFileEntry(file.id, file.kind.path, {
            flags: file.flags,
            pos: file.pos,
            size: file.kind.size,
            mode: file.kind.mode,
            mntId: file.mntId,
          }),
        );
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
              fown: NO_OWNER(),
              inodeId: file.kind.ino,
            }),
          }),
        );
      } else if (file.kind.type === "fifo") {
        const regfId = ctx.fileId();
        writeRegFile(
          files,
          regFileEntry(regfId, file.kind.path, { flags: file.flags, mntId: file.mntId }),
        );
        files.entry(
          file_entrySchema,
          create(file_entrySchema, {
            type: fd_types.FIFO,
            id: file.id,
            fifo: create(fifo_entrySchema, { id: file.id, pipeId: file.kind.ino, regfId }),
          }),
        );
      } else if (file.kind.type === "unix") {
        files.entry(file_entrySchema, unixEntry(file, file.kind.socket));
        if (file.kind.socket.queue.length) ctx.skQueues.set(file.id, file.kind.socket.queue);
      } else if (ANON_KINDS.has(file.kind.type)) {
        files.entry(file_entrySchema, anonEntry(file, tf));
      } else if (file.kind.type === "tty") {
        files.entry(
          file_entrySchema,
          create(file_entrySchema, {
            type: fd_types.TTY,
            id: file.id,
            tty: create(tty_file_entrySchema, {
              id: file.id,
              ttyInfoId: file.kind.index << 1,
              flags: file.flags,
              fown: NO_OWNER(),
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
              fown: NO_OWNER(),
            }),
          }),
        );
      }
    }
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

const FD_TYPE: Record<FileKind["type"], fd_types> = {
  reg: fd_types.REG,
  pipe: fd_types.PIPE,
  fifo: fd_types.FIFO,
  memfd: fd_types.MEMFD,
  tty: fd_types.TTY,
  eventfd: fd_types.EVENTFD,
  signalfd: fd_types.SIGNALFD,
  timerfd: fd_types.TIMERFD,
  eventpoll: fd_types.EVENTPOLL,
  inotify: fd_types.INOTIFY,
  unix: fd_types.UNIXSK,
};

/** The file entry of a unix socket. */
function unixEntry(file: OpenFile, st: UnixSocketState) {
  const i = st.info;
  return create(file_entrySchema, {
    type: fd_types.UNIXSK,
    id: file.id,
    usk: create(unix_sk_entrySchema, {
      id: file.id,
      ino: i.ino,
      type: i.type,
      state: i.state,
      flags: file.flags,
      uflags: 0,
      // For a listener, sock_diag reports its backlog in the write-queue slot.
      backlog: i.state === TCP_LISTEN ? i.wqueue : 0,
      peer: i.peer,
      fown: NO_OWNER(),
      opts: create(sk_opts_entrySchema, {
        soSndbuf: st.sndbuf,
        soRcvbuf: st.rcvbuf,
        soSndTmoSec: st.sndTimeo[0],
        soSndTmoUsec: st.sndTimeo[1],
        soRcvTmoSec: st.rcvTimeo[0],
        soRcvTmoUsec: st.rcvTimeo[1],
      }),
      name: i.name,
      shutdown: i.shutdown as sk_shutdown,
    }),
  });
}

/** ghost-file-ID.img (the deleted file's contents) and its remap-fpath.img entry. */
function writeGhost(ctx: DumpContext, fileId: number, g: Ghost): void {
  const tv = (d: Date | null) => {
    const ms = d?.getTime() ?? 0;
    return create(timevalSchema, {
      tvSec: BigInt(Math.floor(ms / 1000)),
      tvUsec: BigInt((ms % 1000) * 1000),
    });
  };
  const ghostId = ctx.fileId();
  ctx.image(`ghost-file-${ghostId}.img`, "GHOST_FILE")
    .entry(
      ghost_file_entrySchema,
      create(ghost_file_entrySchema, {
        uid: g.uid,
        gid: g.gid,
        mode: g.mode,
        atim: tv(g.atime),
        mtim: tv(g.mtime),
        size: BigInt(g.data.length),
      }),
    )
    .raw(g.data);
  ctx.remaps.push(
    create(remap_file_path_entrySchema, {
      origId: fileId,
      remapId: ghostId,
      remapType: remap_type.GHOST,
    }),
  );
}

/** Refuses unix sockets whose other side is not in the dump, or that we cannot rebuild. */
function checkUnixSockets(ctx: DumpContext): void {
  const dumped = new Set(
    ctx.openFiles.flatMap((f) => (f.kind.type === "unix" ? [f.kind.ino] : [])),
  );
  for (const f of ctx.openFiles) {
    if (f.kind.type !== "unix") continue;
    const i = f.kind.socket.info;
    const what = `fd ${f.owner.fd} of task ${f.owner.pid} (socket:[${i.ino}])`;
    if (i.state === TCP_LISTEN && i.icons.length) {
      throw new UnsupportedError(
        `Cannot dump ${what}: ${i.icons.length} connections wait to be accepted; not supported yet`,
      );
    }
    if (i.peer && !dumped.has(i.peer)) {
      throw new UnsupportedError(
        `Cannot dump ${what}: its peer socket:[${i.peer}] is outside the dumped tree; ` +
          `--ext-unix-sk is not supported yet`,
      );
    }
    if (i.peer && i.name.length) {
      throw new UnsupportedError(
        `Cannot dump ${what}: connected named unix sockets are not supported yet`,
      );
    }
  }
}

/** The file entry of an eventfd, signalfd, timerfd or epoll description. */
function anonEntry(file: OpenFile, tf: TaskFiles) {
  const base = { id: file.id, fown: NO_OWNER() };
  const k = file.kind;
  switch (k.type) {
    case "eventfd":
      return create(file_entrySchema, {
        type: fd_types.EVENTFD,
        id: file.id,
        // Bit 0 (O_WRONLY) is never set on an eventfd: it carries EFD_SEMAPHORE.
        efd: create(eventfd_file_entrySchema, {
          ...base,
          flags: (file.flags & ~O.ACCMODE) | O.RDWR | (k.semaphore ? 1 : 0),
          counter: k.counter,
        }),
      });
    case "signalfd":
      return create(file_entrySchema, {
        type: fd_types.SIGNALFD,
        id: file.id,
        sgfd: create(signalfd_entrySchema, { ...base, flags: file.flags, sigmask: k.sigmask }),
      });
    case "timerfd":
      return create(file_entrySchema, {
        type: fd_types.TIMERFD,
        id: file.id,
        tfd: create(timerfd_entrySchema, {
          ...base,
          flags: file.flags,
          clockid: k.clockid,
          ticks: k.ticks,
          settimeFlags: k.settimeFlags,
          vsec: k.value[0],
          vnsec: k.value[1],
          isec: k.interval[0],
          insec: k.interval[1],
        }),
      });
    case "inotify":
      return create(file_entrySchema, {
        type: fd_types.INOTIFY,
        id: file.id,
        ify: create(inotify_file_entrySchema, {
          id: file.id,
          flags: file.flags,
          fown: NO_OWNER(),
          wd: k.watches.map((w) => {
            const words = new BigUint64Array(16);
            const padded = new Uint8Array(words.buffer);
            padded.set(w.handle.subarray(0, 128));
            return create(inotify_wd_entrySchema, {
              id: file.id,
              iIno: w.ino,
              mask: w.mask,
              ignoredMask: w.ignoredMask,
              sDev: w.sdev,
              wd: w.wd,
              fHandle: create(fh_entrySchema, {
                bytes: w.handle.length,
                type: w.handleType,
                handle: [...words],
                path: w.path,
              }),
            });
          }),
        }),
      });
    case "eventpoll":
      return create(file_entrySchema, {
        type: fd_types.EVENTPOLL,
        id: file.id,
        epfd: create(eventpoll_file_entrySchema, {
          ...base,
          flags: file.flags,
          tfd: k.tfds.map((t) =>
            create(eventpoll_tfd_entrySchema, {
              id: tf.fds.find((f) => f.fd === t.fd)!.file.id,
              tfd: t.fd,
              events: t.events,
              data: t.data,
            })
          ),
        }),
      });
    default:
      throw new Error(`Not an anonymous-inode file: ${k.type}`);
  }
}

/** Writes what files of the whole tree carry besides their entries: tty-info.img, pipes-data.img. */
export function dumpFileData(ctx: DumpContext): void {
  checkUnixSockets(ctx);
  if (ctx.memfds.size) {
    const img = ctx.image("memfd-inode.img", "MEMFD_INODE");
    for (const m of ctx.memfds.values()) img.entry(memfd_inode_entrySchema, m);
  }
  if (ctx.locks.length) {
    const img = ctx.image("file-lock.img", "FILE_LOCKS");
    for (const l of ctx.locks) img.entry(file_lock_entrySchema, l);
  }
  if (ctx.remaps.length) {
    const img = ctx.image("remap-fpath.img", "REMAP_FPATH");
    for (const r of ctx.remaps) img.entry(remap_file_path_entrySchema, r);
  }
  if (ctx.skQueues.size) {
    const img = ctx.image("sk-queues.img", "SK_QUEUES");
    for (const [id, queue] of ctx.skQueues) {
      for (const m of queue) {
        img.entry(
          sk_packet_entrySchema,
          create(sk_packet_entrySchema, { idFor: id, length: m.length }),
        );
        img.raw(m);
      }
    }
  }
  if (ctx.ttys.size) {
    const img = ctx.image("tty-info.img", "TTY_INFO");
    for (const t of ctx.ttys.values()) {
      img.entry(
        tty_info_entrySchema,
        create(tty_info_entrySchema, {
          id: t.id,
          type: TtyType.PTY,
          locked: false,
          exclusive: t.exclusive,
          packetMode: false,
          sid: t.sid,
          pgrp: t.pgrp,
          rdev: t.rdev,
          termios: create(termios_entrySchema, {
            cIflag: t.termios.iflag,
            cOflag: t.termios.oflag,
            cCflag: t.termios.cflag,
            cLflag: t.termios.lflag,
            cLine: t.termios.line,
            cIspeed: t.termios.ispeed,
            cOspeed: t.termios.ospeed,
            cCc: t.termios.cc,
          }),
          winsize: create(winsize_entrySchema, {
            wsRow: t.winsize[0],
            wsCol: t.winsize[1],
            wsXpixel: t.winsize[2],
            wsYpixel: t.winsize[3],
          }),
          pty: create(tty_pty_entrySchema, { index: t.index }),
        }),
      );
    }
  }
  writePipeData(ctx, "fifo-data.img", "FIFO_DATA", ctx.fifos);
  writePipeData(ctx, "pipes-data.img", "PIPES_DATA", ctx.pipes);
}

/** pipes-data.img or fifo-data.img: each pipe's queued bytes after its entry. */
function writePipeData(
  ctx: DumpContext,
  file: string,
  type: "PIPES_DATA" | "FIFO_DATA",
  pipes: Map<number, PipeData>,
): void {
  if (pipes.size) {
    const img = ctx.image(file, type);
    for (const p of pipes.values()) {
      if (!p.data.length) continue;
      img.entry(
        pipe_data_entrySchema,
        create(pipe_data_entrySchema, { pipeId: p.ino, bytes: p.data.length, size: p.size }),
      );
      img.raw(p.data);
    }
  }
}
