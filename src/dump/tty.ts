/**
 * Terminals: `ttyKind` tells which terminal a descriptor is (pty master or slave, /dev/tty,
 * console, virtual console), `collectTty` reads each terminal once (settings, window size, lock
 * and packet mode, session and foreground group), and `dumpTtys` checks the tree against them
 * (pairs whole, every task's controlling terminal its session's), takes the unread bytes of
 * each pty pair (and puts them back at once), and writes tty-info.img and tty-data.img.
 *
 * tty-info ids are criu's: a pty's index times two, plus one for the master side; fixed ids for
 * the console, virtual consoles and /dev/tty.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  tty_data_entrySchema,
  tty_info_entrySchema,
  tty_pty_entrySchema,
  TtyType,
  winsize_entrySchema,
} from "../../proto/gen/files_pb.ts";
import {
  close,
  exclusiveMode,
  getLockedTermios,
  getWinsize,
  O,
  packetMode,
  pidfdGetfd,
  pidfdOpen,
  pollNow,
  ptyIndex,
  ptyLocked,
  tryGetTermios,
  tryOpenPtyPeer,
  ttySession,
  withTaskFd,
} from "../syscalls/mod.ts";
import { parseStat, readProcText } from "../tree/proc.ts";
import type { TreeProcess } from "../tree/collect.ts";
import { drainPty, refillPty, TtyQueueError } from "../tty/queues.ts";
import { termiosEntry } from "../tty/termios_image.ts";
import type { DumpContext } from "./context.ts";
import { type FileKind, type TtyInfo, UnsupportedError } from "./file_types.ts";

/** Which kind of terminal a descriptor is. */
export type TtyDriver = "ptm" | "pts" | "ctty" | "console" | "vt" | "ext";

/** criu's tty-info ids of the terminals that are not ptys (external ones from 2026 on). */
export const TTY_IDS = { console: 2004, vt: 2008, ctty: 2012, ext: 2026 } as const;

/** The major number of a Linux dev_t (bits 8-19 and 32-43). */
export function major(rdev: number): number {
  return ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
}

/** The minor number of a Linux dev_t (bits 0-7 and 20-31). */
export function minor(rdev: number): number {
  return (rdev & 0xff) | ((rdev >>> 12) & ~0xff);
}

const TTYAUX_MAJOR = 5, TTY_MAJOR = 4, PTS_MAJOR = 136;

/**
 * Which terminal the character device `st` (descriptor `fd` of task `pid`, `target` its link)
 * is, or undefined when it is no terminal. Terminals we cannot restore are refused.
 */
export function ttyKind(
  pid: number,
  fd: number,
  target: string,
  st: Deno.FileInfo,
  what: string,
  external: string[] = [],
): FileKind | undefined {
  if (!st.isCharDevice) return undefined;
  const rdev = st.rdev ?? 0, maj = major(rdev), min = minor(rdev);
  // `--external tty[RDEV:DEV]`: the restore is given it (--inherit-fd).
  const key = `tty[${rdev.toString(16)}:${(st.dev ?? 0).toString(16)}]`;
  const ext = external.filter((e) => e.startsWith("tty[")).indexOf(key);
  const path = target.replace(/ \(deleted\)$/, "");
  const base = {
    type: "tty" as const,
    path,
    rdev,
    dev: st.dev ?? 0,
    uid: st.uid ?? 0,
    gid: st.gid ?? 0,
    mode: st.mode ?? 0,
  };
  if (ext >= 0) return { ...base, driver: "ext", index: -1, infoId: TTY_IDS.ext + 2 * ext };
  if (maj === TTYAUX_MAJOR && min === 2) {
    const index = withTaskFd(pid, fd, (dup) => ptyIndex(dup, what));
    return { ...base, driver: "ptm", index, infoId: index * 2 + 1 };
  }
  if (maj >= PTS_MAJOR && maj < PTS_MAJOR + 8) {
    const index = (maj - PTS_MAJOR) * 256 + min;
    return { ...base, driver: "pts", index, infoId: index * 2 };
  }
  if (maj === TTYAUX_MAJOR && min === 0) {
    return { ...base, driver: "ctty", index: -1, infoId: TTY_IDS.ctty };
  }
  if (maj === TTYAUX_MAJOR && min === 1) {
    return { ...base, driver: "console", index: -1, infoId: TTY_IDS.console };
  }
  if (maj === TTY_MAJOR && min >= 1 && min <= 63) {
    return { ...base, driver: "vt", index: -1, infoId: TTY_IDS.vt };
  }
  if (maj === TTY_MAJOR || maj === TTYAUX_MAJOR || (maj >= 128 && maj < 136)) {
    throw new UnsupportedError(`Cannot dump ${what}: serial and BSD terminals are not supported`);
  }
  return undefined;
}

