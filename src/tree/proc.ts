/**
 * Parsers for /proc/PID files. Each `parse*` function is pure (text in, record out) and has
 * fixture tests; each `read*` function reads the live file.
 *
 * @module
 */
import { CLOCK } from "../syscalls/mod.ts";

/** A /proc file that is missing means the task is gone (or never was). */
export class NoSuchTaskError extends Error {
  /** The task id. */
  readonly pid: number;
  constructor(pid: number, options?: ErrorOptions) {
    super(`No process with PID ${pid}`, options);
    this.name = "NoSuchTaskError";
    this.pid = pid;
  }
}

/** Reads /proc/PID/NAME as text; a missing file becomes {@link NoSuchTaskError}. */
export function readProcText(pid: number, name: string): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/${name}`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new NoSuchTaskError(pid, { cause: e });
    throw e;
  }
}

/**
 * /proc/PID/NAME of each of `pids`, read one after another on a thread of the runtime's from
 * now on: by PID, each read's text (or readProcText's error) once awaited.
 */
export function readProcTextsAhead(pids: number[], name: string): Map<number, Promise<string>> {
  const out = new Map<number, Promise<string>>();
  let before: Promise<unknown> = Promise.resolve();
  for (const pid of pids) {
    const text = before.then(() => Deno.readTextFile(`/proc/${pid}/${name}`)).catch((e) => {
      throw e instanceof Deno.errors.NotFound ? new NoSuchTaskError(pid, { cause: e }) : e;
    });
    // Awaited when its process is dumped, or never when the dump fails first.
    text.catch(() => {});
    before = text.catch(() => {});
    out.set(pid, text);
  }
  return out;
}

/** Selected fields of /proc/PID/stat (numbering of proc(5), 1-based). */
export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  ttyNr: number;
  /** Foreground process group of its controlling terminal (-1 without one). */
  tpgid: number;
  flags: number;
  nice: number;
  numThreads: number;
  /** When it started, in clock ticks since boot (a PID used again is another process). */
  startTime: bigint;
  startCode: bigint;
  endCode: bigint;
  startStack: bigint;
  exitSignal: number;
  rtPriority: number;
  policy: number;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
  exitCode: number;
}

/** Parses /proc/PID/stat. The comm may hold spaces and parentheses: it ends at the last `)`. */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) throw new Error(`Malformed /proc stat line: ${text.slice(0, 80)}`);
  // f[0] is field 3 (state).
  const f = text.slice(close + 2).trim().split(/\s+/);
  const n = (field: number) => Number(f[field - 3]);
  const b = (field: number) => BigInt(f[field - 3] ?? "0");
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: f[0],
    ppid: n(4),
    pgid: n(5),
    sid: n(6),
    ttyNr: n(7),
    tpgid: n(8),
    flags: n(9),
    nice: n(19),
    numThreads: n(20),
    startTime: b(22),
    startCode: b(26),
    endCode: b(27),
    startStack: b(28),
    exitSignal: n(38),
    rtPriority: n(40),
    policy: n(41),
    startData: b(45),
    endData: b(46),
    startBrk: b(47),
    argStart: b(48),
    argEnd: b(49),
    envStart: b(50),
    envEnd: b(51),
    exitCode: n(52),
  };
}

/** Selected fields of /proc/PID/status. */
export interface ProcStatus {
  /** real, effective, saved, fs */
  uids: [number, number, number, number];
  gids: [number, number, number, number];
  groups: number[];
  capInh: bigint;
  capPrm: bigint;
  capEff: bigint;
  capBnd: bigint;
  capAmb: bigint;
  umask: number;
  seccomp: number;
  noNewPrivs: number;
  tracerPid: number;
  threads: number;
  sigPnd: bigint;
  shdPnd: bigint;
  sigBlk: bigint;
  state: string;
}

/** Parses /proc/PID/status. */
export function parseStatus(text: string): ProcStatus {
  const kv = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const ids = (k: string) => {
    const v = (kv.get(k) ?? "0 0 0 0").split(/\s+/).map(Number);
    return [v[0], v[1], v[2], v[3]] as [number, number, number, number];
  };
  const hex = (k: string) => BigInt("0x" + (kv.get(k) ?? "0"));
  const groups = (kv.get("Groups") ?? "").split(/\s+/).filter(Boolean).map(Number);
  return {
    uids: ids("Uid"),
    gids: ids("Gid"),
    groups,
    capInh: hex("CapInh"),
    capPrm: hex("CapPrm"),
    capEff: hex("CapEff"),
    capBnd: hex("CapBnd"),
    capAmb: hex("CapAmb"),
    umask: parseInt(kv.get("Umask") ?? "22", 8),
    seccomp: Number(kv.get("Seccomp") ?? 0),
    noNewPrivs: Number(kv.get("NoNewPrivs") ?? 0),
    tracerPid: Number(kv.get("TracerPid") ?? 0),
    threads: Number(kv.get("Threads") ?? 1),
    sigPnd: hex("SigPnd"),
    shdPnd: hex("ShdPnd"),
    sigBlk: hex("SigBlk"),
    state: (kv.get("State") ?? "?").slice(0, 1),
  };
}

/** One line of /proc/PID/maps, with the VmFlags of smaps when known. */
export interface ProcMap {
  start: bigint;
  end: bigint;
  /** `rwxp` / `rw-s` permission string. */
  perms: string;
  offset: bigint;
  /** major:minor of the backing device. */
  dev: string;
  inode: number;
  /** Path, `[heap]`, `[stack]`, `[vdso]`, ..., or "" for anonymous memory. */
  path: string;
  /** Two-letter VmFlags from smaps (`rd wr mr mw me gd ac ...`). */
  vmFlags: Set<string>;
  /** Anonymous memory in it, in kB (smaps; 0 from maps): pages it copied on write. */
  anonKb: number;
}

const MAPS_LINE = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$/;

/** Parses /proc/PID/maps or /proc/PID/smaps (the latter adds VmFlags to each mapping). */
export function parseMaps(text: string): ProcMap[] {
  const out: ProcMap[] = [];
  for (const line of text.split("\n")) {
    const m = MAPS_LINE.exec(line);
    if (m) {
      out.push({
        start: BigInt("0x" + m[1]),
        end: BigInt("0x" + m[2]),
        perms: m[3],
        offset: BigInt("0x" + m[4]),
        dev: m[5],
        inode: Number(m[6]),
        path: m[7],
        vmFlags: new Set(),
        anonKb: 0,
      });
    } else if (line.startsWith("Anonymous:") && out.length) {
      out[out.length - 1].anonKb = parseInt(line.slice(10));
    } else if (line.startsWith("VmFlags:") && out.length) {
      out[out.length - 1].vmFlags = new Set(line.slice(8).trim().split(/\s+/));
    }
  }
  return out;
}

/** RLIM_INFINITY. */
export const RLIM_INFINITY = 0xffffffffffffffffn;

/** Parses /proc/PID/limits into 16 [soft, hard] pairs in RLIMIT_* order. */
export function parseLimits(text: string): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  for (const line of text.split("\n").slice(1)) {
    if (!line.trim()) continue;
    // "Max cpu time              unlimited            unlimited            seconds"
    // The name column is 26 characters wide and may hold spaces.
    if (!line.startsWith("Max ")) continue;
    const [soft, hard] = line.slice(26).trim().split(/\s+/);
    const v = (s: string | undefined) => {
      if (s === "unlimited") return RLIM_INFINITY;
      if (!s || !/^\d+$/.test(s)) throw new Error(`Malformed /proc limits line: ${line}`);
      return BigInt(s);
    };
    out.push([v(soft), v(hard)]);
  }
  if (out.length !== 16) throw new Error(`Malformed /proc limits: ${out.length} limits`);
  return out;
}

/** Fields of /proc/PID/fdinfo/FD common to all file types. */
export interface ProcFdinfo {
  pos: bigint;
  /** Open flags in the kernel's representation (O_* bits). */
  flags: number;
  mntId: number;
  ino: number;
  /** Every other `key: value` line, as text. */
  extra: Map<string, string>;
}

/** Parses /proc/PID/fdinfo/FD. */
export function parseFdinfo(text: string): ProcFdinfo {
  const extra = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) extra.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return {
    pos: BigInt(extra.get("pos") ?? "0"),
    flags: parseInt(extra.get("flags") ?? "0", 8),
    mntId: Number(extra.get("mnt_id") ?? -1),
    ino: Number(extra.get("ino") ?? 0),
    extra,
  };
}

/** Parses /proc/PID/auxv (u64 pairs) up to AT_NULL, which it leaves out. */
export function parseAuxv(bytes: Uint8Array): bigint[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: bigint[] = [];
  for (let off = 0; off + 16 <= bytes.length; off += 16) {
    const type = view.getBigUint64(off, true);
    // Without the AT_NULL that ends it, as criu stores it (the kernel adds it back).
    if (type === 0n) break;
    out.push(type, view.getBigUint64(off + 8, true));
  }
  return out;
}

/** The thread ids of a process, from /proc/PID/task. */
export function listThreads(pid: number): number[] {
  try {
    return [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => Number(e.name)).sort((a, b) =>
      a - b
    );
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new NoSuchTaskError(pid, { cause: e });
    throw e;
  }
}

/** PF_IO_WORKER: an io_uring worker (iou-wrk-N, iou-sqp-N), which the kernel makes itself. */
const PF_IO_WORKER = 0x10;

/**
 * The thread ids of a process that are its own: without io_uring's workers, which no ptrace
 * stops and the kernel makes again as an instance needs them. Those `known` says are its own
 * are not asked about again.
 */
export function listOwnThreads(pid: number, known?: (tid: number) => boolean): number[] {
  return listThreads(pid).filter((tid) => {
    if (known?.(tid)) return true;
    try {
      return !(parseStat(readProcText(pid, `task/${tid}/stat`)).flags & PF_IO_WORKER);
    } catch {
      return false; // gone
    }
  });
}

/** The open descriptor numbers of a process, sorted. */
export function listFds(pid: number): number[] {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => Number(e.name)).sort((a, b) => a - b);
}

/** The children of a thread, from /proc/PID/task/TID/children. */
export function listChildren(pid: number, tid = pid): number[] {
  return readProcText(pid, `task/${tid}/children`).split(/\s+/).filter(Boolean).map(Number);
}

/** One POSIX timer of /proc/PID/timers. */
export interface ProcTimer {
  id: number;
  signo: number;
  sival: bigint;
  /** SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD_ID 4. */
  notify: number;
  /** Target thread for SIGEV_THREAD_ID. */
  notifyTid: number;
  clockId: number;
}

/** Parses /proc/PID/timers. */
export function parseTimers(text: string): ProcTimer[] {
  const out: ProcTimer[] = [];
  for (const block of text.split(/\n(?=ID:)/)) {
    const id = /^ID:\s*(\d+)/m.exec(block);
    if (!id) continue;
    const sig = /^signal:\s*(\d+)\/([0-9a-f]+)/m.exec(block);
    // "notify: signal/tid.123": how (signal, none, thread), then to a thread or the process.
    const notify = /^notify:\s*(\w+)\/(\w+)\.(\d+)/m.exec(block);
    const clock = /^ClockID:\s*(\d+)/m.exec(block);
    const how = { signal: 0, none: 1, thread: 2 }[notify?.[1] ?? "signal"] ?? 0;
    const toThread = notify?.[2] === "tid";
    out.push({
      id: Number(id[1]),
      signo: Number(sig?.[1] ?? 0),
      sival: BigInt("0x" + (sig?.[2] ?? "0")),
      notify: how | (toThread ? 4 /* SIGEV_THREAD_ID */ : 0),
      notifyTid: toThread ? Number(notify![3]) : 0,
      clockId: Number(clock?.[1] ?? 0),
    });
  }
  return out;
}

/** /proc/PID/timens_offsets: each clock's offset in the task's time namespace. */
export function readTimeOffsets(pid: number): Map<number, [bigint, bigint]> {
  const out = new Map<number, [bigint, bigint]>();
  for (const line of readProcText(pid, "timens_offsets").split("\n")) {
    // "monotonic SEC NSEC" (or the clock's number, on older kernels).
    const m = /^(\S+)\s+(-?\d+)\s+(\d+)/.exec(line.trim());
    if (!m) continue;
    const clock = m[1] === "monotonic"
      ? CLOCK.MONOTONIC
      : m[1] === "boottime"
      ? CLOCK.BOOTTIME
      : Number(m[1]);
    out.set(clock, [BigInt(m[2]), BigInt(m[3])]);
  }
  return out;
}

/** Whether task `pid` is in a namespace of `kind` other than criu's. */
export function ownNamespace(pid: number, kind: string): boolean {
  return nsLink(pid, kind) !== nsLink(Deno.pid, kind);
}

/** /proc/PID/ns/KIND's target ("uts:[INODE]"), or "" where the kernel has no such kind. */
export function nsLink(pid: number, kind: string): string {
  try {
    return Deno.readLinkSync(`/proc/${pid}/ns/${kind}`);
  } catch {
    return "";
  }
}
