/**
 * Descriptors of a task being restored: `prepareFiles` opens, inside the task, every file it
 * had (at the same numbers, flags and offsets) and the files the restorer itself needs
 * (pages-N.img, mapped files, the exe); pipes are made in the task and refilled from here.
 *
 * Every descriptor is first moved above the highest dumped number, so that installing one
 * dumped descriptor never overwrites another that is still being set up.
 *
 * @module
 */
import { fd_types, type file_entry } from "../../proto/gen/files_pb.ts";
import {
  close,
  Errno,
  errnoName,
  F,
  fcntl,
  NR,
  O,
  pidfdGetfd,
  pidfdOpen,
  readRemote,
  strerror,
  writeAll,
} from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import type { RemoteArena } from "./arena.ts";
import type { DumpImages, TaskImages } from "./images.ts";
import { VMA } from "../pagemap/vma.ts";

const AT_FDCWD = -100;
const F_DUPFD_CLOEXEC = 1030;
const F_SETFD = 2;
const SEEK_SET = 0;
/** Open flags that must not be replayed: they would create or truncate. */
const NOT_REPLAYED = O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY;
/** Status flags fcntl(F_SETFL) can set. */
const SETFL_MASK = O.APPEND | O.NONBLOCK | 0o20000 /* O_ASYNC */ | 0o40000; /* O_DIRECT */

/** A restore step failed on a named resource. */
export class RestoreError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RestoreError";
  }
}

/** Descriptors the restorer uses inside the task, closed before it resumes. */
export interface ServiceFds {
  pages: number;
  /** Mapped files by file id. */
  maps: Map<number, number>;
  exe: number;
  /** Every service descriptor, for closing. */
  all: number[];
}

