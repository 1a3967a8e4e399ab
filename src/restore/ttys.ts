/**
 * Pseudo-terminals made again: every pty of the images (its master at the same index, its slave
 * descriptors, settings, window size, owner, unread bytes, exclusive, packet and lock modes; a
 * slave whose master had closed, hung up again), then each session leader's controlling
 * terminal (taken inside the task, before it makes its children) and the foreground groups.
 *
 * @module
 */
import { isFieldSet } from "../images/protobuf.ts";
import {
  fd_types,
  type file_entry,
  type tty_info_entry,
  tty_info_entrySchema,
  TtyType,
} from "../../proto/gen/files_pb.ts";
import { fstype } from "../../proto/gen/misc_pb.ts";
import {
  close,
  Errno,
  F,
  fcntl,
  NR,
  O,
  ptyIndex,
  setExclusiveMode,
  setLockedTermios,
  setPacketMode,
  setPtyLocked,
  setTermios,
  setWinsize,
  strerror,
  tryOpen,
  TTY_REMOTE,
  userDev,
} from "../syscalls/mod.ts";
import { refillPty } from "../tty/queues.ts";
import { termiosOf } from "../tty/termios_image.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import type { RemoteArena } from "./arena.ts";
import { type DumpImages, outsideGid, outsideUid } from "./images.ts";
import { NOT_REPLAYED, RestoreError, SETFL_MASK } from "./files.ts";

/** criu's tty-info id of /dev/tty. */
const CTTY_ID = 2012;

/** The slave of pty `p`, as the tree names it. */
function ptsPath(p: { index: number; dir: string }): string {
  return `${p.dir}/${p.index}`;
}

/** A pty being made: its master, the slave we hold, the tty-info of both sides. */
interface Pty {
  index: number;
  /** Its devpts instance: where the tree sees it, and where criu reaches it (see devptsOf). */
  dir: string;
  at: string;
  master: number;
  /** Our own descriptor of the slave (settings and queues), closed at the end. */
  anchor?: number;
  ptm?: tty_info_entry;
  pts?: tty_info_entry;
}

/** Whether pty `p` is a slave whose master is outside the tree and alive (its entry has termios). */
function masterOutside(p: Pty): boolean {
  return !p.ptm && p.pts !== undefined && isFieldSet(p.pts, tty_info_entrySchema.field.termios);
}

/** Whether file entry `f` is a pty side made here (not the shell's terminal, not /dev/tty). */
export function isMadePty(f: file_entry, dump: DumpImages, orphans = false): boolean {
  if (f.type !== fd_types.TTY || !f.tty) return false;
  const id = f.tty.ttyInfoId;
  const info = dump.ttys.find((t) => t.id === id);
  if (!info || info.type !== TtyType.PTY) return false;
  if (id & 1) return true;
  // A slave whose master was outside and alive: made anew with `orphans`, else the shell's.
  return orphans || dump.ttys.some((t) => t.id === id + 1) ||
    !isFieldSet(info, tty_info_entrySchema.field.termios);
}

/** Whether file entry `f` is /dev/tty (opened inside its task, once its terminal is there). */
export function isControllingTtyFile(f: file_entry | undefined, dump: DumpImages): boolean {
  const tty = f?.type === fd_types.TTY ? f.tty : undefined;
  if (!tty) return false;
  return dump.ttys.find((t) => t.id === tty.ttyInfoId)?.type === TtyType.CTTY ||
    tty.ttyInfoId === CTTY_ID;
}

/** Whether file entry `f` is the console or a virtual console (opened again by its path). */
export function isOtherTerminal(f: file_entry, dump: DumpImages): boolean {
  if (f.type !== fd_types.TTY || !f.tty) return false;
  const type = dump.ttys.find((t) => t.id === f.tty!.ttyInfoId)?.type;
  return type === TtyType.CONSOLE || type === TtyType.VT;
}

/** The ptys of a restore, made all at once on first need. */
export class PtyTable implements Disposable {
  readonly #dump: DumpImages;
  readonly #ptys = new Map<number, Pty>();
  /** Our descriptors of the file entries, by file id. */
  readonly #files = new Map<number, number>();
  #made = false;
  /**
   * Whether a slave whose master was outside gets a new master (orphan_pts_master), held for
   * the caller, rather than being the shell's terminal.
   */
  readonly orphans: boolean;

