/**
 * Terminal ioctls and the kernel's struct termios (x86_64): settings, window size, pty index,
 * lock and packet mode, sessions and foreground groups, queued input.
 *
 * @module
 */
import { Errno, orErrno } from "./errno.ts";
import { libc } from "./ffi.ts";
import { rawSyscall } from "./process.ts";
import { NR } from "./syscall_numbers.ts";

/** The kernel's struct termios2: flags, line discipline, 19 control characters, speeds. */
export interface Termios {
  iflag: number;
  oflag: number;
  cflag: number;
  lflag: number;
  line: number;
  /** c_cc[NCCS]: 19 control characters. */
  cc: Uint8Array;
  ispeed: number;
  ospeed: number;
}

/** Indices into {@link Termios.cc}. */
export const VCC = { VINTR: 0, VEOF: 4, VTIME: 5, VMIN: 6, VEOL: 11, VEOL2: 16 } as const;
/** c_lflag bits. */
export const LFLAG = { ISIG: 0o1, ICANON: 0o2, ECHO: 0o10, IEXTEN: 0o100000, EXTPROC: 0o200000 };
/** c_cflag: the baud rate bits, and the value that says "speeds in c_ispeed/c_ospeed". */
export const CBAUD = 0o10017, BOTHER = 0o10000;
/** Number of control characters. */
export const NCCS = 19;

const TCSETS = 0x5402, TCGETS2 = 0x802c542a, TCSETS2 = 0x402c542b;
const TIOCGLCKTRMIOS = 0x5456, TIOCSLCKTRMIOS = 0x5457;
const TIOCGWINSZ = 0x5413, TIOCSWINSZ = 0x5414;
const TIOCGPTN = 0x80045430, TIOCSPTLCK = 0x40045431, TIOCGPTLCK = 0x80045439;
const TIOCPKT = 0x5420, TIOCGPKT = 0x80045438;
const TIOCEXCL = 0x540c, TIOCNXCL = 0x540d, TIOCGEXCL = 0x80045440;
const TIOCSCTTY = 0x540e, TIOCSPGRP = 0x5410, TIOCGPGRP = 0x540f, TIOCGSID = 0x5429;
const FIONREAD = 0x541b;

function call(fd: number, req: number, buf: Uint8Array): number {
  return orErrno(libc.ioctl(fd, BigInt(req), buf));
}

function must(fd: number, req: number, buf: Uint8Array, name: string, what: string): void {
  const r = call(fd, req, buf);
  if (r < 0) throw new Errno(name, -r, what);
}

function decodeTermios(b: Uint8Array): Termios {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    iflag: v.getUint32(0, true),
    oflag: v.getUint32(4, true),
    cflag: v.getUint32(8, true),
    lflag: v.getUint32(12, true),
    line: b[16],
    cc: b.slice(17, 17 + NCCS),
    ispeed: b.length >= 44 ? v.getUint32(36, true) : 0,
    ospeed: b.length >= 44 ? v.getUint32(40, true) : 0,
  };
}

function encodeTermios(t: Termios, size: number): Uint8Array {
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  v.setUint32(0, t.iflag, true);
  v.setUint32(4, t.oflag, true);
  v.setUint32(8, t.cflag, true);
  v.setUint32(12, t.lflag, true);
  b[16] = t.line;
  b.set(t.cc.subarray(0, NCCS), 17);
  if (size >= 44) {
    v.setUint32(36, t.ispeed, true);
    v.setUint32(40, t.ospeed, true);
  }
  return b;
}

/** TCGETS2: a terminal's settings; negative errno (EIO: hung up) instead of throwing. */
export function tryGetTermios(fd: number): Termios | number {
  const b = new Uint8Array(44);
  const r = call(fd, TCGETS2, b);
  return r < 0 ? r : decodeTermios(b);
}

/**
 * Sets a terminal's settings at once (TCSETS, or TCSETS2 where the speeds are not in c_cflag).
 */
export function setTermios(fd: number, t: Termios, what: string): void {
  if ((t.cflag & CBAUD) === BOTHER) must(fd, TCSETS2, encodeTermios(t, 44), "TCSETS2", what);
  else must(fd, TCSETS, encodeTermios(t, 36), "TCSETS", what);
}

/** TIOCGLCKTRMIOS: which settings are locked (bits and characters set in the mask). */
export function getLockedTermios(fd: number, what: string): Termios {
  const b = new Uint8Array(36);
  must(fd, TIOCGLCKTRMIOS, b, "TIOCGLCKTRMIOS", what);
  return decodeTermios(b);
}