/** Opens and installs the task's descriptors and the restorer's own. */
export function prepareFiles(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  dump: DumpImages,
  task: TaskImages,
  shellJob: boolean,
): ServiceFds {
  const pid = rs.task.pid;
  const high = Math.max(64, ...task.fds.map((f) => f.fd + 1));
  const sys = (nr: number, name: string, ...args: (bigint | number)[]) => {
    const ret = rs.call(nr, ...args);
    if (ret < 0n) throw new Errno(name, Number(-ret), `in restored task ${pid}`);
    return Number(ret);
  };
  /** Moves a fresh descriptor above the dumped range. */
  const lift = (fd: number) => {
    const up = sys(NR.fcntl, "fcntl(F_DUPFD_CLOEXEC)", fd, F_DUPFD_CLOEXEC, high);
    sys(NR.close, "close", fd);
    return up;
  };
  const openAt = (path: string, flags: number, what: string) => {
    arena.reset();
    const ret = rs.call(
      NR.openat,
      AT_FDCWD,
      arena.cstr(path),
      (flags & ~NOT_REPLAYED) | O.CLOEXEC,
      0,
    );
    if (ret < 0n) {
      const e = Number(-ret);
      throw new RestoreError(
        `Cannot open ${what} ${path}: ${strerror(e).toLowerCase()} (${errnoName(e)})`,
      );
    }
    return lift(Number(ret));
  };

  // A clean table: the helper's stdio is not the task's.
  sys(NR.close_range, "close_range", 0, 0xffffffff, 0);

  const all: number[] = [];
  const pages = openAt(task.pagesPath, O.RDONLY, "image");
  all.push(pages);
  const fileOf = (id: number): file_entry => {
    const f = dump.files.get(id);
    if (!f) throw new RestoreError(`File ${id} is missing from files.img`);
    return f;
  };
  const maps = new Map<number, number>();
  for (const v of task.mm.vmas) {
    if (!(v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED))) continue;
    const id = Number(v.shmid);
    if (maps.has(id)) continue;
    const f = fileOf(id);
    const fd = openAt(f.reg!.name, f.reg!.flags, "mapped file");
    maps.set(id, fd);
    all.push(fd);
  }
  const exeFile = fileOf(task.mm.exeFileId);
  const exe = openAt(exeFile.reg!.name, O.RDONLY, "executable");
  all.push(exe);

  // The dumped descriptors. One open per file entry; dups share it.
  const installed = new Map<number, number>(); // file id → first installed fd
  const pipes = new Map<number, { r: number; w: number }>();
  const temps: number[] = [];
  for (const fdi of task.fds) {
    const f = fileOf(fdi.id);
    const cloexec = (fdi.flags & 1) !== 0;
    let src = installed.get(f.id);
    if (src === undefined) {
      if (f.type === fd_types.REG) {
        const reg = f.reg!;
        src = openAt(reg.name, reg.flags, "file");
        if (reg.pos > 0n) sys(NR.lseek, "lseek", src, reg.pos, SEEK_SET);
        temps.push(src);
      } else if (f.type === fd_types.PIPE) {
        const pe = f.pipe!;
        let p = pipes.get(pe.pipeId);
        if (!p) {
          p = makePipe(rs, arena, pe.pipeId, dump.pipeData.get(pe.pipeId), lift, sys);
          pipes.set(pe.pipeId, p);
          temps.push(p.r, p.w);
        }
        src = (pe.flags & O.ACCMODE) === O.RDONLY ? p.r : p.w;
        const fl = pe.flags & SETFL_MASK;
        if (fl) sys(NR.fcntl, "fcntl(F_SETFL)", src, F.SETFL, fl);
      } else if (f.type === fd_types.TTY) {
        if (!shellJob) {
          throw new RestoreError(
            `Cannot restore fd ${fdi.fd} of task ${pid}: it was a terminal; restore with --shell-job (-j)`,
          );
        }
        src = openAt(ourTerminal(), f.tty!.flags, "terminal");
        temps.push(src);
      } else {
        throw new RestoreError(
          `Cannot restore fd ${fdi.fd}: file type ${fd_types[f.type]} is not supported yet`,
        );
      }
      installed.set(f.id, fdi.fd);
    }
    sys(NR.dup3, "dup3", src, fdi.fd, cloexec ? O.CLOEXEC : 0);
    if (!cloexec) sys(NR.fcntl, "fcntl(F_SETFD)", fdi.fd, F_SETFD, 0);
  }
  for (const t of temps) sys(NR.close, "close", t);
  return { pages, maps, exe, all };
}

/**
 * The terminal of this restore (a shell job gets the caller's terminal, as with criu -j): the
 * first of our stdin, stdout, stderr that is a terminal.
 */
function ourTerminal(): string {
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

/** A pipe made in the task, holding its dumped data again. */
function makePipe(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  pipeId: number,
  content: { data: Uint8Array; size: number } | undefined,
  lift: (fd: number) => number,
  sys: (nr: number, name: string, ...args: (bigint | number)[]) => number,
): { r: number; w: number } {
  const pid = rs.task.pid;
  arena.reset();
  const pair = arena.reserve(8);
  sys(NR.pipe2, "pipe2", pair, O.CLOEXEC);
  const fds = new Int32Array(2);
  readRemote(pid, pair, new Uint8Array(fds.buffer));
  const r = lift(fds[0]), w = lift(fds[1]);
  if (content && (content.data.length || content.size)) {
    const pidfd = pidfdOpen(pid);
    let ours = -1;
    try {
      ours = pidfdGetfd(pidfd, w, pid);
      if (content.size) {
        try {
          fcntl(ours, F.SETPIPE_SZ, content.size);
        } catch (e) {
          throw new RestoreError(`Cannot give pipe ${pipeId} its size of ${content.size} bytes`, {
            cause: e,
          });
        }
      }
      if (content.data.length) writeAll(ours, content.data, `pipe ${pipeId}`);
    } finally {
      if (ours >= 0) close(ours);
      close(pidfd);
    }
  }
  return { r, w };
}
