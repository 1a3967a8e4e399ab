/**
 * Typed wrappers for the non-ptrace calls deno-criu makes: cross-process memory access, kcmp,
 * pipes, descriptors and clocks.
 *
 * @module
 */
import { Errno, orErrno, unwrap } from "./errno.ts";
import { addressOf, cString, lastErrno, libc } from "./ffi.ts";
import { NR } from "./syscall_numbers.ts";
import type { RemotePtr } from "./remote_ptr.ts";

/** The page size (x86-64). */
export const PAGE_SIZE = 4096;

/** `syscall(nr, ...)` returning the raw result (negative means errno is set). */
export function rawSyscall(nr: number, ...args: (bigint | number)[]): bigint {
  const a = [...args, 0, 0, 0, 0, 0, 0].slice(0, 6) as (bigint | number)[];
  const b = a.map((x) => BigInt(x));
  const ret = libc.syscall(BigInt(nr), b[0], b[1], b[2], b[3], b[4], b[5]);
  return typeof ret === "bigint" ? ret : BigInt(ret);
}

/**
 * Reads `len` bytes at `addr` in task `pid` into `dst` (from `dstOffset`) with
 * process_vm_readv. Returns the bytes read (short on a partial read).
 */
export function readRemote(
  pid: number,
  addr: RemotePtr,
  dst: Uint8Array,
  dstOffset = 0,
  len = dst.length - dstOffset,
): number {
  const local = new BigUint64Array([addressOf(dst) + BigInt(dstOffset), BigInt(len)]);
  const remote = new BigUint64Array([addr, BigInt(len)]);
  const ret = libc.process_vm_readv(
    pid,
    new Uint8Array(local.buffer),
    1n,
    new Uint8Array(remote.buffer),
    1n,
    0n,
  );
  return Number(unwrap(ret, "process_vm_readv", `task ${pid} at 0x${addr.toString(16)}`));
}

/**
 * Gathers many remote ranges into `dst` with one process_vm_readv call.
 * `ranges` holds (address, length) pairs; their lengths must sum to at most `dst.length`.
 */
export function readRemoteVec(pid: number, ranges: BigUint64Array, dst: Uint8Array): number {
  let total = 0n;
  for (let i = 1; i < ranges.length; i += 2) total += ranges[i];
  const local = new BigUint64Array([addressOf(dst), total]);
  const ret = libc.process_vm_readv(
    pid,
    new Uint8Array(local.buffer),
    1n,
    new Uint8Array(ranges.buffer, ranges.byteOffset, ranges.byteLength),
    BigInt(ranges.length / 2),
    0n,
  );
  return Number(unwrap(ret, "process_vm_readv", `task ${pid}`));
}

/** Writes `src` at `addr` in task `pid` with process_vm_writev. */
export function writeRemote(pid: number, addr: RemotePtr, src: Uint8Array): void {
  const local = new BigUint64Array([addressOf(src), BigInt(src.length)]);
  const remote = new BigUint64Array([addr, BigInt(src.length)]);
  const ret = libc.process_vm_writev(
    pid,
    new Uint8Array(local.buffer),
    1n,
    new Uint8Array(remote.buffer),
    1n,
    0n,
  );
  const n = Number(unwrap(ret, "process_vm_writev", `task ${pid} at 0x${addr.toString(16)}`));
  if (n !== src.length) {
    throw new Errno("process_vm_writev", 14, `task ${pid} at 0x${addr.toString(16)}`);
  }
}

/** kcmp types. */
export const KCMP = { FILE: 0, VM: 1, FILES: 2, FS: 3, SIGHAND: 4, IO: 5, SYSVSEM: 6 } as const;

/**
 * kcmp(2): orders two kernel objects of two tasks. Returns 0 when they are the same object,
 * 1/2 for less/greater (an ordering of pointers), 3 when they differ but cannot be ordered.
 */
export function kcmp(pid1: number, pid2: number, type: number, idx1 = 0, idx2 = 0): number {
  return Number(
    unwrap(rawSyscall(NR.kcmp, pid1, pid2, type, idx1, idx2), "kcmp", `tasks ${pid1} and ${pid2}`),
  );
}

/** setpriority(PRIO_PROCESS): the nice value of process `pid`'s threads (those it has). */
export function setNice(pid: number, nice: number): void {
  const PRIO_PROCESS = 0;
  unwrap(rawSyscall(NR.setpriority, PRIO_PROCESS, pid, nice), "setpriority", `task ${pid}`);
}

/**
 * kcmp(KCMP_EPOLL_TFD): whether descriptor `fd` of task `pid` is the file that the epoll set
 * `efd` of task `epPid` (the same task by default) watches as the `toff`-th target added under
 * descriptor number `tfd`.
 */
