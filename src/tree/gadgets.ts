/**
 * Instructions criu borrows from a task's own code: a `syscall` to run a first syscall at
 * before criu's code is in the task, a `syscall; ret` and the task's sa_restorer
 * (`mov $15, %rax; syscall`, i.e. rt_sigreturn), which let such a syscall return home through a
 * signal frame on its own if criu dies meanwhile (see parasite/heal.c).
 *
 * Found by scanning the executable mappings (the vDSO first, then libc and the rest); the
 * offsets found in a file mapping are remembered for the next task mapping the same file, and
 * a dump scans its tree's files before the freeze ({@link scanGadgetsAhead}).
 *
 * @module
 */
import { readRemote, type RemotePtr, remotePtr } from "../syscalls/mod.ts";
import { parseMaps, type ProcMap, readProcText } from "./proc.ts";

/** Addresses of borrowed instructions in one task. */
export interface Gadgets {
  /** A `syscall` instruction (0f 05). */
  syscall: RemotePtr;
  /** `syscall; ret` (0f 05 c3), if any. */
  syscallRet?: RemotePtr;
  /** `mov $15, %rax; syscall` or `mov $15, %eax; syscall` (rt_sigreturn), if any. */
  sigreturn?: RemotePtr;
}

/** The two ways an rt_sigreturn is written before its `syscall` (15 into rax or eax). */
const SIGRETURN_MOVS = [
  [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00],
  [0xb8, 0x0f, 0x00, 0x00, 0x00],
] as const;
/** The longest instruction sequence looked for: a mov before the syscall. */
const LONGEST = 7 + 2;
type Kind = keyof Gadgets;
const KINDS: readonly Kind[] = ["syscall", "syscallRet", "sigreturn"];

/** Offsets (from a mapping's start) found in a file mapping, by file, offset and size. */
const found = new Map<string, Partial<Record<Kind, bigint>>>();

function cacheKey(m: ProcMap): string | undefined {
  if (m.path === "[vdso]") return `[vdso]:${m.end - m.start}`;
  if (!m.path.startsWith("/") || m.inode === 0) return undefined;
  return `${m.dev}:${m.inode}:${m.offset}:${m.end - m.start}`;
}

/**
 * The first of each kind not yet in `hits` in `buf[0, n)`, as offsets into it. Every kind
 * holds a `syscall` (0f 05): the scan looks for its second byte, which is rarer in code than
 * the first (about one byte in 200 against one in 30 in glibc), and looks around each one it
 * finds. A sequence cut by the buffer's end is left to the next read, which starts
 * {@link LONGEST} bytes back.
 */
function scanBuffer(buf: Uint8Array, n: number, hits: Partial<Record<Kind, number>>): void {
  for (let i = buf.indexOf(0x05, 1); i >= 0 && i < n; i = buf.indexOf(0x05, i + 1)) {
    if (buf[i - 1] !== 0x0f) continue;
    const at = i - 1;
    hits.syscall ??= at;
    if (hits.syscallRet === undefined && i + 1 < n && buf[i + 1] === 0xc3) hits.syscallRet = at;
    if (hits.sigreturn === undefined) {
      for (const mov of SIGRETURN_MOVS) {
        const from = at - mov.length;
        if (from >= 0 && mov.every((b, j) => buf[from + j] === b)) hits.sigreturn = from;
      }
    }
    if (hits.syscallRet !== undefined && hits.sigreturn !== undefined) return;
  }
}

function scan(pid: number, m: ProcMap): Partial<Record<Kind, bigint>> {
  const hits: Partial<Record<Kind, bigint>> = {};
  const buf = new Uint8Array((64 << 10) + LONGEST);
  for (let base = m.start; base < m.end && KINDS.some((k) => hits[k] === undefined);) {
    const len = Number(m.end - base < BigInt(buf.length) ? m.end - base : BigInt(buf.length));
    let n: number;
    try {
      n = readRemote(pid, remotePtr(base), buf, 0, len);
    } catch {
      break; // unreadable: nothing to borrow here
    }
    // Kinds found in an earlier read are not looked for again (-1).
    const inBuf: Partial<Record<Kind, number>> = {};
    for (const k of KINDS) if (hits[k] !== undefined) inBuf[k] = -1;
    scanBuffer(buf, n, inBuf);
    for (const k of KINDS) {
      if (hits[k] === undefined && inBuf[k] !== undefined) {
        hits[k] = base - m.start + BigInt(inBuf[k]);
      }
    }
    if (n < len || base + BigInt(n) >= m.end) break;
    base += BigInt(n - LONGEST);
  }
  return hits;
}

/** Finds the borrowed instructions in task `pid`, whose mappings are `maps`. */
export function findGadgets(pid: number, maps: ProcMap[]): Gadgets {
  const exec = maps.filter((m) => m.perms[2] === "x" && m.path !== "[vsyscall]");
  // The vDSO first, then code from files; anonymous memory last: reading a page of it that is
  // not there maps one (a lazy restore's pages must stay missing until they come).
  const rank = (m: ProcMap) => (m.path === "[vdso]" ? 0 : m.path.startsWith("/") ? 1 : 2);
  exec.sort((a, b) => rank(a) - rank(b));
  const out: Partial<Record<Kind, RemotePtr>> = {};
  for (const m of exec) {
    const key = cacheKey(m);
    let hits = key ? found.get(key) : undefined;
    if (!hits) {
      hits = scan(pid, m);
      if (key) found.set(key, hits);
    }
    for (const k of KINDS) {
      if (out[k] === undefined && hits[k] !== undefined) out[k] = remotePtr(m.start + hits[k]!);
    }
    if (KINDS.every((k) => out[k] !== undefined)) break;
  }
  if (out.syscall === undefined) {
    throw new Error(`Cannot find a syscall instruction in task ${pid}`);
  }
  return { syscall: out.syscall, syscallRet: out.syscallRet, sigreturn: out.sigreturn };
}

/**
 * Scans the code files (and the vDSO) of processes `pids`, which a dump is about to freeze,
 * while they still run: once frozen, finding their gadgets is a look-up. Anonymous code is
 * left for then (reading it could fault in a page a lazy restore has yet to bring). Processes
 * that are gone, or whose files lack the instructions, are passed over.
 */
export function scanGadgetsAhead(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      findGadgets(pid, parseMaps(readProcText(pid, "maps")).filter((m) => cacheKey(m)));
    } catch {
      // Gone, or its gadgets are elsewhere: found once frozen.
    }
  }
}
