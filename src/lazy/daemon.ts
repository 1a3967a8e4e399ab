/**
 * The daemon of a lazy restore (`criu lazy-pages`): it takes a userfaultfd from each restored
 * process and brings that process's lazy pages in, each on first touch, the rest in the
 * background once the restore has finished, until none is left.
 *
 * ```
 * criu restore --lazy-pages            criu lazy-pages               the images (or a page
 *   per task: int32 pid, then one        fault at A: the pages from     server): pages by the
 *   byte with the userfaultfd  ------>   A on (up to 64 KiB) copied     address they had when
 *   ...                                  in (UFFDIO_COPY), a hole       dumped
 *   u32 "RSTF": restore finished ---->   zero-filled; then the rest,
 *                                        lowest first, in chunks growing from 64 KiB to 4 MiB
 * ```
 * The processes' forks, mremaps, madvise(DONTNEED) and munmaps arrive on the userfaultfds
 * (non-cooperative events) and change what is left to bring: a forked child lacks what its
 * parent lacks, and gets the same pages.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { close, Errno, errno, errnoName, pollIn } from "../syscalls/mod.ts";
import { recvExact } from "../syscalls/socket.ts";
import {
  readUffdMsgs,
  UFFD_EVENT,
  uffdCopy,
  type UffdMsg,
  uffdWake,
  uffdZero,
} from "../syscalls/uffd.ts";
import type { LazyTaskImages } from "../restore/images.ts";
import { PE_LAZY } from "../pagemap/pagemap.ts";
import { lazyFillable } from "../pagemap/vma.ts";
import { type LazyPart, type LazyRange, LazyRanges } from "./ranges.ts";
import type { PageSource } from "./source.ts";

/** The restore's word after its last task: "RSTF". */
export const LAZY_RESTORE_FINISHED = 0x52535446;

/** The socket's name in the work directory. */
export const LAZY_PAGES_SOCKET = "lazy-pages.socket";

/**
 * What this daemon says first on a connection (criu's restore never reads from it, criu's
 * daemon says nothing): u32 "DCLZ", u32 flags. A restore of ours that hears it may leave more
 * to it than criu's daemon takes.
 */
export const LAZY_HELLO_MAGIC = 0x5a4c4344;
/** Hello flag: the lazy pages of the parent images (pre-dumps) come lazily too (criu's daemon
 * takes only those of the images themselves; a criu restore brings the others in itself). */
export const LAZY_HELLO_PARENTS = 1;

/** The hello, with `flags`. */
export function lazyHello(flags: number): Uint8Array {
  return new Uint8Array(new Uint32Array([LAZY_HELLO_MAGIC, flags]).buffer);
}

const PAGE = 4096n;
/** What a fault brings: its page and those after it, up to this. */
const FAULT_BYTES = 16n * PAGE;
/** The background's first chunk, its growth, and its largest. */
const XFER_FIRST = 64n * 1024n, XFER_MAX = 4n * 1024n * 1024n;

/** One process being filled. */
interface LazyProcess {
  /** Its id in the images (a forked child's: its parent's, whose pages it has). */
  pid: number;
  /** What it is called in messages. */
  name: string;
  uffd: number;
  ranges: LazyRanges;
  /** The background's next chunk. */
  xfer: bigint;
  /** Its PID here, when known (a restore of ours tells; a forked child's is found). */
  real?: number;
  /** Pages copied in, on faults and in the background; holes zero-filled. */
  faults: number;
  copied: number;
  zeroed: number;
}

/** What was done, for the log and the tests. */
export interface LazyStats {
  processes: number;
  faults: number;
  pagesCopied: number;
  pagesZeroed: number;
  forks: number;
  /** Pages that could not be brought in (logged): the restored tree is not whole. */
  errors: number;
}

/**
 * The lazy ranges of a task: its PE_LAZY pages (those of the parent images too with
 * `parents`), cut at its mappings (a copy stays in one).
 */
export function lazyRanges(task: LazyTaskImages, parents = false): LazyRange[] {
  const vmas = [...task.vmas].sort((a, b) => (a.start < b.start ? -1 : 1));
  const out: LazyRange[] = [];
  for (const [i, e] of task.pagemap.entries()) {
    if (!(e.flags & PE_LAZY) || (!parents && task.pageLevel[i] > 0)) continue;
    const end = e.vaddr + BigInt(e.nrPages) * PAGE;
    for (const v of vmas) {
      // (One it cannot fill the restore fills itself.)
      if (v.end <= e.vaddr || v.start >= end || !lazyFillable(v)) continue;
      const s = v.start > e.vaddr ? v.start : e.vaddr;
      const t = v.end < end ? v.end : end;
      out.push({ start: s, end: t, img: s });
    }
  }
  return out;
}

