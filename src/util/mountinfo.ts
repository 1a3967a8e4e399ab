/**
 * /proc/PID/mountinfo, parsed: one {@link MountInfo} per line, with the mount's own flags and
 * its super block's flags apart, as criu keeps them.
 *
 * ```
 * 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 * id parent dev root mountpoint  mount options  optional fields - type source super options
 * ```
 *
 * @module
 */
import { MS } from "../syscalls/mod.ts";

/** One mount of a mount namespace. */
export interface MountInfo {
  id: number;
  parentId: number;
  /** The super block's device in the kernel's encoding (major << 20 | minor). */
  kdev: number;
  /** The directory of the file system the mount shows. */
  root: string;
  /** Its root was removed since it was mounted (mountinfo's "//deleted"; `root` without it). */
  deleted: boolean;
  /** Where it is mounted, from the reading task's root. */
  mountpoint: string;
  /** The mount's flags (MS_NOSUID, MS_RDONLY, atime, ...) and its propagation (MS_SHARED, ...). */
  flags: number;
  /** Peer group of a shared mount, 0 if none. */
  sharedId: number;
  /** Peer group it receives from (a slave), 0 if none. */
  masterId: number;
  type: string;
  source: string;
  /** The super block's flags (MS_RDONLY, MS_SYNCHRONOUS, MS_DIRSYNC, MS_MANDLOCK). */
  sbFlags: number;
  /** The super block's other options, as the file system prints them. */
  options: string;
}

/** A line mountinfo has that we cannot read (an option this code does not know). */
export class MountinfoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MountinfoError";
  }
}

const MOUNT_OPTIONS: Record<string, number> = {
  rw: 0,
  ro: MS.RDONLY,
  nosuid: MS.NOSUID,
  nodev: MS.NODEV,
  noexec: MS.NOEXEC,
  noatime: MS.NOATIME,
  nodiratime: MS.NODIRATIME,
  relatime: MS.RELATIME,
  nosymfollow: MS.NOSYMFOLLOW,
};

const SB_OPTIONS: Record<string, number> = {
  rw: 0,
  ro: MS.RDONLY,
  sync: MS.SYNCHRONOUS,
  dirsync: MS.DIRSYNC,
  mand: MS.MANDLOCK,
};

/** mountinfo's octal escapes (\040 for a space, \011, \012, \134) undone. */
export function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses the text of a mountinfo file. */
export function parseMountinfo(text: string): MountInfo[] {
  return text.split("\n").filter(Boolean).map(parseLine);
}

function parseLine(line: string): MountInfo {
  const words = line.split(" ");
  const dash = words.indexOf("-", 6);
  if (dash < 0 || words.length < dash + 4) {
    throw new MountinfoError(`Cannot parse mountinfo line ${JSON.stringify(line)}`);
  }
  const [major, minor] = words[2].split(":").map(Number);
  let flags = 0;
  for (const o of words[5].split(",")) {
    const f = MOUNT_OPTIONS[o];
    if (f === undefined) {
      throw new MountinfoError(`Unknown mount option ${o} in mountinfo line ${line}`);
    }
    flags |= f;
  }
  // The kernel's default is relatime: a mount with neither shows strictatime by their absence.
  if (!(flags & (MS.RELATIME | MS.NOATIME))) flags |= MS.STRICTATIME;
  let sharedId = 0, masterId = 0;
  for (const w of words.slice(6, dash)) {
    const [key, value] = w.split(":");
    if (key === "shared") {
      sharedId = Number(value);
      flags |= MS.SHARED;
    } else if (key === "master") {
      masterId = Number(value);
      flags |= MS.SLAVE;
    } else if (key === "unbindable") {
      flags |= MS.UNBINDABLE;
    } else if (key !== "propagate_from") {
      throw new MountinfoError(`Unknown optional field ${w} in mountinfo line ${line}`);
    }
  }
  let sbFlags = 0;
  const options: string[] = [];
  for (const o of unescapeMountinfo(words[dash + 3]).split(",")) {
    const f = SB_OPTIONS[o];
    if (f === undefined) options.push(o);
    else sbFlags |= f;
  }
  const root = unescapeMountinfo(words[3]);
  const deleted = root.endsWith("//deleted");
  return {
    id: Number(words[0]),
    parentId: Number(words[1]),
    kdev: major * 0x100000 + minor,
    root: deleted ? root.slice(0, -"//deleted".length) : root,
    deleted,
    mountpoint: unescapeMountinfo(words[4]),
    flags,
    sharedId,
    masterId,
    type: words[dash + 1],
    source: unescapeMountinfo(words[dash + 2]),
    sbFlags,
    options: options.join(","),
  };
}
