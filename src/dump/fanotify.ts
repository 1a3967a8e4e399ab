/**
 * fanotify groups: the kernel shows a group's init flags and each mark in fdinfo (an inode, with
 * its file handle, or a mount); the marked file is found again through its handle, the mount by
 * its id, and each path goes into the image beside them. Events waiting in the group are not
 * carried (as with criu): criu's own reading of the tree's files may have queued some.
 *
 * @module
 */
import { pathOfHandle } from "../util/file_handle.ts";

/** One mark of a fanotify group. */
export interface FanotifyMark {
  /** An inode mark (its inode, device and handle) or a mount mark (its mount id). */
  kind: "inode" | "mount";
  ino: bigint;
  sdev: number;
  mntId: number;
  /** FAN_MARK_* flags the mark keeps (FAN_MARK_IGNORED_SURV_MODIFY). */
  mflags: number;
  mask: number;
  ignoredMask: number;
  handleType: number;
  handle: Uint8Array;
  /** Where the marked file, or the mount, is now. */
  path: string;
}

/** A fanotify group as fdinfo shows it. */
export interface FanotifyGroup {
  /** fanotify_init's flags (class, unlimited queue and marks...). */
  faflags: number;
  /** fanotify_init's event_f_flags. */
  evflags: number;
  marks: FanotifyMark[];
}

/** The mount point of mount `mntId` (criu's mount namespace, or `nsPid`'s when given). */
function mountPointOf(mntId: number, nsPid?: number): string | undefined {
  const mountinfo = nsPid === undefined ? "/proc/self/mountinfo" : `/proc/${nsPid}/mountinfo`;
  for (const line of Deno.readTextFileSync(mountinfo).split("\n")) {
    const f = line.split(" ");
    if (Number(f[0]) === mntId) return f[4];
  }
  return undefined;
}

function hexBytes(hex: string): Uint8Array {
  return Uint8Array.from(
    { length: hex.length / 2 },
    (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16),
  );
}

/**
 * Parses a fanotify fdinfo; throws with `what` for a mark kind the images cannot carry
 * (filesystem marks) or a mark whose file cannot be found.
 */
export function fanotifyGroup(fdinfo: string, what: string, nsPid?: number): FanotifyGroup {
  const head = /^fanotify flags:([0-9a-f]+) event-flags:([0-9a-f]+)/m.exec(fdinfo);
  if (!head) throw new Error(`Cannot dump ${what}: its fdinfo shows no fanotify flags`);
  const marks: FanotifyMark[] = [];
  for (const line of fdinfo.split("\n")) {
    if (!line.startsWith("fanotify ") || line.startsWith("fanotify flags:")) continue;
    const ino =
      /^fanotify ino:([0-9a-f]+) sdev:([0-9a-f]+) mflags:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+) fhandle-bytes:[0-9a-f]+ fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*)/
        .exec(line);
    const mnt =
      /^fanotify mnt_id:([0-9a-f]+) mflags:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+)/
        .exec(line);
    if (ino) {
      const sdev = parseInt(ino[2], 16), handleType = parseInt(ino[6], 16);
      const handle = hexBytes(ino[7]);
      const path = pathOfHandle(sdev, handleType, handle, nsPid);
      if (!path) {
        throw new Error(
          `Cannot dump ${what}: the file of its mark on inode ${ino[1]} cannot be found`,
        );
      }
      if (path.endsWith(" (deleted)")) {
        throw new Error(`Cannot dump ${what}: it marks a deleted file, ${path}`);
      }
      marks.push({
        kind: "inode",
        ino: BigInt("0x" + ino[1]),
        sdev,
        mntId: 0,
        mflags: parseInt(ino[3], 16),
        mask: parseInt(ino[4], 16),
        ignoredMask: parseInt(ino[5], 16),
        handleType,
        handle,
        path,
      });
    } else if (mnt) {
      const mntId = parseInt(mnt[1], 16);
      const path = mountPointOf(mntId, nsPid);
      if (!path) throw new Error(`Cannot dump ${what}: its marked mount ${mntId} is gone`);
      marks.push({
        kind: "mount",
        ino: 0n,
        sdev: 0,
        mntId,
        mflags: parseInt(mnt[2], 16),
        mask: parseInt(mnt[3], 16),
        ignoredMask: parseInt(mnt[4], 16),
        handleType: 0,
        handle: new Uint8Array(0),
        path,
      });
    } else {
      throw new Error(`Cannot dump ${what}: a filesystem mark is not supported yet (${line})`);
    }
  }
  return { faflags: parseInt(head[1], 16), evflags: parseInt(head[2], 16), marks };
}