/** The daemon's side of one restore. */
export class LazyDaemon {
  readonly #procs: LazyProcess[] = [];
  #source?: PageSource;
  readonly #log: Logger;
  readonly #msgs = new Uint8Array(32 * 64);
  #forks = 0;
  #errors = 0;
  #done: LazyProcess[] = [];

  readonly #parents: boolean;
  readonly #guard?: LazyGuard;
  /** The processes the guard knows. */
  readonly #committed = new Set<number>();

  /**
   * With `parents`, the parent images' lazy pages are the daemon's too (its hello said so).
   * `guard` is told of every process known: should the daemon die before it has all its pages,
   * the process dies too, rather than run on with pages missing (they would read as zeros).
   */
  constructor(log: Logger, parents: boolean, guard?: LazyGuard) {
    this.#log = log;
    this.#parents = parents;
    this.#guard = guard;
  }

  #guarded(p: LazyProcess, pids: number[]): void {
    const fresh = pids.filter((x) => !this.#committed.has(x));
    if (!this.#guard || !fresh.length) return;
    for (const x of fresh) this.#committed.add(x);
    this.#guard.commit(fresh);
    this.#log.debug(`${p.name}: the guard kills ${fresh.join(", ")} should the daemon die`);
  }

  /**
   * Takes one record of the restore's from connected socket `conn`: a task's id (of `tasks`,
   * the images') and its userfaultfd, or a negative id for a process that sends none (a
   * zombie, or one with nothing lazy). False at the end of the stream.
   */
  #receive(conn: number, tasks: Map<number, LazyTaskImages | undefined>): boolean {
    const word = new Uint8Array(4);
    if (!recvExact(conn, word, "the restore's socket")) return false;
    const pid = new DataView(word.buffer).getInt32(0, true);
    if (pid <= 0) return true;
    const fds: number[] = [];
    recvExact(conn, new Uint8Array(1), "the restore's socket", fds);
    // A restore of ours sends a pidfd of the process beside its userfaultfd.
    const [uffd, pidfd] = fds;
    let real: number | undefined;
    if (pidfd !== undefined) {
      real = pidOfPidfd(pidfd);
      fds.slice(1).forEach(close);
    }
    if (uffd === undefined) throw new Error(`The restore sent task ${pid} without a userfaultfd`);
    const task = tasks.get(pid);
    if (!task) {
      close(uffd);
      throw new Error(`The restore sent task ${pid}, which the images do not have`);
    }
    const ranges = new LazyRanges(lazyRanges(task, this.#parents));
    this.#log.info(
      `Task ${pid}${real !== undefined ? ` (${real} here)` : ""}: ${ranges.bytes / PAGE} lazy ` +
        `pages, userfaultfd ${uffd}`,
    );
    const p = this.#process(pid, `task ${pid}`, uffd, ranges);
    p.real = real;
    if (real !== undefined) this.#guarded(p, [real]);
    this.#procs.push(p);
    return true;
  }

  #process(pid: number, name: string, uffd: number, ranges: LazyRanges): LazyProcess {
    return { pid, name, uffd, ranges, xfer: XFER_FIRST, faults: 0, copied: 0, zeroed: 0 };
  }

