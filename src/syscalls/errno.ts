/**
 * The funnel from a failed system call to an exception.
 *
 * Error policy: wrappers throw {@link Errno} by default. Where a failure is expected (ESRCH on a
 * dying task, EAGAIN on an empty pipe) a `try…` variant returns the negative errno instead.
 *
 * @module
 */
import { ERRNO_NAMES } from "./errno_names.ts";
import { lastErrno, strerror } from "./ffi.ts";

export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EIO = 5;
export const EBADF = 9;
export const ECHILD = 10;
export const EAGAIN = 11;
export const EFAULT = 14;
export const EBUSY = 16;
export const EEXIST = 17;
export const EINVAL = 22;
export const ENOSYS = 38;
export const ENXIO = 6;

/** The symbolic name of an errno value, e.g. `ESRCH`. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

/**
 * A failed system call: names the call, the target it acted on and the errno.
 *
 * `Cannot ptrace(PTRACE_SEIZE) task 42: no such process (ESRCH)`
 */
export class Errno extends Error {
  /** The call, e.g. `ptrace(PTRACE_SEIZE)`. */
  readonly call: string;
  /** The errno value. */
  readonly errno: number;
  /** What the call acted on, e.g. `task 42`; may be empty. */
  readonly target: string;

  constructor(call: string, errno: number, target = "") {
    const what = target ? `${call} ${target}` : call;
    super(`Cannot ${what}: ${strerror(errno).toLowerCase()} (${errnoName(errno)})`);
    this.name = "Errno";
    this.call = call;
    this.errno = errno;
    this.target = target;
  }

  /** The symbolic errno name, e.g. `ESRCH`. */
  get code(): string {
    return errnoName(this.errno);
  }
}

/** Throws an {@link Errno} built from errno when `ret` is negative; returns `ret` otherwise. */
export function unwrap<T extends number | bigint>(ret: T, call: string, target = ""): T {
  if (ret < 0) throw new Errno(call, lastErrno(), target);
  return ret;
}

/** Returns `ret`, or the negative errno when `ret` is negative (the `try…` policy). */
export function orErrno(ret: number | bigint): number {
  return ret < 0 ? -lastErrno() : Number(ret);
}
