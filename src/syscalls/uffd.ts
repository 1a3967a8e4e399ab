/**
 * userfaultfd write-protection in asynchronous mode (UFFD_FEATURE_WP_ASYNC), the dirty
 * tracking of pre-dumps on a kernel without soft-dirty: a range registered for it has its
 * pages write-protected by PAGEMAP_SCAN (PM_SCAN_WP_MATCHING), and a write to one lifts the
 * protection by itself (no fault reaches anyone); /proc/PID/pagemap then shows which pages
 * were written (bit 57, uffd-wp, clear).
 *
 * @module
 */
import { lastErrno, libc } from "./ffi.ts";
import { PAGE_IS, pagemapWalk } from "./process.ts";
import { NR } from "./syscall_numbers.ts";

/** userfaultfd(2) flags: user-mode faults only (what an unprivileged task may ask). */
export const UFFD_USER_MODE_ONLY = 1;
/** The features tracking needs: write-protection resolved by the kernel, unpopulated too. */
export const UFFD_FEATURES_TRACK = (1 << 15) | (1 << 13); // WP_ASYNC | WP_UNPOPULATED
/** UFFD_API, the API version. */
const UFFD_API = 0xaan;
/** ioctls on a userfaultfd. */
export const UFFDIO = { API: 0xc018aa3fn, REGISTER: 0xc020aa00n } as const;
/** UFFDIO_REGISTER_MODE_WP. */
const REGISTER_MODE_WP = 2n;

/** struct uffdio_api asking for `features`. */
export function uffdioApi(features: number): Uint8Array {
  const b = new BigUint64Array([UFFD_API, BigInt(features), 0n]);
  return new Uint8Array(b.buffer);
}

/** struct uffdio_register of [start, end) for write-protection. */
export function uffdioRegisterWp(start: bigint, end: bigint): Uint8Array {
  const b = new BigUint64Array([start, end - start, REGISTER_MODE_WP, 0n]);
  return new Uint8Array(b.buffer);
}

/**
 * Write-protects the written pages of [start, end) of the process whose /proc/PID/pagemap is
 * descriptor `fd` (PAGEMAP_SCAN with PM_SCAN_WP_MATCHING): from now on a write shows. 0, or
 * -errno.
 */
export function protectWritten(fd: number, start: bigint, end: bigint): number {
  const PM_SCAN_WP_MATCHING = 1n;
  // No vector: the walk goes on to the end.
  return pagemapWalk(fd, start, end, (arg) => {
    arg[1] = PM_SCAN_WP_MATCHING;
    arg[9] = BigInt(PAGE_IS.WRITTEN);
    arg[11] = BigInt(PAGE_IS.WRITTEN);
  });
}

/** Whether this kernel has asynchronous write-protection (a userfaultfd of criu's own asks). */
export function uffdWpAsync(): boolean {
  const O_CLOEXEC = 0o2000000n;
  const flags = O_CLOEXEC | BigInt(UFFD_USER_MODE_ONLY);
  const fd = Number(libc.syscall(BigInt(NR.userfaultfd), flags, 0n, 0n, 0n, 0n, 0n));
  if (fd < 0) return false;
  try {
    return Number(libc.ioctl(fd, UFFDIO.API, uffdioApi(UFFD_FEATURES_TRACK))) === 0;
  } finally {
    libc.close(fd);
  }
}

/** pagemap high-word bit 57 (uffd-wp): the page was not written since it was protected. */
export const PM_HI_UFFD_WP = 0x02000000;

// Missing-page mode: lazy restore (criu lazy-pages). The restored task's private memory is
// registered for missing pages; the daemon holding the userfaultfd fills each page on first
// touch (UFFDIO_COPY) and is told of the task's forks, mremaps, madvise and munmaps.

/** The events a lazy restore asks for: fork, mremap, madvise(DONTNEED) and munmap. */
export const UFFD_FEATURES_NONCOOP = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6);

/** ioctls of missing-page mode. */
export const UFFDIO_MISSING = {
  WAKE: 0x8010aa02n,
  COPY: 0xc028aa03n,
  ZEROPAGE: 0xc020aa04n,
} as const;

/** The ioctls a range registered for missing pages must offer: WAKE, COPY, ZEROPAGE. */
export const UFFD_MISSING_IOCTLS = (1n << 2n) | (1n << 3n) | (1n << 4n);

/** struct uffdio_register of [start, end) for missing pages. */
export function uffdioRegisterMissing(start: bigint, end: bigint): Uint8Array {
  const REGISTER_MODE_MISSING = 1n;
  const b = new BigUint64Array([start, end - start, REGISTER_MODE_MISSING, 0n]);
  return new Uint8Array(b.buffer);
}

/** The size of struct uffdio_register. */
export const UFFDIO_REGISTER_SIZE = 32;