export function kcmpEpollTarget(
  pid: number,
  fd: number,
  efd: number,
  tfd: number,
  toff: number,
  epPid = pid,
): boolean {
  const slot = new Uint32Array([efd, tfd, toff]);
  const KCMP_EPOLL_TFD = 7;
  const ret = rawSyscall(
    NR.kcmp,
    pid,
    epPid,
    KCMP_EPOLL_TFD,
    fd,
    addressOf(new Uint8Array(slot.buffer)),
  );
  return ret === 0n;
}

/** get_robust_list(2) of another task: the list head address and its length. */
export function getRobustList(tid: number): { head: bigint; len: number } {
  const head = new BigUint64Array(1);
  const len = new BigUint64Array(1);
  unwrap(
    rawSyscall(NR.get_robust_list, tid, addressOf(head), addressOf(len)),
    "get_robust_list",
    `task ${tid}`,
  );
  return { head: head[0], len: Number(len[0]) };
}

/**
 * Runs `fn` with this thread's file-system ids set to `uid` and `gid` (what it creates is
 * theirs, and a file system of a user namespace takes only files of ids it maps), its
 * capabilities kept (SECBIT_NO_SETUID_FIXUP for the moment). Everything in `fn` must run on
 * this thread: synchronous calls only.
 */
export function withFsIds<T>(uid: number, gid: number, fn: () => T): T {
  const PR_GET_SECUREBITS = 27, PR_SET_SECUREBITS = 28, SECBIT_NO_SETUID_FIXUP = 1 << 2;
  const bits = Number(rawSyscall(NR.prctl, PR_GET_SECUREBITS));
  unwrap(
    rawSyscall(NR.prctl, PR_SET_SECUREBITS, bits | SECBIT_NO_SETUID_FIXUP),
    "prctl(PR_SET_SECUREBITS)",
  );
  // setfsuid and setfsgid answer with the ids they replace.
  const oldGid = Number(rawSyscall(NR.setfsgid, gid));
  const oldUid = Number(rawSyscall(NR.setfsuid, uid));
  try {
    return fn();
  } finally {
    rawSyscall(NR.setfsuid, oldUid);
    rawSyscall(NR.setfsgid, oldGid);
    rawSyscall(NR.prctl, PR_SET_SECUREBITS, bits);
  }
}

/** open(2) returning the fd. */
export function open(path: string, flags: number, mode = 0): number {
  return unwrap(libc.open(cString(path), flags, mode), "open", path);
}

/** open(2) returning `-errno` on failure. */
export function tryOpen(path: string, flags: number, mode = 0): number {
  return orErrno(libc.open(cString(path), flags, mode));
}

/** close(2); errors are ignored as there is nothing to do about them. */
export function close(fd: number): void {
  libc.close(fd);
}

/** read(2) returning the count, or `-errno`. */
export function tryRead(fd: number, buf: Uint8Array, len = buf.length): number {
  return orErrno(libc.read(fd, buf, BigInt(len)));
}

/** write(2) of a whole buffer (loops on short writes). */
export function writeAll(fd: number, buf: Uint8Array, what: string): void {
  let done = 0;
  while (done < buf.length) {
    const chunk = done === 0 ? buf : buf.subarray(done);
    const n = Number(libc.write(fd, chunk, BigInt(chunk.length)));
    if (n < 0) {
      const errno = lastErrno();
      if (errno === 4) continue;
      throw new Errno("write", errno, what);
    }
    done += n;
  }
}

/** pwrite(2) of a whole buffer at `offset` (loops on short writes). */
export function pwriteAll(fd: number, buf: Uint8Array, offset: bigint, what: string): void {
  let done = 0;
  while (done < buf.length) {
    const chunk = buf.subarray(done);
    const n = Number(libc.pwrite64(fd, chunk, BigInt(chunk.length), offset + BigInt(done)));
    if (n < 0) {
      const errno = lastErrno();
      if (errno === 4) continue;
      throw new Errno("pwrite", errno, what);
    }
    done += n;
  }
}

/** pread(2) returning the count. */
export function pread(fd: number, buf: Uint8Array, offset: number | bigint, what: string): number {
  return Number(unwrap(libc.pread64(fd, buf, BigInt(buf.length), BigInt(offset)), "pread", what));
}

/** O_* open flags. */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  ACCMODE: 3,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
} as const;

/** fcntl commands. */
export const F = {
  GETFD: 1,
  SETFD: 2,
  GETFL: 3,
  SETFL: 4,
  GETOWN: 9,
  SETSIG: 10,
  GETSIG: 11,
  SETOWN_EX: 15,
  GETOWN_EX: 16,
  GETOWNER_UIDS: 17,
  DUPFD_CLOEXEC: 1030,
  SETPIPE_SZ: 1031,
  GETPIPE_SZ: 1032,
} as const;