  /**
   * Takes the restore's processes from `conn` (one record for each of `tasks`, the images'),
   * serves their faults and events with pages from `source` until the restore says it has
   * finished (a hang-up before that is an error), then brings the rest in too; returns once
   * every process has all its pages (or has gone).
   */
  run(
    conn: number,
    tasks: Map<number, LazyTaskImages | undefined>,
    source: PageSource,
  ): LazyStats {
    this.#source = source;
    // The processes' faults are served while the others still come: the restore may touch
    // the memory of one it has sent before it sends the next.
    let records = 0, finished = false, connOpen = true;
    while (!finished || this.#procs.length) {
      const polled = [...this.#procs];
      const watched = [...(connOpen ? [conn] : []), ...polled.map((p) => p.uffd)];
      const busy = finished && polled.some((p) => !p.ranges.empty);
      const ready = pollIn(watched, busy ? PACE_MS : -1);
      // Where the processes' answers start (the socket's first, while it is watched).
      const offset = watched.length - polled.length;
      if (connOpen && ready[0] && records < tasks.size) {
        if (!this.#receive(conn, tasks)) {
          throw new Error(`The restore closed its socket after ${records} of ${tasks.size} tasks`);
        }
        records++;
      } else if (connOpen && ready[0]) {
        const word = new Uint8Array(4);
        if (!receivedOrEnded(conn, word)) {
          if (!finished) throw new Error("The restore ended before it had finished");
          connOpen = false;
        } else if (new DataView(word.buffer).getUint32(0, true) === LAZY_RESTORE_FINISHED) {
          this.#log.info("The restore has finished: the rest of the pages follow");
          finished = true;
        } else {
          throw new Error("The restore sent an unknown message");
        }
      }
      polled.forEach((p, i) => {
        if (ready[i + offset] && this.#procs.includes(p)) this.#serve(p);
      });
      if (finished) {
        const p = this.#procs.find((x) => !x.ranges.empty);
        if (p) this.#background(p);
        for (const q of this.#procs.filter((x) => x.ranges.empty)) {
          this.#finish(q, "has all its pages");
        }
      }
    }
    const all = this.#done;
    return {
      processes: all.length,
      faults: all.reduce((n, p) => n + p.faults, 0),
      pagesCopied: all.reduce((n, p) => n + p.copied, 0),
      pagesZeroed: all.reduce((n, p) => n + p.zeroed, 0),
      forks: this.#forks,
      errors: this.#errors,
    };
  }

  #finish(p: LazyProcess, why: string): void {
    const i = this.#procs.indexOf(p);
    if (i < 0) return;
    this.#procs.splice(i, 1);
    close(p.uffd);
    this.#done.push(p);
    this.#log.info(
      `${p.name[0].toUpperCase()}${p.name.slice(1)} ${why}: ${p.faults} faults, ${p.copied} ` +
        `pages copied, ${p.zeroed} zero-filled`,
    );
  }

  /** Reads and handles what waits on `p`'s userfaultfd. */
  #serve(p: LazyProcess): void {
    for (;;) {
      const msgs = readUffdMsgs(p.uffd, this.#msgs);
      if (typeof msgs === "number") {
        throw new Error(`Cannot read the userfaultfd of ${p.name}: ${errnoName(-msgs)}`);
      }
      if (!msgs.length) return;
      for (const m of msgs) {
        if (!this.#procs.includes(p)) return;
        this.#handle(p, m);
      }
    }
  }

  /** Reads and handles the events (not the faults) that wait on `p`'s userfaultfd. */
  #handle(p: LazyProcess, m: UffdMsg): void {
    switch (m.event) {
      case UFFD_EVENT.PAGEFAULT: {
        p.faults++;
        p.xfer = XFER_FIRST;
        const addr = m.address & ~(PAGE - 1n);
        if (!this.#bring(p, addr, FAULT_BYTES)) this.#zero(p, addr);
        return;
      }
      case UFFD_EVENT.FORK: {
        this.#forks++;
        const child = this.#process(p.pid, `a child of ${p.name}`, m.ufd, p.ranges.clone());
        // Its PID: the child of the parent's the guard does not know yet (one, unless its
        // threads forked at once: then each is guarded, none named).
        if (p.real !== undefined) {
          const fresh = childrenOf(p.real).filter((x) => !this.#committed.has(x));
          if (fresh.length === 1) child.real = fresh[0];
          this.#guarded(child, fresh);
        }
        this.#log.info(`${p.name} forked: ${child.ranges.bytes / PAGE} lazy pages for the child`);
        this.#procs.push(child);
        return;
      }
      case UFFD_EVENT.REMAP:
        p.ranges.remap(m.from, m.to, m.len);
        return;
      case UFFD_EVENT.REMOVE:
      case UFFD_EVENT.UNMAP:
        // What is dropped is zero (or gone) from now on; still registered, a touch there is
        // zero-filled.
        p.ranges.drop(m.start, m.end);
        return;
    }
  }

  /**
   * Handles what waits on `p`'s userfaultfd, faults and events, after waiting a moment for an
   * event the kernel is about to queue (it holds copies off while a change is under way).
   */
  #settle(p: LazyProcess): void {
    pollIn([p.uffd], 10);
    this.#serve(p);
  }

  /** One background chunk of `p`. */
  #background(p: LazyProcess): void {
    const part = p.ranges.takeFirst(p.xfer);
    if (!part) return;
    if (p.xfer < XFER_MAX) p.xfer += XFER_FIRST;
    this.#copy(p, part);
  }

