/**
 * Files named by handle (the inotify and fanotify marks of fdinfo): opened again through a
 * mount of their file system.
 *
 * @module
 */
import { close, O, open, tryOpenByHandle } from "../syscalls/mod.ts";
import { parseMountinfo } from "./mountinfo.ts";

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

/**
 * Where the file a handle names is now ("NAME (deleted)" when unlinked), or undefined. With
 * `pid`, a task of another mount namespace, the name is as that namespace says when one of
 * its mounts shows the file there (any mount of the file system, checked by the inode the
 * name reaches), else as criu's does.
 */
export function pathOfHandle(
  sdev: number,
  type: number,
  handle: Uint8Array,
  pid?: number,
): string | undefined {
  if (pid !== undefined) {
    const found = nameInNamespaceOf(pid, sdev, type, handle);
    if (found) return found.name;
  }
  const mnt = mountOf(sdev);
  return mnt ? nameThrough(mnt, type, handle)?.name : undefined;
}

/**
 * Where the file a handle names is in the mount namespace of task `pid`, and the mount that
 * shows it there, when one of its mounts of the file system does (the name checked by the
 * inode it reaches); "NAME (deleted)" when unlinked.
 */
export function nameInNamespaceOf(
  pid: number,
  sdev: number,
  type: number,
  handle: Uint8Array,
): { name: string; mntId: number } | undefined {
  const mounts = parseMountinfo(Deno.readTextFileSync(`/proc/${pid}/mountinfo`))
    .filter((m) => m.kdev === sdev).sort((a, b) => a.root.length - b.root.length);
  for (const m of mounts) {
    const path = nameThrough(`/proc/${pid}/root${m.mountpoint}`, type, handle);
    if (!path) continue;
    const name = path.name.replace(/ \(deleted\)$/, "");
    try {
      // The handle may name a symlink itself (watched with IN_DONT_FOLLOW).
      const at = `/proc/${pid}/root${name}`;
      if (
        path.deleted || Deno.lstatSync(at).ino === path.ino || Deno.statSync(at).ino === path.ino
      ) {
        return { name: path.name, mntId: m.id };
      }
    } catch {
      // not there under that name
    }
  }
  return undefined;
}

/** The name and inode of the file a handle names, opened through the mount at `mnt`. */
function nameThrough(
  mnt: string,
  type: number,
  handle: Uint8Array,
): { name: string; ino: number; deleted: boolean } | undefined {
  let mfd: number;
  try {
    mfd = open(mnt, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  } catch {
    return undefined;
  }
  let fd: number;
  try {
    fd = tryOpenByHandle(mfd, type, handle, O.PATH | O.CLOEXEC);
  } finally {
    close(mfd);
  }
  if (fd < 0) return undefined;
  try {
    const name = Deno.readLinkSync(`/proc/self/fd/${fd}`);
    const st = Deno.statSync(`/proc/self/fd/${fd}`);
    return { name, ino: st.ino ?? 0, deleted: name.endsWith(" (deleted)") || st.nlink === 0 };
  } finally {
    close(fd);
  }
}
