/**
 * inotify watches: the kernel shows each as an inode and a file handle (fdinfo); the file it
 * watches is found again with open_by_handle_at on the mount of that device, and its path goes
 * into the image beside the handle.
 *
 * @module
 */
import { close, NR, O, open, syscall } from "../syscalls/mod.ts";
import { addressOf } from "../syscalls/ffi.ts";

/** One watch of an inotify instance. */
export interface InotifyWatch {
  wd: number;
  ino: bigint;
  sdev: number;
  mask: number;
  ignoredMask: number;
  handleType: number;
  handle: Uint8Array;
  /** Where the watched file is now. */
  path: string;
}

/** The mount point of the filesystem on kernel device `sdev` (major << 20 | minor). */
function mountOf(sdev: number): string | undefined {
  const want = `${sdev >>> 20}:${sdev & 0xfffff}`;
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const f = line.split(" ");
    if (f[2] === want && f[3] === "/") return f[4];
  }
  return undefined;
}

/** The path of the file a handle leads to on device `sdev`, or undefined. */
export function pathOfHandle(sdev: number, type: number, handle: Uint8Array): string | undefined {
  const mnt = mountOf(sdev);
  if (!mnt) return undefined;
  const mfd = open(mnt, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  try {
    const fh = new Uint8Array(8 + handle.length);
    const v = new DataView(fh.buffer);
    v.setUint32(0, handle.length, true);
    v.setInt32(4, type, true);
    fh.set(handle, 8);
    const fd = Number(
      syscall(
        NR.open_by_handle_at,
        "open_by_handle_at",
        mnt,
        mfd,
        addressOf(fh),
        O.PATH | O.CLOEXEC,
      ),
    );
    try {
      return Deno.readLinkSync(`/proc/self/fd/${fd}`);
    } finally {
      close(fd);
    }
  } catch {
    return undefined;
  } finally {
    close(mfd);
  }
}

/** Parses the watch lines of an inotify fdinfo and finds each watched file. */
export function inotifyWatches(fdinfo: string): InotifyWatch[] {
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
    out.push({
      wd: parseInt(m[1], 16),
      ino: BigInt("0x" + m[2]),
      sdev,
      mask: parseInt(m[4], 16),
      ignoredMask: parseInt(m[5], 16),
      handleType,
      handle,
      path: pathOfHandle(sdev, handleType, handle) ?? "",
    });
  }
  return out;
}