  /**
   * Brings the pages from `addr` on (up to `max` bytes) into `p`, if they are still to come:
   * whether they were.
   */
  #bring(p: LazyProcess, addr: bigint, max: bigint): boolean {
    const part = p.ranges.take(addr, max);
    if (!part) return false;
    this.#copy(p, part);
    return true;
  }

  /**
   * Copies `part` (taken out of `p`'s ranges) into `p`. While the process changes its mappings
   * (a fork, an mremap under way) a copy waits: the part goes back, the events are handled,
   * and what is still to come of it is tried again.
   */
  #copy(p: LazyProcess, part: LazyPart): void {
    while (part.len > 0n) {
      const { at, pages } = this.#source!.fetch(p.pid, part.img, Number(part.len / PAGE));
      const len = BigInt(pages) * PAGE;
      const n = uffdCopy(p.uffd, part.start, at, len);
      if (n > 0n) {
        p.copied += Number(n / PAGE);
        part.start += n;
        part.img += n;
        part.len -= n;
        continue;
      }
      const e = Number(-n);
      if (e === errno.EEXIST) {
        this.#log.warn(`${p.name}: a page at 0x${part.start.toString(16)} is there already`);
        // Already there (its process made it since): skipped, its waiters woken.
        uffdWake(p.uffd, part.start, PAGE);
        part.start += PAGE;
        part.img += PAGE;
        part.len -= PAGE;
        continue;
      }
      if (e === errno.ESRCH || e === ENOSPC) {
        this.#finish(p, "has gone");
        return;
      }
      if (e === errno.EAGAIN || e === errno.ENOENT) {
        // Its mappings are changing (EAGAIN), or what was there is gone (ENOENT, an unmap
        // on its way): the events first, then what is left of the part.
        const addr = part.start;
        p.ranges.putBack(part);
        this.#settle(p);
        if (!this.#procs.includes(p)) return;
        if (e === errno.ENOENT && p.ranges.has(addr)) {
          // No event took it: nothing is mapped there any more.
          // Then its pages cannot come: an error, never a silent zero.
          const gone = p.ranges.take(addr, part.len);
          this.#errors++;
          this.#log.error(
            `${p.name} has no mapping registered at 0x${addr.toString(16)}: ` +
              `${(gone?.len ?? 0n) / PAGE} pages cannot be brought in`,
          );
          uffdWake(p.uffd, addr, PAGE);
          return;
        }
        const again = p.ranges.take(addr, part.len);
        if (!again) {
          uffdWake(p.uffd, addr, PAGE);
          return;
        }
        part = again;
        continue;
      }
      throw new Error(
        `Cannot copy pages into ${p.name} at 0x${part.start.toString(16)}: ${errnoName(e)}`,
      );
    }
  }

  /** A touch of `p` where no page is to come (a hole): a zero page. */
  #zero(p: LazyProcess, addr: bigint): void {
    for (;;) {
      const n = uffdZero(p.uffd, addr, PAGE);
      if (n > 0n) {
        p.zeroed++;
        return;
      }
      const e = Number(-n);
      if (e === errno.EEXIST) {
        uffdWake(p.uffd, addr, PAGE);
        return;
      }
      if (e === errno.ESRCH || e === ENOSPC) return this.#finish(p, "has gone");
      if (e === errno.ENOENT) return;
      if (e === errno.EAGAIN) {
        this.#settle(p);
        if (!this.#procs.includes(p)) return;
        if (p.ranges.has(addr)) {
          this.#bring(p, addr, FAULT_BYTES);
          return;
        }
        continue;
      }
      throw new Error(
        `Cannot zero-fill ${p.name} at 0x${addr.toString(16)}: ${errnoName(e)}`,
      );
    }
  }
}

const ENOSPC = 28, ECONNRESET = 104;

/** What the daemon tells its guard: processes to kill should it die before it is through. */
export interface LazyGuard {
  commit(pids: number[]): void;
}

/** The children of process `pid`, of all its threads (empty once it has gone). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      const text = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/children`).trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // gone
  }
  return out;
}

/** The PID (here) of the process pidfd `fd` (its fdinfo's Pid), or undefined. */
function pidOfPidfd(fd: number): number | undefined {
  try {
    const m = /^Pid:\s*(-?\d+)/m.exec(Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`));
    return m && Number(m[1]) > 0 ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `buf.length` bytes of the restore's socket `conn`, or false once it has gone: at the end of
 * the stream, or reset (criu's restore closes it with our hello unread).
 */
function receivedOrEnded(conn: number, buf: Uint8Array): boolean {
  try {
    return recvExact(conn, buf, "the restore's socket");
  } catch (e) {
    if (e instanceof Errno && e.errno === ECONNRESET) return false;
    throw e;
  }
}

/**
 * Test hook: a pause between background chunks (faults are served meanwhile), so that a test's
 * process forks, moves and drops memory while pages are still to come.
 */
const PACE_MS = Number(Deno.env.get("DENO_CRIU_LAZY_PACE_MS") ?? 0);