/**
 * The userfaultfd features this kernel offers a privileged caller (criu's probe: a
 * userfaultfd of criu's own, its API asked with no features), or undefined without userfaultfd.
 */
export function uffdFeatures(): number | undefined {
  const O_CLOEXEC = 0o2000000n;
  const fd = Number(libc.syscall(BigInt(NR.userfaultfd), O_CLOEXEC, 0n, 0n, 0n, 0n, 0n));
  if (fd < 0) return undefined;
  try {
    const api = uffdioApi(0);
    if (Number(libc.ioctl(fd, UFFDIO.API, api)) !== 0) return undefined;
    return Number(new BigUint64Array(api.buffer)[1]);
  } finally {
    libc.close(fd);
  }
}

/** Event codes of struct uffd_msg. */
export const UFFD_EVENT = {
  PAGEFAULT: 0x12,
  FORK: 0x13,
  REMAP: 0x14,
  REMOVE: 0x15,
  UNMAP: 0x16,
} as const;

/** One message read from a userfaultfd. */
export type UffdMsg =
  | { event: typeof UFFD_EVENT.PAGEFAULT; address: bigint }
  | { event: typeof UFFD_EVENT.FORK; ufd: number }
  | { event: typeof UFFD_EVENT.REMAP; from: bigint; to: bigint; len: bigint }
  | { event: typeof UFFD_EVENT.REMOVE | typeof UFFD_EVENT.UNMAP; start: bigint; end: bigint };

/** The size of struct uffd_msg. */
const UFFD_MSG_SIZE = 32;

/**
 * The messages waiting on (non-blocking) userfaultfd `fd`, read through `buf`: none when there
 * are none; -errno when the read failed.
 */
export function readUffdMsgs(fd: number, buf: Uint8Array): UffdMsg[] | number {
  const n = Number(libc.read(fd, buf, BigInt(buf.length - (buf.length % UFFD_MSG_SIZE))));
  if (n < 0) {
    const e = lastErrno();
    return e === EAGAIN ? [] : -e;
  }
  const v = new DataView(buf.buffer, buf.byteOffset, n);
  const out: UffdMsg[] = [];
  for (let at = 0; at + UFFD_MSG_SIZE <= n; at += UFFD_MSG_SIZE) {
    const event = v.getUint8(at);
    const u64 = (k: number) => v.getBigUint64(at + 8 + k * 8, true);
    switch (event) {
      case UFFD_EVENT.PAGEFAULT:
        out.push({ event, address: u64(1) });
        break;
      case UFFD_EVENT.FORK:
        out.push({ event, ufd: v.getUint32(at + 8, true) });
        break;
      case UFFD_EVENT.REMAP:
        out.push({ event, from: u64(0), to: u64(1), len: u64(2) });
        break;
      case UFFD_EVENT.REMOVE:
      case UFFD_EVENT.UNMAP:
        out.push({ event, start: u64(0), end: u64(1) });
        break;
      default:
        throw new Error(`Unknown userfaultfd event 0x${event.toString(16)}`);
    }
  }
  return out;
}

const EAGAIN = 11;

/**
 * UFFDIO_COPY of `len` bytes at `src` (here) to `dst` (in the task), waking its waiters: the
 * bytes copied (maybe fewer than asked), or -errno when none were.
 */
export function uffdCopy(fd: number, dst: bigint, src: bigint, len: bigint): bigint {
  return fill(fd, UFFDIO_MISSING.COPY, [dst, src, len, 0n]);
}

/** UFFDIO_ZEROPAGE of [start, start + len), waking its waiters: bytes mapped, or -errno. */
export function uffdZero(fd: number, start: bigint, len: bigint): bigint {
  return fill(fd, UFFDIO_MISSING.ZEROPAGE, [start, len, 0n]);
}

/**
 * A filling ioctl whose struct is `fields` and then the kernel's answer (bytes filled, or
 * -errno): the bytes filled, even when it stopped early with an error, or -errno.
 */
function fill(fd: number, req: bigint, fields: bigint[]): bigint {
  const arg = new BigInt64Array([...fields, 0n]);
  const ret = Number(libc.ioctl(fd, req, new Uint8Array(arg.buffer)));
  const errno = ret < 0 ? lastErrno() : 0;
  const done = arg[fields.length];
  if (done > 0n) return done;
  return ret < 0 ? -BigInt(errno) : done;
}

/** UFFDIO_WAKE of [start, start + len): 0, or -errno. */
export function uffdWake(fd: number, start: bigint, len: bigint): number {
  const arg = new BigUint64Array([start, len]);
  return Number(libc.ioctl(fd, UFFDIO_MISSING.WAKE, new Uint8Array(arg.buffer))) < 0
    ? -lastErrno()
    : 0;
}