/** The terminal behind a task's descriptor, read once per tty-info id. */
export function collectTty(
  ctx: DumpContext,
  pid: number,
  fd: number,
  kind: Extract<FileKind, { type: "tty" }>,
  what: string,
): void {
  if (ctx.ttys.has(kind.infoId)) return;
  const pidfd = pidfdOpen(pid);
  let dup: number;
  try {
    dup = pidfdGetfd(pidfd, fd, pid);
  } finally {
    close(pidfd);
  }
  let keep = false;
  try {
    const termios = tryGetTermios(dup);
    const info: TtyInfo = {
      id: kind.infoId,
      driver: kind.driver,
      path: kind.path,
      rdev: kind.rdev,
      dev: kind.dev,
      uid: kind.uid,
      gid: kind.gid,
      index: kind.index,
      sid: 0,
      pgrp: 0,
      exclusive: false,
      locked: false,
      packet: false,
      hungUp: typeof termios === "number",
      holder: { pid, fd },
    };
    ctx.ttys.set(kind.infoId, info);
    if (typeof termios === "number") return; // hung up: nothing more to read
    info.termios = termios;
    info.lockedTermios = getLockedTermios(dup, what);
    info.winsize = getWinsize(dup, what);
    info.exclusive = exclusiveMode(dup);
    if (kind.driver === "ptm") {
      info.locked = ptyLocked(dup, what);
      info.packet = packetMode(dup, what);
      // The master says for anyone which session its slave controls.
      Object.assign(info, ttySession(dup));
      info.slaveClosed = pollNow(dup).hangup;
    } else {
      // Anything else says it only to its own session: the task's /proc tells.
      const st = parseStat(readProcText(pid, "stat"));
      if (kind.driver === "ctty") info.ctty = st.ttyNr;
      if (st.ttyNr > 0 && (kind.driver === "ctty" || st.ttyNr === kind.rdev)) {
        info.sid = st.sid;
        info.pgrp = st.tpgid > 0 ? st.tpgid : 0;
      }
    }
    if (kind.driver === "ptm" || kind.driver === "pts") {
      info.dupFd = dup;
      keep = true;
    }
  } finally {
    if (!keep) close(dup);
  }
}

/**
 * Checks the tree's terminals, carries the queues of its pty pairs, writes tty-info.img and
 * tty-data.img. `shellJob`: a slave whose master is elsewhere is the shell's terminal.
 */
export function dumpTtys(ctx: DumpContext, processes: TreeProcess[]): void {
  try {
    checkPairs(ctx);
    checkControllingTerminals(ctx, processes);
    const data = carryQueues(ctx);
    writeTtyInfo(ctx);
    if (data.length) {
      const img = ctx.image("tty-data.img", "TTY_DATA");
      for (const d of data) img.entry(tty_data_entrySchema, create(tty_data_entrySchema, d));
    }
  } finally {
    for (const t of ctx.ttys.values()) {
      if (t.dupFd !== undefined) close(t.dupFd);
      t.dupFd = undefined;
    }
  }
}

function ptsName(index: number): string {
  return `/dev/pts/${index}`;
}

/** A slave needs its master in the tree (or is a shell job's terminal), as with criu. */
function checkPairs(ctx: DumpContext): void {
  for (const t of ctx.ttys.values()) {
    if (t.driver === "pts" && !t.hungUp && !ctx.ttys.has(t.id + 1)) {
      if (!ctx.opts.shellJob && !ctx.opts.orphanPtsMaster) {
        throw new UnsupportedError(
          `Cannot dump terminal ${t.path}: its master is not in the dumped tree; dump a shell ` +
            `job with --shell-job (-j)`,
        );
      }
      t.external = true;
    }
    if (
      t.driver === "ptm" && !ctx.ttys.has(t.id - 1) && !t.locked && !t.slaveClosed &&
      ctx.ttys.get(TTY_IDS.ctty)?.ctty !== ptsRdev(t.index)
    ) {
      throw new UnsupportedError(
        `Cannot dump the master of ${ptsName(t.index)}: its slave is open outside the dumped ` +
          `tree, or was never opened`,
      );
    }
  }
}

/** The rdev of a pty slave of index `index`. */
function ptsRdev(index: number): number {
  const maj = PTS_MAJOR + (index >> 8), min = index & 0xff;
  return (maj << 8) | min;
}

/**
 * Every task must have its session's controlling terminal (a restored session leader takes it
 * before it makes its children, who inherit it): one made in the tree (a pty whose master is
 * in it), or, for a shell job, the shell's.
 */