/** fcntl(fd, cmd, arg). */
export function fcntl(fd: number, cmd: number, arg = 0): number {
  return unwrap(libc.fcntl(fd, cmd, BigInt(arg)), `fcntl(${cmd})`, `fd ${fd}`);
}

/**
 * Sets or clears FD_CLOEXEC on `fd`: cleared, a child criu starts inherits it at its number
 * (how a socket or pipe is handed to `criu swrk` or a daemon); set, none does.
 */
export function setCloseOnExec(fd: number, on: boolean): void {
  const FD_CLOEXEC = 1;
  const flags = fcntl(fd, F.GETFD);
  fcntl(fd, F.SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC);
}

/**
 * Who gets the I/O signals of an open file description (O_ASYNC): F_GETOWN_EX (`struct
 * f_owner_ex {int type; pid_t pid;}`: type 0 a thread, 1 a process, 2 a process group), the
 * signal (F_GETSIG, 0 for SIGIO), and the real and effective uid of whoever set the owner
 * (F_GETOWNER_UIDS, which the kernel keeps for checkpoint/restore).
 */
export interface FileOwner {
  type: number;
  pid: number;
  signum: number;
  uid: number;
  euid: number;
}

/** The owner of the description behind `fd` (see {@link FileOwner}). */
export function getFileOwner(fd: number): FileOwner {
  const ex = new Int32Array(2);
  unwrap(libc.fcntl(fd, F.GETOWN_EX, addressOf(ex)), "fcntl(F_GETOWN_EX)", `fd ${fd}`);
  const signum = fcntl(fd, F.GETSIG);
  const uids = new Int32Array(2);
  if (ex[1] !== 0) {
    unwrap(libc.fcntl(fd, F.GETOWNER_UIDS, addressOf(uids)), "fcntl(F_GETOWNER_UIDS)", `fd ${fd}`);
  }
  return { type: ex[0], pid: ex[1], signum, uid: uids[0] >>> 0, euid: uids[1] >>> 0 };
}

/**
 * Gives the description behind `fd` its owner and signal. The kernel records the caller's uid
 * and euid with the owner (they decide whether the signal may be sent): the calling thread
 * takes the owner's for the moment (setresuid on this thread only, then back).
 */
export function setFileOwner(fd: number, o: FileOwner): void {
  if (o.signum) fcntl(fd, F.SETSIG, o.signum);
  if (!o.pid) return;
  const ids = new Int32Array(3);
  unwrap(
    Number(rawSyscall(NR.getresuid, addressOf(ids), addressOf(ids) + 4n, addressOf(ids) + 8n)),
    "getresuid",
  );
  const setres = (r: number, e: number) =>
    unwrap(Number(rawSyscall(NR.setresuid, r, e, 0xffffffff)), "setresuid", "the file owner ids");
  setres(o.uid, o.euid);
  try {
    const ex = new Int32Array([o.type, o.pid]);
    unwrap(libc.fcntl(fd, F.SETOWN_EX, addressOf(ex)), "fcntl(F_SETOWN_EX)", `fd ${fd}`);
  } finally {
    setres(ids[0] >>> 0, ids[1] >>> 0);
  }
}

/** pipe2(2): returns [readEnd, writeEnd]. */
export function pipe2(flags: number): [number, number] {
  const fds = new Int32Array(2);
  unwrap(libc.pipe2(new Uint8Array(fds.buffer), flags), "pipe2");
  return [fds[0], fds[1]];
}

/** tgkill(2): 0, or -errno (-ESRCH once thread `tid` of `tgid` is gone and its id free). */
export function tryTgkill(tgid: number, tid: number, sig: number): number {
  return orErrno(rawSyscall(NR.tgkill, tgid, tid, sig));
}

const NAP = new Int32Array(new SharedArrayBuffer(4));
/** prctl(PR_SET_TIMERSLACK): how late the kernel may wake this thread from a timed wait. */
const PR_SET_TIMERSLACK = 29;
let slackSet = false;

/**
 * Blocks this thread for `ms` milliseconds (fractions too), the event loop with it: the pause
 * of a polling loop that must not yield (ptrace stops, a terminal's queues, a busy socket).
 * The first nap sets this thread's timer slack to a nanosecond: with the default 50 us a nap
 * of 20 us took ~130 us here, and the bench's tree dump naps 50-100 times (~150 us each
 * before, ~100 after: 4-6 ms of its ~650).
 */
export function nap(ms: number): void {
  if (!slackSet) {
    slackSet = true;
    rawSyscall(NR.prctl, PR_SET_TIMERSLACK, 1);
  }
  Atomics.wait(NAP, 0, 0, ms);
}

