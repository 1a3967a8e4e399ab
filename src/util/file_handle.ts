/**
 * Files named by handle (the inotify and fanotify marks of fdinfo): opened again through a
 * mount of their file system.
 *
 * @module
 */
import { close, O, open, tryOpenByHandle } from "../syscalls/mod.ts";

/** A mount point of the whole file system on kernel device `sdev` (major << 20 | minor). */
function mountOf(sdev: number): string | undefined {
  const want = `${sdev >>> 20}:${sdev & 0xfffff}`;
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const f = line.split(" ");
    if (f[2] === want && f[3] === "/") return f[4];
  }
  return undefined;
}

/**
 * An O_PATH descriptor of the file a handle names on device `sdev`, or undefined when no mount
 * shows that file system or the file is gone.
 */
export function openHandle(sdev: number, type: number, handle: Uint8Array): number | undefined {
  const mnt = mountOf(sdev);
  if (!mnt) return undefined;
  let mfd: number;
  try {
    mfd = open(mnt, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  } catch {
    return undefined;
  }
  try {
    const fd = tryOpenByHandle(mfd, type, handle, O.PATH | O.CLOEXEC);
    return fd < 0 ? undefined : fd;
  } finally {
    close(mfd);
  }
}

/** Where the file a handle names is now ("NAME (deleted)" when unlinked), or undefined. */
export function pathOfHandle(sdev: number, type: number, handle: Uint8Array): string | undefined {
  const fd = openHandle(sdev, type, handle);
  if (fd === undefined) return undefined;
  try {
    return Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } finally {
    close(fd);
  }
}