function checkControllingTerminals(ctx: DumpContext, processes: TreeProcess[]): void {
  const ttyOf = new Map<number, number>();
  for (const p of processes) {
    if (p.zombieExit !== undefined) continue;
    ttyOf.set(p.pid, parseStat(readProcText(p.pid, "stat")).ttyNr);
  }
  for (const p of processes) {
    const mine = ttyOf.get(p.pid);
    if (mine === undefined) continue;
    const leader = ttyOf.get(p.sid);
    if (leader === undefined) continue; // the session is led from outside: a shell job
    if (mine !== leader) {
      throw new UnsupportedError(
        `Cannot dump task ${p.pid}: its controlling terminal (${
          mine ? `device ${mine}` : "none"
        }) ` +
          `is not its session leader's (${leader ? `device ${leader}` : "none"}); not supported`,
      );
    }
    if (p.pid !== p.sid || !mine) continue;
    const master = [...ctx.ttys.values()].find((t) =>
      t.driver === "ptm" && ptsRdev(t.index) === mine
    );
    // A console or virtual console of the tree: opened again by its path, it is taken again.
    const other = [...ctx.ttys.values()].find((t) =>
      (t.driver === "vt" || t.driver === "console" || t.driver === "ext") && t.rdev === mine &&
      t.sid === p.pid
    );
    if (other) continue;
    if (master) {
      if (master.sid !== p.pid) {
        throw new UnsupportedError(
          `Cannot dump task ${p.pid}: its controlling terminal ${ptsName(master.index)} says ` +
            `it controls session ${master.sid}`,
        );
      }
      continue;
    }
    if (!ctx.opts.shellJob && !ctx.opts.orphanPtsMaster) {
      throw new UnsupportedError(
        `Cannot dump task ${p.pid}: its controlling terminal (device ${mine}) has its master ` +
          `outside the dumped tree; dump a shell job with --shell-job (-j)`,
      );
    }
  }
}

/**
 * Takes the unread bytes of every pty pair whose master is in the tree and puts them back at
 * once (the tree keeps them, whatever happens next): tty-data entries as criu writes them, the
 * bytes read from one side under that side's tty-info id.
 */
function carryQueues(ctx: DumpContext): { ttyId: number; data: Uint8Array }[] {
  const data: { ttyId: number; data: Uint8Array }[] = [];
  for (const m of ctx.ttys.values()) {
    if (m.driver !== "ptm" || m.hungUp || !m.termios || m.dupFd === undefined) continue;
    const what = `pty ${ptsName(m.index)}`;
    const s = ctx.ttys.get(m.id - 1);
    let slave = s?.dupFd;
    let opened = false;
    if (slave === undefined && m.slaveClosed && !m.locked) {
      // Closed everywhere: opened and closed again here, as it was (the master keeps seeing
      // it closed), to read what it has not read.
      const fd = tryOpenPtyPeer(m.dupFd, O.RDWR | O.NOCTTY | O.CLOEXEC);
      if (fd >= 0) {
        slave = fd;
        opened = true;
      }
    }
    try {
      let queues;
      try {
        queues = drainPty(m.dupFd, slave, m.termios, m.packet, what);
      } catch (e) {
        if (!(e instanceof TtyQueueError)) throw e;
        const taken = (e as TtyQueueError & { queues?: Parameters<typeof refillPty>[3] }).queues;
        if (taken) refillPty(m.dupFd, slave, m.termios, taken, what);
        throw new UnsupportedError(`Cannot dump ${e.message}`);
      }
      refillPty(m.dupFd, slave, m.termios, queues, what);
      if (queues.output.length) data.push({ ttyId: m.id, data: queues.output });
      if (queues.input.length) data.push({ ttyId: m.id - 1, data: queues.input });
      if (queues.input.length || queues.output.length) {
        ctx.log.debug(
          `${what}: ${queues.input.length} bytes of input, ${queues.output.length} of output unread`,
        );
      }
    } finally {
      if (opened) close(slave!);
    }
  }
  return data;
}

const TYPE: Record<TtyDriver, TtyType> = {
  ptm: TtyType.PTY,
  pts: TtyType.PTY,
  ctty: TtyType.CTTY,
  console: TtyType.CONSOLE,
  vt: TtyType.VT,
  ext: TtyType.EXT_TTY,
};

/** tty-info.img: the terminals of the tree. */
function writeTtyInfo(ctx: DumpContext): void {
  if (!ctx.ttys.size) return;
  const img = ctx.image("tty-info.img", "TTY_INFO");
  for (const t of ctx.ttys.values()) {
    const pty = t.driver === "ptm" || t.driver === "pts", slave = t.driver === "pts";
    img.entry(
      tty_info_entrySchema,
      create(tty_info_entrySchema, {
        id: t.id,
        type: TYPE[t.driver],
        locked: t.locked,
        exclusive: t.exclusive,
        packetMode: t.packet,
        sid: ctx.virtGroup(t.sid, `the session of tty ${t.id}`),
        pgrp: ctx.virtGroup(t.pgrp, `the foreground group of tty ${t.id}`),
        rdev: t.rdev,
        termios: t.termios && termiosEntry(t.termios),
        termiosLocked: t.lockedTermios && termiosEntry(t.lockedTermios),
        winsize: t.winsize && create(winsize_entrySchema, {
          wsRow: t.winsize[0],
          wsCol: t.winsize[1],
          wsXpixel: t.winsize[2],
          wsYpixel: t.winsize[3],
        }),
        pty: pty ? create(tty_pty_entrySchema, { index: t.index }) : undefined,
        dev: t.dev,
        // A pty's slave gets its owner again; another terminal's node is not made.
        uid: slave ? ctx.uid(t.uid, `the owner of ${t.path}`) : ctx.seenUid(t.uid),
        gid: slave ? ctx.gid(t.gid, `the group of ${t.path}`) : ctx.seenGid(t.gid),
      }),
    );
  }
}