/**
 * Waits `ms` milliseconds, letting the event loop run (signals, messages) meanwhile: usleep on
 * a worker thread. Unlike a timer it keeps a process alive until it ends.
 */
export async function sleep(ms: number): Promise<void> {
  await libc.usleep_nb(Math.max(0, Math.round(ms * 1000)));
}

/** tee(2): duplicates up to `len` bytes from pipe `fdIn` to pipe `fdOut` without consuming them. */
export function tee(fdIn: number, fdOut: number, len: number, flags: number): number {
  return orErrno(libc.tee(fdIn, fdOut, BigInt(len), flags));
}

/** SPLICE_F_NONBLOCK. */
export const SPLICE_F_NONBLOCK = 2;

/** pidfd_open(2). */
export function pidfdOpen(pid: number, flags = 0): number {
  return Number(syscall(NR.pidfd_open, "pidfd_open", `task ${pid}`, pid, flags));
}

/**
 * Runs `fn` with a copy, in this process, of descriptor `fd` of task `pid` (pidfd_getfd); the
 * copy is closed after.
 */
export function withTaskFd<T>(pid: number, fd: number, fn: (copy: number) => T): T {
  const pidfd = pidfdOpen(pid);
  try {
    const copy = pidfdGetfd(pidfd, fd, pid);
    try {
      return fn(copy);
    } finally {
      close(copy);
    }
  } finally {
    close(pidfd);
  }
}

/** pidfd_getfd(2): a duplicate, in this process, of descriptor `fd` of the task. */
export function pidfdGetfd(pidfd: number, fd: number, pid: number): number {
  return Number(syscall(NR.pidfd_getfd, "pidfd_getfd", `fd ${fd} of task ${pid}`, pidfd, fd, 0));
}

/** ioctl(fd, request, buf). */
export function ioctl(fd: number, req: number, buf: Uint8Array, what: string): number {
  return unwrap(libc.ioctl(fd, BigInt(req), buf), `ioctl(0x${req.toString(16)})`, what);
}

/** Clock ids. */
export const CLOCK = { REALTIME: 0, MONOTONIC: 1, BOOTTIME: 7 } as const;

/** clock_gettime(2) as [seconds, nanoseconds]. */
export function clockGettime(clock: number): [bigint, bigint] {
  const ts = new BigInt64Array(2);
  unwrap(libc.clock_gettime(clock, new Uint8Array(ts.buffer)), "clock_gettime");
  return [ts[0], ts[1]];
}

/** Frees `len` bytes at `offset` of file `fd`, its size kept (FALLOC_FL_PUNCH_HOLE). */
export function punchHole(fd: number, offset: bigint, len: bigint, what: string): void {
  const FALLOC_FL_KEEP_SIZE = 1n, FALLOC_FL_PUNCH_HOLE = 2n;
  const mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  unwrap(
    libc.syscall(BigInt(NR.fallocate), BigInt(fd), mode, offset, len, 0n, 0n),
    "fallocate",
    what,
  );
}

/** fsync(2). */
export function fsync(fd: number, what: string): void {
  unwrap(libc.fsync(fd), "fsync", what);
}

/**
 * Starts the writeback of file `fd`'s dirty pages and returns (sync_file_range(2) with
 * SYNC_FILE_RANGE_WRITE): they go to the disk while the caller goes on, and a later fsync finds
 * less to wait for. Makes nothing durable; a failure is ignored (the fsync reports it).
 */
