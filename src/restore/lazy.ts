/**
 * The restore's side of a lazy restore (`criu restore --lazy-pages`): the lazy pages of each
 * process are left out of its memory (restore/memory.ts), its private mappings that hold them
 * are registered for missing pages on a userfaultfd made in the process, and that descriptor
 * goes to `criu lazy-pages` (lazy/daemon.ts), which brings the pages in from then on.
 *
 * On lazy-pages.socket in the work directory, as criu's restore speaks to it: for each task of
 * the images an int32, its id, then one byte carrying its userfaultfd (SCM_RIGHTS); a negative
 * id for a process with nothing lazy (a zombie); after the last task, the u32 "RSTF".
 *
 * @module
 */
import type { vma_entry } from "../../proto/gen/mm_pb.ts";
import { PE_LAZY } from "../pagemap/pagemap.ts";
import { lazyFillable } from "../pagemap/vma.ts";
import {
  LAZY_HELLO_MAGIC,
  LAZY_HELLO_PARENTS,
  LAZY_PAGES_SOCKET,
  LAZY_RESTORE_FINISHED,
} from "../lazy/daemon.ts";
import {
  close,
  Errno,
  NR,
  O,
  open,
  pidfdOpen,
  POLLIN,
  pollIn,
  readRemote,
  withTaskFd,
  writeAll,
  writeRemote,
} from "../syscalls/mod.ts";
import {
  AF_UNIX,
  connectUnix,
  recvExact,
  sendWithFds,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  socket,
} from "../syscalls/socket.ts";
import {
  UFFD_FEATURES_NONCOOP,
  UFFD_MISSING_IOCTLS,
  uffdFeatures,
  UFFDIO,
  UFFDIO_REGISTER_SIZE,
  uffdioApi,
  uffdioRegisterMissing,
} from "../syscalls/uffd.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import type { RemoteArena } from "./arena.ts";
import { RestoreError } from "./files.ts";
import type { TaskImages } from "./images.ts";
import { taskSyscall } from "./task_syscall.ts";

/**
 * Whether the `i`th pagemap entry of `task` is left to the daemon: a lazy one of these images,
 * or of their parents where the daemon takes those too (`parents`).
 */
export function leftLazy(task: TaskImages, i: number, parents: boolean): boolean {
  return (task.pagemap[i].flags & PE_LAZY) !== 0 && (parents || task.pageLevel[i] === 0);
}

/** The mappings of `task` its lazy pages lie in (each registered whole, as criu does). */
export function lazyMappings(task: TaskImages, parents: boolean): vma_entry[] {
  const out = new Set<vma_entry>();
  const sorted = [...task.mm.vmas].sort((a, b) => (a.start < b.start ? -1 : 1));
  for (const [i, e] of task.pagemap.entries()) {
    if (!leftLazy(task, i, parents)) continue;
    const end = e.vaddr + BigInt(e.nrPages) * 4096n;
    for (const v of sorted) {
      if (v.end > e.vaddr && v.start < end) out.add(v);
    }
  }
  return [...out].sort((a, b) => (a.start < b.start ? -1 : 1));
}

/**
 * Lazy pages (PE_LAZY) that lie in a mapping a lazy restore cannot fill page by page (criu
 * marks a private mapping of shared memory lazy too) are restored with the rest: their entries
 * are cut where the mappings end, and those parts lose PE_LAZY.
 */
export function keepLazyFillable(task: TaskImages): void {
  const sorted = [...task.mm.vmas].sort((a, b) => (a.start < b.start ? -1 : 1));
  const pagemap: TaskImages["pagemap"] = [];
  const pageFile: number[] = [], pageOffsets: number[] = [], pageLevel: number[] = [];
  const push = (i: number, vaddr: bigint, end: bigint, lazy: boolean) => {
    const e = task.pagemap[i];
    pagemap.push({
      vaddr,
      nrPages: Number((end - vaddr) / 4096n),
      flags: lazy ? e.flags : e.flags & ~PE_LAZY,
    });
    pageFile.push(task.pageFile[i]);
    pageOffsets.push(task.pageOffsets[i] + Number(vaddr - e.vaddr));
    pageLevel.push(task.pageLevel[i]);
  };
  task.pagemap.forEach((e, i) => {
    const end = e.vaddr + BigInt(e.nrPages) * 4096n;
    const over = sorted.filter((v) => v.end > e.vaddr && v.start < end);
    if (!(e.flags & PE_LAZY) || over.every(lazyFillable)) return push(i, e.vaddr, end, true);
    for (const v of over) {
      const s = v.start > e.vaddr ? v.start : e.vaddr;
      push(i, s, v.end < end ? v.end : end, lazyFillable(v));
    }
  });
  Object.assign(task, { pagemap, pageFile, pageOffsets, pageLevel });
}

/** How long a restore listens for our daemon's hello (criu's daemon says nothing). */
const HELLO_WAIT_MS = 500;

/** The connection to `criu lazy-pages`. */
export class LazyPagesLink implements Disposable {
  readonly #sock: number;
  readonly #features: number;
  /** The daemon takes the parent images' lazy pages too (ours said so; criu's does not). */
  readonly parents: boolean;
  /**
   * The daemon is ours (it said hello): each userfaultfd goes with a pidfd of its process, which
   * the daemon's guard kills should the daemon die before the process has all its pages.
   */
  readonly #ours: boolean;

