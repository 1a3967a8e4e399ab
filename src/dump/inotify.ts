/**
 * inotify watches: the kernel shows each as an inode and a file handle (fdinfo); the file it
 * watches is found again with open_by_handle_at on the mount of that device, and its path goes
 * into the image beside the handle. A deleted file has no path: as criu, the image holds only
 * its inode, which the restore finds in the file the tree holds open (its ghost or its link).
 *
 * @module
 */
import { nameInNamespaceOf, pathOfHandle } from "../util/file_handle.ts";

/** One watch of an inotify instance. */
export interface InotifyWatch {
  wd: number;
  ino: bigint;
  sdev: number;
  mask: number;
  ignoredMask: number;
  handleType: number;
  handle: Uint8Array;
  /**
   * Where the watched file is now; empty when it has no name left (deleted, and then found at
   * restore by its inode, as criu does) or cannot be found (see `deleted`).
   */
  path: string;
  /** Whether the watched file was deleted (it has no name, only its inode). */
  deleted: boolean;
  /**
   * The mount showing it, when it was found in another mount namespace of the tree than its
   * holder's (`path` is then that namespace's).
   */
  mntId?: number;
}

const DELETED = " (deleted)";

/**
 * Parses the watch lines of an inotify fdinfo and finds each watched file: in the mount
 * namespace of `nsPid` (criu's without), else in those of the tasks `elsewhere` (the tree's
 * other mount namespaces: a file watched through a descriptor of a mount only another one has).
 */
export function inotifyWatches(
  fdinfo: string,
  nsPid?: number,
  elsewhere: readonly number[] = [],
): InotifyWatch[] {
  const out: InotifyWatch[] = [];
  const re =
    /^inotify wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+) fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*)/gm;
  for (const m of fdinfo.matchAll(re)) {
    const hex = m[8];
    const handle = Uint8Array.from(
      { length: hex.length / 2 },
      (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16),
    );
    const sdev = parseInt(m[3], 16);
    const handleType = parseInt(m[7], 16);
    let path = pathOfHandle(sdev, handleType, handle, nsPid) ?? "";
    let mntId: number | undefined;
    for (const pid of path ? [] : elsewhere) {
      const found = nameInNamespaceOf(pid, sdev, handleType, handle);
      if (!found) continue;
      [path, mntId] = [found.name, found.mntId];
      break;
    }
    const deleted = path.endsWith(DELETED);
    out.push({
      wd: parseInt(m[1], 16),
      ino: BigInt("0x" + m[2]),
      sdev,
      mask: parseInt(m[4], 16),
      ignoredMask: parseInt(m[5], 16),
      handleType,
      handle,
      path: deleted ? "" : path,
      deleted,
      mntId,
    });
  }
  return out;
}