export function startWriteback(fd: number): void {
  const SYNC_FILE_RANGE_WRITE = 2;
  rawSyscall(NR.sync_file_range, fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

/**
 * What {@link zeroPagePfn} gives on a kernel that maps no shared zero page (a PVM guest booted
 * with pvm_no_zero_page, say): a frame beyond any machine's memory, which no page has, so that
 * every present page is dumped (a page only read is one of its own there, of zeros).
 */
export const NO_ZERO_PAGE = (1n << 53n) - 1n;

/**
 * The page frame number of the kernel's shared zero page; {@link NO_ZERO_PAGE} on a kernel that
 * has none; -1n when hidden: without CAP_SYS_ADMIN pagemap shows 0 for every frame (then no
 * page can be told to be the zero page, and every present page must be dumped).
 *
 * Two pages are read, not one: with the zero page both show its frame; without it each is a page
 * of its own, whose frame, freed once unmapped, any task may be given next (its pages taken for
 * the zero page's would be lost from the dump).
 */
export function zeroPagePfn(): bigint {
  // The kernel's, found once.
  zeroPfn ??= withScratchPage(
    (address) => {
      const [a, b] = pageFrames("self", address, 2);
      if (a <= 0n || b <= 0n) return -1n;
      return a === b ? a : NO_ZERO_PAGE;
    },
    false,
    2,
  ) ?? -1n;
  return zeroPfn;
}
let zeroPfn: bigint | undefined;

/**
 * Runs `fn` with `pages` private anonymous pages here, each faulted in (written where `write`,
 * else read, which maps the shared zero page where the kernel has one), unmapped after;
 * undefined where no page could be mapped.
 */
export function withScratchPage<T>(
  fn: (address: bigint) => T,
  write = true,
  pages = 1,
): T | undefined {
  const PROT_READ = 1, PROT_WRITE = 2, MAP_PRIVATE = 2, MAP_ANONYMOUS = 0x20;
  const prot = PROT_READ | (write ? PROT_WRITE : 0);
  const len = BigInt(pages * PAGE_SIZE);
  const addr = BigInt(libc.mmap(0n, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n));
  if (addr === 0xffffffffffffffffn) return undefined;
  try {
    const ptr = Deno.UnsafePointer.create(addr);
    if (ptr === null) return undefined;
    for (let i = 0; i < pages; i++) {
      const at = i * PAGE_SIZE;
      if (write) new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, 1, at))[0] = 1;
      else new Deno.UnsafePointerView(ptr).getUint8(at);
    }
    return fn(addr);
  } finally {
    libc.munmap(addr, len);
  }
}

/**
 * The page frames of `count` pages of process `pid` ("self" for criu) from `address` on, by
 * /proc/PID/pagemap: -1n where no page is present, 0n where frames are hidden (without
 * CAP_SYS_ADMIN).
 */
export function pageFrames(pid: number | "self", address: bigint, count: number): bigint[] {
  const path = `/proc/${pid}/pagemap`;
  const fd = open(path, O.RDONLY | O.CLOEXEC);
  try {
    const entries = new BigUint64Array(count);
    const got = pread(fd, new Uint8Array(entries.buffer), (address / BigInt(PAGE_SIZE)) * 8n, path);
    return [...entries.subarray(0, got / 8)].map((e) =>
      (e >> 63n) & 1n ? e & ((1n << 55n) - 1n) : -1n
    );
  } finally {
    close(fd);
  }
}

/** Raw `syscall(2)` with errno funnel, for calls without a dedicated wrapper. */
export function syscall(
  nr: number,
  name: string,
  target: string,
  ...args: (bigint | number)[]
): bigint {
  const ret = rawSyscall(nr, ...args);
  if (ret < 0n) throw new Errno(name, lastErrno(), target);
  return ret;
}

/** A file's times to the nanosecond and its device, as statx(2) gives them. */
export interface FileStamp {
  atime: { sec: bigint; nsec: number };
  mtime: { sec: bigint; nsec: number };
  /** The device the file lives on. */
  devMajor: number;
  devMinor: number;
}

/** statx(2) of `path` (following symlinks, as /proc/PID/fd links are followed). */
export function statStamp(path: string): FileStamp {
  const buf = new Uint8Array(256);
  const AT_FDCWD = -100, STATX_BASIC_STATS = 0x7ff;
  const name = cString(path);
  syscall(NR.statx, "statx", path, AT_FDCWD, addressOf(name), 0, STATX_BASIC_STATS, addressOf(buf));
  const v = new DataView(buf.buffer);
  const ts = (off: number) => ({ sec: v.getBigInt64(off, true), nsec: v.getUint32(off + 8, true) });
  return {
    atime: ts(64),
    mtime: ts(112),
    devMajor: v.getUint32(136, true),
    devMinor: v.getUint32(140, true),
  };
}

/** utimensat(2): sets `path`'s access and modification times, to the nanosecond. */
export function setFileTimes(
  path: string,
  atime: { sec: bigint; nsec: number },
  mtime: { sec: bigint; nsec: number },
): void {
  const AT_FDCWD = -100;
  const name = cString(path);
  const times = new BigInt64Array([atime.sec, BigInt(atime.nsec), mtime.sec, BigInt(mtime.nsec)]);
  syscall(
    NR.utimensat,
    "utimensat",
    path,
    AT_FDCWD,
    addressOf(name),
    addressOf(new Uint8Array(times.buffer)),
    0,
  );
}

/** linkat(2) following `from` (a /proc/PID/fd link): gives an open file a name again. */
export function linkAt(from: string, to: string): void {
  const AT_FDCWD = -100, AT_SYMLINK_FOLLOW = 0x400;
  const a = cString(from), b = cString(to);
  syscall(
    NR.linkat,
    "linkat",
    to,
    AT_FDCWD,
    addressOf(a),
    AT_FDCWD,
    addressOf(b),
    AT_SYMLINK_FOLLOW,
  );
}