  private constructor(sock: number, features: number, flags: number | undefined) {
    this.#sock = sock;
    this.#features = features;
    this.parents = ((flags ?? 0) & LAZY_HELLO_PARENTS) !== 0;
    this.#ours = flags !== undefined;
  }

  /** Connects to the daemon listening in work directory `workDir`. */
  static connect(workDir: string): LazyPagesLink {
    const have = uffdFeatures();
    if (have === undefined) {
      throw new RestoreError("Cannot restore lazily: this kernel offers no userfaultfd");
    }
    if ((have & UFFD_FEATURES_NONCOOP) !== UFFD_FEATURES_NONCOOP) {
      throw new RestoreError(
        "Cannot restore lazily: this kernel's userfaultfd does not report forks, mremap, " +
          "madvise and munmap (non-cooperative events)",
      );
    }
    // Through the directory's descriptor: a socket's name has room for 107 bytes only.
    const dir = open(workDir, O.PATH | O.DIRECTORY | O.CLOEXEC);
    const sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC);
    try {
      const name = `/proc/self/fd/${dir}/${LAZY_PAGES_SOCKET}`;
      connectUnix(sock, new TextEncoder().encode(name), `criu lazy-pages in ${workDir}`);
    } catch (e) {
      close(sock);
      const why = e instanceof Errno ? e.code : (e as Error).message;
      throw new RestoreError(
        `Cannot reach criu lazy-pages in ${workDir}: nothing listens on ${LAZY_PAGES_SOCKET} ` +
          `(connect: ${why})`,
      );
    } finally {
      close(dir);
    }
    // Ours says hello at once; criu's never does.
    let flags: number | undefined;
    if (pollIn([sock], HELLO_WAIT_MS)[0] & POLLIN) {
      const hello = new Uint8Array(8);
      if (recvExact(sock, hello, LAZY_PAGES_SOCKET)) {
        const [magic, f] = new Uint32Array(hello.buffer);
        if (magic === LAZY_HELLO_MAGIC) flags = f;
      }
    }
    return new LazyPagesLink(sock, UFFD_FEATURES_NONCOOP, flags);
  }

  /**
   * Registers the mappings of `task` (restored in `rs`, its pages but the lazy ones in) that
   * hold lazy pages on a new userfaultfd of its own, and hands that to the daemon; a process
   * with none is reported without one.
   */
  handOver(rs: RemoteSyscalls, arena: RemoteArena, task: TaskImages): void {
    const vpid = task.pstree.pid;
    const vmas = lazyMappings(task, this.parents);
    if (!vmas.length) return this.skip(vpid);
    const call = taskSyscall(rs);
    // Missing they must be: whatever touched one since (a read maps the zero page) goes.
    const MADV_DONTNEED = 4;
    for (const [i, e] of task.pagemap.entries()) {
      if (!leftLazy(task, i, this.parents)) continue;
      call(NR.madvise, "madvise(MADV_DONTNEED)", e.vaddr, e.nrPages * 4096, MADV_DONTNEED);
    }
    const O_NONBLOCK = 0o4000;
    const uffd = call(NR.userfaultfd, "userfaultfd", O.CLOEXEC | O_NONBLOCK);
    try {
      const mark = arena.mark();
      try {
        call(NR.ioctl, "ioctl(UFFDIO_API)", uffd, UFFDIO.API, arena.put(uffdioApi(this.#features)));
        // One struct for every mapping (a task may have thousands).
        const reg = arena.reserve(UFFDIO_REGISTER_SIZE);
        const back = new BigUint64Array(4);
        for (const v of vmas) {
          writeRemote(rs.task.pid, reg, uffdioRegisterMissing(v.start, v.end));
          call(NR.ioctl, "ioctl(UFFDIO_REGISTER)", uffd, UFFDIO.REGISTER, reg);
          readRemote(rs.task.pid, reg, new Uint8Array(back.buffer));
          if ((back[3] & UFFD_MISSING_IOCTLS) !== UFFD_MISSING_IOCTLS) {
            throw new RestoreError(
              `Cannot restore lazily: the mapping at ${v.start.toString(16)} of task ${vpid} ` +
                `cannot be filled by copy`,
            );
          }
        }
      } finally {
        arena.release(mark);
      }
      withTaskFd(rs.task.pid, uffd, (copy) => {
        writeAll(this.#sock, new Uint8Array(new Int32Array([vpid]).buffer), "criu lazy-pages");
        const pidfd = this.#ours ? pidfdOpen(rs.task.pid) : -1;
        try {
          sendWithFds(
            this.#sock,
            new Uint8Array(1),
            pidfd >= 0 ? [copy, pidfd] : [copy],
            "criu lazy-pages",
          );
        } finally {
          if (pidfd >= 0) close(pidfd);
        }
      });
    } finally {
      rs.call(NR.close, uffd);
    }
  }

  /** Reports process `vpid` (a zombie, or one with nothing lazy) without a userfaultfd. */
  skip(vpid: number): void {
    writeAll(this.#sock, new Uint8Array(new Int32Array([-vpid]).buffer), "criu lazy-pages");
  }

  /** Tells the daemon the restore has finished: it brings the rest in now. */
  finish(): void {
    const word = new Uint8Array(new Uint32Array([LAZY_RESTORE_FINISHED]).buffer);
    writeAll(this.#sock, word, "criu lazy-pages");
  }

  [Symbol.dispose](): void {
    close(this.#sock);
  }
}