  constructor(dump: DumpImages, orphans = false) {
    this.#dump = dump;
    this.orphans = orphans;
  }

  /** The new masters of the slaves whose masters were outside (with `orphans`). */
  orphanMasters(): number[] {
    this.#make();
    return [...this.#ptys.values()].filter((p) => !p.ptm && p.master >= 0).map((p) => p.master);
  }

  /** Our descriptor of pty file entry `f` (made with every other pty on first call). */
  file(f: file_entry): number {
    this.#make();
    const fd = this.#files.get(f.id);
    if (fd === undefined) throw new RestoreError(`Terminal file ${f.id} was not made`);
    return fd;
  }

  #make(): void {
    if (this.#made) return;
    this.#made = true;
    const byIndex = new Map<number, Pty>();
    for (const t of this.#dump.ttys) {
      if (t.type !== TtyType.PTY) continue;
      const index = t.pty?.index ?? t.id >> 1;
      const p = byIndex.get(index) ?? { index, master: -1, dir: "/dev/pts", at: "" };
      if (t.id & 1) p.ptm = t;
      else p.pts = t;
      byIndex.set(index, p);
    }
    const ptyFiles = [...this.#dump.files.values()].filter((f) =>
      isMadePty(f, this.#dump, this.orphans)
    );
    for (const p of [...byIndex.values()].sort((a, b) => a.index - b.index)) {
      // A slave whose master is elsewhere and alive is the shell's terminal, or gets a new one.
      if (masterOutside(p) && !this.orphans) continue;
      Object.assign(p, this.#devptsOf(p));
      this.#ptys.set(p.index, p);
      this.#makePty(p, ptyFiles.filter((f) => (f.tty!.ttyInfoId >> 1) === p.index));
    }
  }

  /**
   * The devpts instance of pty `p`: criu's /dev/pts, or one of the tree's own mount namespace
   * (made anew there, reached through its root) when a side of it was of that instance (its
   * device), or a master alone where the namespace has one at /dev/pts.
   */
  #devptsOf(p: Pty): { dir: string; at: string } {
    const ns = this.#dump.mntNs?.entries.filter((e) => e.fstype === fstype.DEVPTS) ?? [];
    const dev = (p.pts ?? p.ptm)?.dev;
    const own = ns.find((e) => dev !== undefined && userDev(e.rootDev) === dev) ??
      (!p.pts ? ns.find((e) => e.mountpoint === "/dev/pts") : undefined);
    return own ? { dir: own.mountpoint, at: this.#dump.fsRoot } : { dir: "/dev/pts", at: "" };
  }

  #makePty(p: Pty, files: file_entry[]): void {
    const what = `pty ${ptsPath(p)}`;
    // Made already with the mounts when a mount binds its slave (a console), else now.
    const premade = this.#dump.premadePtys.get(ptsPath(p));
    this.#dump.premadePtys.delete(ptsPath(p));
    p.master = premade ?? openPtmxAt(p);
    setPtyLocked(p.master, false, what);
    const info = p.ptm ?? p.pts!;
    const termios = info.termios && termiosOf(info.termios);
    if (termios) setTermios(p.master, termios, what);
    const locked = info.termiosLocked && termiosOf(info.termiosLocked);
    if (
      locked &&
      (locked.iflag || locked.oflag || locked.cflag || locked.lflag || locked.cc.some((c) => c))
    ) {
      setLockedTermios(p.master, locked, what);
    }
    if (info.winsize) {
      const w = info.winsize;
      setWinsize(p.master, [w.wsRow, w.wsCol, w.wsXpixel, w.wsYpixel], what);
    }
    const slaves = files.filter((f) => !(f.tty!.ttyInfoId & 1));
    // The slave is ours while the pty is made; closed at the end, it stays closed for the master
    // as it was (a locked pty's never was open).
    if (!p.ptm?.locked || slaves.length) {
      p.anchor = openTty(p.at + ptsPath(p), O.RDWR, what);
      // The slave's node keeps its owner and mode (a slave nobody holds, grantpt()'s).
      if (p.pts && isFieldSet(p.pts, tty_info_entrySchema.field.uid)) {
        Deno.chownSync(
          p.at + ptsPath(p),
          outsideUid(this.#dump, p.pts.uid, what),
          outsideGid(this.#dump, p.pts.gid, what),
        );
      }
      const reg = slaves.map((f) => this.#dump.files.get(f.tty!.regfId)?.reg).find((r) => r?.mode);
      if (reg?.mode) Deno.chmodSync(p.at + ptsPath(p), reg.mode & 0o7777);
    }
    for (const f of slaves) this.#files.set(f.id, openTty(p.at + ptsPath(p), f.tty!.flags, what));
    if (p.ptm && termios) {
      const input = this.#dump.ttyData.find((d) => d.ttyId === p.ptm!.id - 1)?.data;
      const output = this.#dump.ttyData.find((d) => d.ttyId === p.ptm!.id)?.data;
      if (input?.length || output?.length) {
        refillPty(p.master, p.anchor, termios, {
          input: input ?? new Uint8Array(0),
          output: output ?? new Uint8Array(0),
        }, what);
      }
    }
    if (p.pts?.exclusive && p.anchor !== undefined) setExclusiveMode(p.anchor, true, what);
    if (p.ptm?.packetMode) setPacketMode(p.master, true, what);
    if (p.ptm?.locked) setPtyLocked(p.master, true, what);
    for (const f of files.filter((f) => f.tty!.ttyInfoId & 1)) {
      const fl = f.tty!.flags & SETFL_MASK;
      if (fl) fcntl(p.master, F.SETFL, fl);
      this.#files.set(f.id, p.master);
    }
    // (A new master for one whose master is outside is kept: it goes to the caller.)
    if (!p.ptm && !masterOutside(p)) {
      // Its master had closed: closing ours hangs the slaves up, as they were.
      close(p.master);
      p.master = -1;
      if (p.anchor !== undefined) close(p.anchor);
      p.anchor = undefined;
    }
  }

  /**
   * Inside session leader `pid` (just after setsid, before its children): takes its pty as its
   * controlling terminal, when one of the images says it controls its session.
   */
  takeControllingTerminal(rs: RemoteSyscalls, arena: RemoteArena, pid: number): void {
    // An external terminal (given with --inherit-fd): through the task's own descriptor of it.
    const ext = this.#dump.ttys.find((t) => t.type === TtyType.EXT_TTY && t.sid === pid);
    if (ext) {
      const task = this.#dump.tasks.find((t) => t.pstree.pid === pid);
      const fdi = task?.fds.find((f) => this.#dump.files.get(f.id)?.tty?.ttyInfoId === ext.id);
      if (!fdi) throw new RestoreError(`Task ${pid} holds no descriptor of its terminal`);
      const ret = rs.call(NR.ioctl, fdi.fd, TTY_REMOTE.TIOCSCTTY, 0);
      if (ret < 0n) {
        throw new Errno("TIOCSCTTY", Number(-ret), `the external terminal of task ${pid}`);
      }
      return;
    }
    const info = this.#dump.ttys.find((t) =>
      t.sid === pid && isFieldSet(t, tty_info_entrySchema.field.termios) &&
      ((t.type === TtyType.PTY && (t.id & 1 || this.#orphanSlave(t))) ||
        t.type === TtyType.VT || t.type === TtyType.CONSOLE)
    );
    if (!info) return;
    let name: string | undefined;
    if (info.type === TtyType.PTY) {
      this.#make();
      const p = this.#ptys.get(info.pty?.index ?? info.id >> 1);
      if (!p) throw new RestoreError(`Cannot find the pty of session ${pid}`);
      name = ptsPath(p);
    } else {
      const file = [...this.#dump.files.values()].find((f) => f.tty?.ttyInfoId === info.id);
      name = file && this.#dump.files.get(file.tty!.regfId)?.reg?.name;
      if (!name) throw new RestoreError(`Cannot find the terminal of session ${pid}`);
    }
    const path = arena.cstr(name);
    const what = `controlling terminal ${name} of task ${pid}`;
    const fd = rs.call(NR.openat, -100, path, O.RDWR | O.NOCTTY | O.CLOEXEC, 0);
    if (fd < 0n) throw new Errno("open", Number(-fd), what);
    try {
      const ret = rs.call(NR.ioctl, fd, TTY_REMOTE.TIOCSCTTY, 0);
      if (ret < 0n) throw new Errno("TIOCSCTTY", Number(-ret), what);
    } finally {
      rs.call(NR.close, fd);
    }
  }

  /** The foreground group of every pty that controls a session, by session. */
  foregroundGroups(): { sid: number; pgrp: number; what: string }[] {
    // A pty given a new master tells them through its slave's entry.
    return [...this.#ptys.values()].map((p) => ({ p, info: p.ptm ?? p.pts }))
      .filter(({ p, info }) => p.master >= 0 && info?.sid && info.pgrp)
      .map(({ p, info }) => ({ sid: info!.sid, pgrp: info!.pgrp, what: `pty ${ptsPath(p)}` }));
  }

  /** Whether `t` is a slave whose master was outside, made here with a new one. */
  #orphanSlave(t: tty_info_entry): boolean {
    return this.orphans && !(t.id & 1) && !this.#dump.ttys.some((m) => m.id === t.id + 1);
  }

  /** Closes our descriptors (the tasks hold theirs). */
  close(): void {
    const all = new Set<number>(this.#files.values());
    for (const p of this.#ptys.values()) {
      if (p.master >= 0) all.add(p.master);
      if (p.anchor !== undefined) all.add(p.anchor);
    }
    // (And those made with the mounts that no file took.)
    for (const fd of [...all, ...this.#dump.premadePtys.values()]) close(fd);
    this.#dump.premadePtys.clear();
    this.#files.clear();
    this.#ptys.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function openTty(path: string, flags: number, what: string): number {
  const fd = tryOpen(path, (flags & ~NOT_REPLAYED) | O.NOCTTY | O.CLOEXEC);
  if (fd < 0) {
    throw new RestoreError(`Cannot open ${path} for ${what}: ${strerror(-fd).toLowerCase()}`);
  }
  return fd;
}

/**
 * A new master of pty `p` at its index, in its devpts instance: ptmx hands out the lowest free
 * index, so the lower free ones are held while it counts up. An index in use is refused.
 */
function openPtmxAt(p: Pty): number {
  return openPtyAt(p.at ? `${p.at}${p.dir}/ptmx` : "/dev/ptmx", p.index, ptsPath(p));
}

/**
 * A new master of the pty at `index` of the devpts instance whose ptmx is `ptmx` (the tree's
 * `name` for it): ptmx hands out the lowest free index, so the lower free ones are held while
 * it counts up. An index in use is refused.
 */
export function openPtyAt(ptmx: string, index: number, name: string): number {
  const held: number[] = [];
  try {
    for (let i = 0; i <= index; i++) {
      const fd = openTty(ptmx, O.RDWR, `pty ${name}`);
      const got = ptyIndex(fd, ptmx);
      if (got === index) return fd;
      held.push(fd);
      if (got > index) break;
    }
  } finally {
    for (const fd of held) close(fd);
  }
  throw new RestoreError(`Cannot restore pty ${name}: its index is in use`);
}

/**
 * Inside a task of the session (only its members may): makes `pgrp` the foreground group of
 * the session's terminal, through /dev/tty.
 */
export function setForegroundGroup(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  pgrp: number,
  what: string,
): void {
  const path = arena.cstr("/dev/tty");
  const value = arena.words([BigInt(pgrp)]);
  const fd = rs.call(NR.openat, -100, path, O.RDWR | O.NOCTTY | O.CLOEXEC, 0);
  if (fd < 0n) throw new Errno("open /dev/tty", Number(-fd), what);
  try {
    const ret = rs.call(NR.ioctl, fd, TTY_REMOTE.TIOCSPGRP, value);
    if (ret < 0n) throw new Errno("TIOCSPGRP", Number(-ret), what);
  } finally {
    rs.call(NR.close, fd);
  }
}