/** readlinkat(fd, "", ...): the target of the symlink `fd` (opened O_PATH | O_NOFOLLOW). */
export function readLinkAt(fd: number): string {
  const buf = new Uint8Array(4096);
  const empty = cString("");
  const n = syscall(
    NR.readlinkat,
    "readlinkat",
    `fd ${fd}`,
    fd,
    addressOf(empty),
    addressOf(buf),
    buf.length,
  );
  return new TextDecoder().decode(buf.subarray(0, Number(n)));
}

/** poll(2) events. */
export const POLLIN = 0x1, POLLERR = 0x8, POLLHUP = 0x10, POLLRDHUP = 0x2000;

/**
 * poll(2) of one descriptor for `events`, at once: whether it is readable, whether its peer hung
 * up, whether its reading side was shut down (POLLRDHUP, when asked).
 */
export function pollNow(
  fd: number,
  events = POLLIN,
): { readable: boolean; hangup: boolean; rdhup: boolean; error: boolean } {
  const pfd = new Uint8Array(8);
  const v = new DataView(pfd.buffer);
  v.setInt32(0, fd, true);
  v.setInt16(4, events, true);
  const ret = rawSyscall(NR.poll, addressOf(pfd), 1, 0);
  const rev = ret < 0n ? 0 : v.getInt16(6, true);
  return {
    readable: (rev & POLLIN) !== 0,
    hangup: (rev & POLLHUP) !== 0,
    rdhup: (rev & POLLRDHUP) !== 0,
    error: (rev & POLLERR) !== 0,
  };
}

/**
 * A new object of shared anonymous memory (what mmap(MAP_SHARED | MAP_ANONYMOUS) makes: a shmem
 * file named /dev/zero, deleted; with MAP_HUGETLB flags, a hugetlbfs one) of `size` bytes, as a
 * descriptor: mapped here for a moment, opened through /proc/self/map_files, unmapped.
 */
export function anonSharedMemory(size: bigint, what: string, hugetlbFlags = 0): number {
  const PROT_RW = 3, MAP_SHARED = 1, MAP_ANONYMOUS = 0x20;
  const addr = BigInt(
    libc.mmap(0n, size, PROT_RW, MAP_SHARED | MAP_ANONYMOUS | hugetlbFlags, -1, 0n),
  );
  if (addr === 0xffffffffffffffffn) throw new Errno("mmap", lastErrno(), what);
  try {
    return open(
      `/proc/self/map_files/${addr.toString(16)}-${(addr + size).toString(16)}`,
      O.RDWR | O.CLOEXEC,
    );
  } finally {
    libc.munmap(addr, size);
  }
}

/**
 * Runs `fn` with a shared mapping of `size` bytes of `fd` (from `offset`) here, as bytes (for
 * files that take no write(2), as hugetlbfs ones, or an io_uring instance's rings); unmapped
 * after.
 */
export function withSharedMapping<T>(
  fd: number,
  size: bigint,
  what: string,
  fn: (bytes: Uint8Array) => T,
  offset = 0n,
): T {
  const PROT_RW = 3, MAP_SHARED = 1;
  const addr = BigInt(libc.mmap(0n, size, PROT_RW, MAP_SHARED, fd, offset));
  if (addr === 0xffffffffffffffffn) throw new Errno("mmap", lastErrno(), what);
  try {
    const ptr = Deno.UnsafePointer.create(addr)!;
    return fn(new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, Number(size))));
  } finally {
    libc.munmap(addr, size);
  }
}

/**
 * open_by_handle_at(2): the file a handle names (`type` and `handle` as fdinfo shows them) on
 * the file system of `mountFd`, or -errno.
 */
export function tryOpenByHandle(
  mountFd: number,
  type: number,
  handle: Uint8Array,
  flags: number,
): number {
  // struct file_handle: handle_bytes (u32), handle_type (i32), f_handle[].
  const fh = new Uint8Array(8 + handle.length);
  const v = new DataView(fh.buffer);
  v.setUint32(0, handle.length, true);
  v.setInt32(4, type, true);
  fh.set(handle, 8);
  const ret = rawSyscall(NR.open_by_handle_at, mountFd, addressOf(fh), flags);
  return ret < 0n ? -lastErrno() : Number(ret);
}

/** The kernel's number of a device (major << 20 | minor, as fdinfo shows it) as stat gives it. */
export function userDev(kdev: number): number {
  const major = kdev >>> 20, minor = kdev & 0xfffff;
  return (minor & 0xff) + (major & 0xfff) * 0x100 + (minor >>> 8) * 0x100000;
}

