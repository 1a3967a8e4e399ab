/**
 * The namespace file system's own questions (ioctl_ns(2)): which user namespace owns a
 * namespace, and which is a user namespace's parent.
 *
 * @module
 */
import { orErrno } from "./errno.ts";
import { libc } from "./ffi.ts";
import { close, O, open } from "./process.ts";

/** ioctl_ns(2) requests. */
const NS_GET_USERNS = 0xb701, NS_GET_PARENT = 0xb702;

/**
 * The inode of the namespace related to the one at `path` (a /proc/PID/ns link): the user
 * namespace that owns it ("owner"), or a user namespace's parent ("parent"); undefined where
 * the caller may not see it (EPERM: it is above the caller's).
 */
export function relatedNamespace(path: string, how: "owner" | "parent"): number | undefined {
  const fd = open(path, O.RDONLY | O.CLOEXEC);
  try {
    const rel = orErrno(
      libc.ioctl(fd, BigInt(how === "owner" ? NS_GET_USERNS : NS_GET_PARENT), null),
    );
    if (rel < 0) return undefined;
    try {
      return Number(Deno.statSync(`/proc/self/fd/${rel}`).ino);
    } finally {
      close(rel);
    }
  } finally {
    close(fd);
  }
}
