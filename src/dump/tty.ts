/**
 * Terminals of a shell job: `readTty` reads a pseudo-terminal's settings, `writeTtyInfo` writes
 * tty-info.img.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  termios_entrySchema,
  tty_info_entrySchema,
  tty_pty_entrySchema,
  TtyType,
  winsize_entrySchema,
} from "../../proto/gen/files_pb.ts";
import { close, ioctl, O, tryOpen } from "../syscalls/mod.ts";
import { parseStat, readProcText } from "../tree/proc.ts";
import type { DumpContext } from "./context.ts";
import { type TtyInfo, UnsupportedError } from "./file_types.ts";

export const MAJOR_TTY = new Set([4, 5, 128, 136]);
/** Unix98 pty slaves: majors 136..143 (/dev/pts/N). */
export const isPtySlave = (maj: number): boolean => maj >= 136 && maj <= 143;

/** The major number of a Linux dev_t (bits 8-19 and 32-43). */
export function major(rdev: number): number {
  return ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
}

const TCGETS2 = 0x802c542a, TIOCGWINSZ = 0x5413, TIOCGSID = 0x5429, TIOCGPGRP = 0x540f;
const TIOCGEXCL = 0x80045440;

/** Reads a terminal's settings through a descriptor of our own on the same tty. */
export function readTty(
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
    let sid = tryIoctl(own, TIOCGSID, int) ? int[0] : 0;
    let pgrp = tryIoctl(own, TIOCGPGRP, int) ? int[0] : 0;
    // Those two answer only on the caller's own controlling terminal: for the task's, its
    // /proc/PID/stat tells (its session, and the terminal's foreground group).
    const st = parseStat(readProcText(pid, "stat"));
    if (st.ttyNr === kind.rdev && st.tpgid > 0) {
      sid ||= st.sid;
      pgrp ||= st.tpgid;
    }
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

/** tty-info.img: the terminals of the tree. */
export function writeTtyInfo(ctx: DumpContext): void {
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
}