/** fstatfs(2) of `fd`: the file system's magic number and block size. */
export function fileSystemOf(fd: number, what: string): { type: bigint; blockSize: bigint } {
  // struct statfs (x86-64): f_type, f_bsize, ... (120 bytes).
  const buf = new BigInt64Array(15);
  syscall(NR.fstatfs, "fstatfs", what, fd, addressOf(new Uint8Array(buf.buffer)));
  return { type: BigInt.asUintN(64, buf[0]), blockSize: buf[1] };
}

/** statfs f_type of the file systems in memory whose fsync does nothing: tmpfs, ramfs. */
export const MEMORY_FS_MAGICS: readonly bigint[] = [0x01021994n, 0x858458f6n];

/** Whether `fd` is on a file system in memory (tmpfs, ramfs): its fsync does nothing. */
export function inMemoryFs(fd: number, what: string): boolean {
  return MEMORY_FS_MAGICS.includes(fileSystemOf(fd, what).type);
}

/** HUGETLBFS_MAGIC: hugetlbfs (hugetlb memfds and anonymous hugetlb memory live there). */
export const HUGETLBFS_MAGIC = 0x958458f6n;

/** statfs f_type of cgroup (v1) and cgroup2 file systems. */
export const CGROUP_MAGICS: readonly bigint[] = [0x27e0ebn, 0x63677270n];

/** PAGEMAP_SCAN page categories (linux/fs.h). */
export const PAGE_IS = {
  WRITTEN: 1 << 1,
  FILE: 1 << 2,
  PRESENT: 1 << 3,
  SWAPPED: 1 << 4,
  PFNZERO: 1 << 5,
  GUARD: 1 << 8,
} as const;

/**
 * PAGEMAP_SCAN on `/proc/PID/pagemap` descriptor `fd`: the regions between `start` and `end`
 * whose pages are all in `categories` (with `anyOf`, in any of them) and in none of `none`,
 * or -errno (EINVAL: a category this kernel lacks).
 */
export function pagemapScan(
  fd: number,
  start: bigint,
  end: bigint,
  categories: number,
  anyOf = false,
  none = 0,
): { start: bigint; end: bigint }[] | number {
  const VEC = 512;
  const regions = new BigUint64Array(VEC * 3); // struct page_region: start, end, categories
  const out: { start: bigint; end: bigint }[] = [];
  const ret = pagemapWalk(fd, start, end, (arg) => {
    arg[5] = addressOf(new Uint8Array(regions.buffer));
    arg[6] = BigInt(VEC);
    arg[anyOf ? 10 : 9] = BigInt(categories);
    // category_inverted, category_mask: each of `none` must be clear.
    arg[8] = BigInt(none);
    arg[9] |= BigInt(none);
    arg[11] = BigInt(categories);
  }, (n) => {
    for (let i = 0; i < n; i++) out.push({ start: regions[3 * i], end: regions[3 * i + 1] });
  });
  return ret < 0 ? ret : out;
}

/**
 * PAGEMAP_SCAN over [start, end) of `/proc/PID/pagemap` descriptor `fd`, as many calls as the
 * walk takes: `fill` sets each call's struct pm_scan_arg (as u64 words: size, flags, start,
 * end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
 * category_anyof_mask, return_mask) past its size and range; `each` gets each call's region
 * count. 0, or -errno.
 */
export function pagemapWalk(
  fd: number,
  start: bigint,
  end: bigint,
  fill: (arg: BigUint64Array) => void,
  each?: (regions: number) => void,
): number {
  const PAGEMAP_SCAN = 0xc0606610n;
  const arg = new BigUint64Array(12);
  for (let at = start; at < end;) {
    arg.fill(0n);
    arg[0] = 96n;
    arg[2] = at;
    arg[3] = end;
    fill(arg);
    const n = Number(libc.ioctl(fd, PAGEMAP_SCAN, new Uint8Array(arg.buffer)));
    if (n < 0) return -lastErrno();
    each?.(n);
    if (arg[4] <= at) break;
    at = arg[4]; // walk_end
  }
  return 0;
}

/**
 * Runs `fn` with this process's root and working directory at directory `dir` (chroot), then
 * puts both back (through descriptors of the old ones). Process-wide: only for short,
 * synchronous work that names paths of another mount namespace (`dir` being
 * /proc/PID/root), such as binding a unix socket at its own name there.
 */
