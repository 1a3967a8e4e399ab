/**
 * memfds: `registerMemfd` records a memfd's inode (name, size, seals; its pages as a shmem
 * object) once per dump, from any path that opens it (/proc/PID/fd/N, /proc/PID/map_files/…);
 * `memfdFileEntry` makes the files.img entry a mapping of it refers to.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  fd_types,
  file_entrySchema,
  memfd_file_entrySchema,
  memfd_inode_entrySchema,
} from "../../proto/gen/files_pb.ts";
import type { ImageWriter } from "../images/image.ts";
import { close, fcntl, fileSystemOf, HUGETLBFS_MAGIC, O, tryOpen } from "../syscalls/mod.ts";
import type { DumpContext } from "./context.ts";
import { noOwner, UnsupportedError } from "./file_types.ts";
import { dumpShmemObject } from "./shmem.ts";

const F_GET_SEALS = 1034;
const MFD_HUGETLB = 4, MFD_HUGE_SHIFT = 26;

/** Records the memfd at `path` (whose name is `target`, "/memfd:NAME (deleted)"); its inode. */
export function registerMemfd(
  ctx: DumpContext,
  path: string,
  target: string,
  what: string,
): number {
  const st = Deno.statSync(path);
  const ino = st.ino ?? 0;
  if (ctx.memfds.has(ino)) return ino;
  const own = tryOpen(path, O.RDONLY | O.CLOEXEC);
  if (own < 0) throw new UnsupportedError(`Cannot open ${what} to read it (errno ${-own})`);
  let seals = 0, hugetlbFlag: number | undefined;
  try {
    // A hugetlb memfd: MFD_HUGETLB and its page size (log2, in the flags' top bits), as criu
    // writes it.
    const fs = fileSystemOf(own, what);
    if (fs.type === HUGETLBFS_MAGIC) {
      hugetlbFlag = MFD_HUGETLB | (Math.log2(Number(fs.blockSize)) << MFD_HUGE_SHIFT);
    }
    seals = fcntl(own, F_GET_SEALS);
  } catch {
    seals = 0; // made without MFD_ALLOW_SEALING
  } finally {
    close(own);
  }
  ctx.memfds.set(
    ino,
    create(memfd_inode_entrySchema, {
      name: target.replace(/^\/memfd:/, "").replace(/ \(deleted\)$/, ""),
      uid: ctx.uid(st.uid ?? 0, `the owner of memfd ${target}`),
      gid: ctx.gid(st.gid ?? 0, `the group of memfd ${target}`),
      size: BigInt(st.size),
      shmid: ino,
      seals,
      inodeId: BigInt(ino),
      mode: (st.mode ?? 0o777) & 0o7777,
      hugetlbFlag,
    }),
  );
  dumpShmemObject(ctx, BigInt(ino), path);
  return ino;
}

/** A memfd file entry for inode `ino` opened with `flags` (for a mapping); its id. */
export function memfdFileEntry(
  ctx: DumpContext,
  files: ImageWriter,
  ino: number,
  flags: number,
): number {
  const id = ctx.fileId();
  files.entry(
    file_entrySchema,
    create(file_entrySchema, {
      type: fd_types.MEMFD,
      id,
      memfd: create(memfd_file_entrySchema, { id, flags, pos: 0n, fown: noOwner(), inodeId: ino }),
    }),
  );
  return id;
}
