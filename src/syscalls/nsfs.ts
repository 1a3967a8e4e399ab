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
 * namespace that owns it ("owner"), or a user or PID namespace's parent ("parent"), `steps`
 * times over (the grandparent for 2); undefined where the caller may not see it (EPERM: it is
 * above the caller's).
 */
export function relatedNamespace(
  path: string,
  how: "owner" | "parent",
  steps = 1,
): number | undefined {
  let fd = open(path, O.RDONLY | O.CLOEXEC);
  try {
    for (let i = 0; i < steps; i++) {
      const rel = orErrno(
        libc.ioctl(fd, BigInt(how === "owner" ? NS_GET_USERNS : NS_GET_PARENT), null),
      );
      if (rel < 0) return undefined;
      close(fd);
      fd = rel;
    }
    return Number(Deno.statSync(`/proc/self/fd/${fd}`).ino);
  } finally {
    close(fd);
  }
}