export function withRootAt<T>(dir: string, fn: () => T): T {
  const flags = 0o10000000 /* O_PATH */ | 0o200000 /* O_DIRECTORY */ | 0o2000000; /* O_CLOEXEC */
  const oldRoot = open("/", flags);
  const oldCwd = open(".", flags);
  const root = tryOpen(dir, flags);
  try {
    if (root < 0) throw new Errno("open", -root, dir);
    syscall(NR.fchdir, "fchdir", dir, root);
    syscall(NR.chroot, "chroot", dir, addressOf(cString(".")));
    try {
      return fn();
    } finally {
      // Back: the old root through its descriptor, then the old working directory.
      syscall(NR.fchdir, "fchdir", "/", oldRoot);
      syscall(NR.chroot, "chroot", "/", addressOf(cString(".")));
      syscall(NR.fchdir, "fchdir", "the working directory", oldCwd);
    }
  } finally {
    for (const fd of [root, oldCwd, oldRoot]) if (fd >= 0) close(fd);
  }
}

/** A whole file mapped read-only here (private): its address and length (0 for an empty file). */
export function mapFileReadOnly(path: string): { addr: bigint; len: bigint } {
  const len = BigInt(Deno.statSync(path).size);
  if (len === 0n) return { addr: 0n, len };
  const fd = open(path, O.RDONLY | O.CLOEXEC);
  try {
    const PROT_READ = 1, MAP_PRIVATE = 2;
    const addr = BigInt(libc.mmap(0n, len, PROT_READ, MAP_PRIVATE, fd, 0n));
    if (addr === 0xffffffffffffffffn) throw new Errno("mmap", lastErrno(), path);
    return { addr, len };
  } finally {
    close(fd);
  }
}

/**
 * The file `fd` (`what`) sized to `len` bytes and mapped here shared for writing, its pages
 * made at once (MAP_POPULATE: one pass instead of a fault per page). Unmap with unmapHere.
 */
export function mapFileForWriting(fd: number, len: number, what: string): bigint {
  ftruncate(fd, len, what);
  const PROT_RW = 3, MAP_SHARED = 1, MAP_POPULATE = 0x8000;
  const addr = BigInt(libc.mmap(0n, BigInt(len), PROT_RW, MAP_SHARED | MAP_POPULATE, fd, 0n));
  if (addr === 0xffffffffffffffffn) throw new Errno("mmap", lastErrno(), what);
  return addr;
}

/** ftruncate(2): file `fd` made `len` bytes long. */
export function ftruncate(fd: number, len: number, what: string): void {
  unwrap(rawSyscall(NR.ftruncate, fd, len), "ftruncate", what);
}

/** A view (no copy) of `len` bytes of this process's own memory at `addr`. */
export function viewAt(addr: bigint, len: number): Uint8Array {
  const ptr = Deno.UnsafePointer.create(addr);
  if (!ptr || len === 0) return new Uint8Array(0);
  return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, len));
}

/** munmap(2) of a mapping of this process. */
export function unmapHere(addr: bigint, len: bigint): void {
  if (len > 0n) libc.munmap(addr, len);
}

/** A copy of `len` bytes of this process's own memory at `addr` (a mapping of its own). */
export function bytesAt(addr: bigint, len: number): Uint8Array {
  const ptr = Deno.UnsafePointer.create(addr);
  if (!ptr || len === 0) return new Uint8Array(0);
  return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, len)).slice();
}

/**
 * poll(2) of `fds` for input, waiting up to `timeoutMs` (-1: as long as it takes; an
 * interrupted wait returns early): the events of each (POLLIN, POLLHUP, ...), 0 where none.
 */
export function pollIn(fds: number[], timeoutMs: number): number[] {
  const pfd = new Uint8Array(8 * fds.length);
  const v = new DataView(pfd.buffer);
  fds.forEach((fd, i) => {
    v.setInt32(i * 8, fd, true);
    v.setInt16(i * 8 + 4, POLLIN, true);
  });
  const ret = rawSyscall(NR.poll, addressOf(pfd), fds.length, timeoutMs);
  if (ret < 0n) return fds.map(() => 0);
  return fds.map((_, i) => v.getUint16(i * 8 + 6, true));
}

/**
 * Whether `path` names a file of any kind, a dangling symlink too (faccessat2 F_OK, not
 * following a last symlink); undefined when that cannot tell (the call failed otherwise than
 * ENOENT or ENOTDIR: a kernel without it, a directory that may not be searched). No exception
 * is made for a missing file, which costs a stat some 30 µs.
 */
export function pathExists(path: string): boolean | undefined {
  const AT_FDCWD = -100, F_OK = 0, AT_SYMLINK_NOFOLLOW = 0x100, ENOENT = 2, ENOTDIR = 20;
  const ret = orErrno(
    rawSyscall(NR.faccessat2, AT_FDCWD, addressOf(cString(path)), F_OK, AT_SYMLINK_NOFOLLOW),
  );
  if (ret === 0) return true;
  return ret === -ENOENT || ret === -ENOTDIR ? false : undefined;
}
