/**
 * mount(2) flags and umount2(2) flags.
 *
 * @module
 */
import { addressOf, cString } from "./ffi.ts";
import { close, syscall } from "./process.ts";
import { NR } from "./syscall_numbers.ts";

/** mount(2) flags (MS_*). */
export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  MANDLOCK: 0x40,
  DIRSYNC: 0x80,
  NOSYMFOLLOW: 0x100,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  UNBINDABLE: 0x20000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
  STRICTATIME: 0x1000000,
  LAZYTIME: 0x2000000,
} as const;

/** umount2(2): detach now, finish when the mount is no longer busy. */
export const MNT_DETACH = 2;

/** move_mount(2) flags. */
export const MOVE_MOUNT = {
  F_EMPTY_PATH: 0x4,
  T_EMPTY_PATH: 0x40,
  /** Puts the target in the source's peer group (and under its master). */
  SET_GROUP: 0x100,
} as const;

/** mount_setattr(2): AT_EMPTY_PATH (the descriptor's own mount), AT_RECURSIVE. */
export const AT_EMPTY_PATH = 0x1000;

/** struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd }, as words. */
export function mountAttr(propagation: number): bigint[] {
  return [0n, 0n, BigInt(propagation), 0n];
}

/**
 * struct mount_attr that sets a mount's own flags to exactly `ms` (MS_RDONLY, MS_NOSUID,
 * MS_NODEV, MS_NOEXEC, the atime flags, MS_NOSYMFOLLOW), as words: every such attribute
 * cleared, then those of `ms` set.
 */
export function mountFlagsAttr(ms: number): bigint[] {
  const A = { RDONLY: 0x1, NOSUID: 0x2, NODEV: 0x4, NOEXEC: 0x8, ATIME: 0x70, NOATIME: 0x10 };
  const STRICTATIME = 0x20, NODIRATIME = 0x80, NOSYMFOLLOW = 0x200000;
  let set = 0;
  if (ms & MS.RDONLY) set |= A.RDONLY;
  if (ms & MS.NOSUID) set |= A.NOSUID;
  if (ms & MS.NODEV) set |= A.NODEV;
  if (ms & MS.NOEXEC) set |= A.NOEXEC;
  if (ms & MS.NOATIME) set |= A.NOATIME;
  else if (ms & MS.STRICTATIME) set |= STRICTATIME;
  if (ms & MS.NODIRATIME) set |= NODIRATIME;
  if (ms & MS.NOSYMFOLLOW) set |= NOSYMFOLLOW;
  const clear = A.RDONLY | A.NOSUID | A.NODEV | A.NOEXEC | A.ATIME | NODIRATIME | NOSYMFOLLOW;
  return [BigInt(set), BigInt(clear), 0n, 0n];
}

/** sizeof(struct mount_attr) (MOUNT_ATTR_SIZE_VER0). */
export const MOUNT_ATTR_SIZE = 32;

/**
 * move_mount(2) with MOVE_MOUNT_SET_GROUP, in this process's mount namespace: mount `targetFd`
 * (private) joins the peer group of the mount at `sourcePath`, and its master.
 */
export function joinPeerGroup(sourcePath: string, targetFd: number, what: string): void {
  const src = cString(sourcePath), empty = cString("");
  // A detached copy of what is at the path: a mount root in the path's peer group, which the
  // path itself (a directory inside a mount) need not be.
  const copy = Number(syscall(
    NR.open_tree,
    "open_tree(OPEN_TREE_CLONE)",
    what,
    -100, /* AT_FDCWD */
    addressOf(src),
    1 /* OPEN_TREE_CLONE */ | 0o2000000, /* OPEN_TREE_CLOEXEC */
  ));
  try {
    syscall(
      NR.move_mount,
      "move_mount(MOVE_MOUNT_SET_GROUP)",
      what,
      copy,
      addressOf(empty),
      targetFd,
      addressOf(empty),
      MOVE_MOUNT.SET_GROUP | MOVE_MOUNT.F_EMPTY_PATH | MOVE_MOUNT.T_EMPTY_PATH,
    );
  } finally {
    close(copy);
  }
}

/** mount(2) of a file system of type `fstype` from `source` at `target`, with `data`. */
export function mountFs(
  source: string,
  target: string,
  fstype: string,
  flags: number,
  data: string,
  what: string,
): void {
  const c = [source, target, fstype, data].map(cString);
  syscall(
    NR.mount,
    "mount",
    what,
    addressOf(c[0]),
    addressOf(c[1]),
    addressOf(c[2]),
    flags,
    addressOf(c[3]),
  );
}

/** umount2(2) with MNT_DETACH. */
export function detachMount(target: string, what: string): void {
  const t = cString(target);
  syscall(NR.umount2, "umount2", what, addressOf(t), MNT_DETACH);
}