/** TIOCSLCKTRMIOS (needs CAP_SYS_ADMIN). */
export function setLockedTermios(fd: number, t: Termios, what: string): void {
  must(fd, TIOCSLCKTRMIOS, encodeTermios(t, 36), "TIOCSLCKTRMIOS", what);
}

/** TIOCGWINSZ: rows, columns, x pixels, y pixels. */
export function getWinsize(fd: number, what: string): [number, number, number, number] {
  const ws = new Uint16Array(4);
  must(fd, TIOCGWINSZ, new Uint8Array(ws.buffer), "TIOCGWINSZ", what);
  return [ws[0], ws[1], ws[2], ws[3]];
}

/** TIOCSWINSZ. */
export function setWinsize(fd: number, w: readonly number[], what: string): void {
  must(fd, TIOCSWINSZ, new Uint8Array(new Uint16Array(w).buffer), "TIOCSWINSZ", what);
}

function getInt(fd: number, req: number, name: string, what: string): number {
  const v = new Int32Array(1);
  must(fd, req, new Uint8Array(v.buffer), name, what);
  return v[0];
}

function tryGetInt(fd: number, req: number): number | undefined {
  const v = new Int32Array(1);
  return call(fd, req, new Uint8Array(v.buffer)) < 0 ? undefined : v[0];
}

function setInt(fd: number, req: number, value: number, name: string, what: string): void {
  must(fd, req, new Uint8Array(new Int32Array([value]).buffer), name, what);
}

/** TIOCGPTN: the index of a pty master (its slave is /dev/pts/INDEX). */
export function ptyIndex(fd: number, what: string): number {
  return getInt(fd, TIOCGPTN, "TIOCGPTN", what);
}

/** TIOCGPTLCK: whether a pty master's slave is still locked (unlockpt not called). */
export function ptyLocked(fd: number, what: string): boolean {
  return getInt(fd, TIOCGPTLCK, "TIOCGPTLCK", what) !== 0;
}

/** TIOCSPTLCK. */
export function setPtyLocked(fd: number, locked: boolean, what: string): void {
  setInt(fd, TIOCSPTLCK, locked ? 1 : 0, "TIOCSPTLCK", what);
}

/** TIOCGPKT: whether a pty master is in packet mode. */
export function packetMode(fd: number, what: string): boolean {
  return getInt(fd, TIOCGPKT, "TIOCGPKT", what) !== 0;
}

/** TIOCPKT. */
export function setPacketMode(fd: number, on: boolean, what: string): void {
  setInt(fd, TIOCPKT, on ? 1 : 0, "TIOCPKT", what);
}

/** TIOCGEXCL: whether the terminal is in exclusive mode. */
export function exclusiveMode(fd: number): boolean {
  return (tryGetInt(fd, TIOCGEXCL) ?? 0) !== 0;
}

/** TIOCEXCL / TIOCNXCL. */
export function setExclusiveMode(fd: number, on: boolean, what: string): void {
  must(fd, on ? TIOCEXCL : TIOCNXCL, new Uint8Array(0), on ? "TIOCEXCL" : "TIOCNXCL", what);
}

/**
 * TIOCGSID and TIOCGPGRP: the session a terminal controls and its foreground group, 0 where
 * the kernel does not say (a slave that is not the caller's controlling terminal; none).
 */
export function ttySession(fd: number): { sid: number; pgrp: number } {
  return { sid: tryGetInt(fd, TIOCGSID) ?? 0, pgrp: tryGetInt(fd, TIOCGPGRP) ?? 0 };
}

/**
 * FIONREAD: bytes a read can return now (of a terminal: whole lines only, in canonical mode; of
 * an inotify instance: the events queued).
 */
export function inputQueued(fd: number, what: string): number {
  return getInt(fd, FIONREAD, "FIONREAD", what);
}

/** ioctl request numbers a task runs itself (remote syscalls): TIOCSCTTY takes an int. */
export const TTY_REMOTE = { TIOCSCTTY, TIOCSPGRP, TIOCNOTTY: 0x5422 } as const;

const TIOCGPTPEER = 0x5441;

/**
 * TIOCGPTPEER: a new descriptor (`flags`: O_RDWR, O_NOCTTY, O_CLOEXEC) of the slave of pty
 * master `fd`, whatever devpts instance or mount namespace it lives in; -errno on failure.
 */
export function tryOpenPtyPeer(fd: number, flags: number): number {
  return Number(rawSyscall(NR.ioctl, fd, TIOCGPTPEER, flags));
}
