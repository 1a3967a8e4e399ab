/**
 * userfaultfd write-protection in asynchronous mode (UFFD_FEATURE_WP_ASYNC), the dirty
 * tracking of pre-dumps on a kernel without soft-dirty: a range registered for it has its
 * pages write-protected by PAGEMAP_SCAN (PM_SCAN_WP_MATCHING), and a write to one lifts the
 * protection by itself (no fault reaches anyone); /proc/PID/pagemap then shows which pages
 * were written (bit 57, uffd-wp, clear).
 *
 * @module
 */
import { libc } from "./ffi.ts";
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
