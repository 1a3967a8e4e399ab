/**
 * Open files that were deleted (ghosts): their contents go into ghost-file-N.img, one per
 * inode, and remap-fpath.img says which file entries each one restores (every description of
 * the inode: after the restore they share one inode again).
 *
 * ```
 * ghost-file-N.img   GHOST_FILE magic
 *   ghost_file_entry {uid gid mode dev ino atim mtim size chunks}
 *   chunks false:  the file's bytes
 *   chunks true:   (ghost_chunk_entry {len off}, len bytes) per data segment; holes between
 * ```
 * As criu: files of 3 pages and more are written in chunks.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  ghost_chunk_entrySchema,
  ghost_file_entrySchema,
  remap_file_path_entrySchema,
  remap_type,
  timevalSchema,
} from "../../proto/gen/files_pb.ts";
import { close, O, open, pread, statStamp } from "../syscalls/mod.ts";
import { tryLseek } from "../syscalls/socket.ts";
import type { DumpContext } from "./context.ts";
import type { Ghost } from "./file_types.ts";
import type { ImageWriter } from "../images/image.ts";
import { regFileEntry, writeRegFile } from "./files.ts";

/** Files this size and larger keep their holes (written in chunks), as criu does. */
const CHUNKS_FROM = 3 * 4096;
const SEEK_DATA = 3, SEEK_HOLE = 4;

/** The data segments of the file at `path` (holes skipped), with SEEK_DATA and SEEK_HOLE. */
export function readDataSegments(path: string, size: number): { off: number; data: Uint8Array }[] {
  const fd = open(path, O.RDONLY | O.CLOEXEC);
  try {
    const out: { off: number; data: Uint8Array }[] = [];
    let hole = 0n;
    while (hole < BigInt(size)) {
      let data = tryLseek(fd, hole, SEEK_DATA);
      if (data < 0n) {
        if (data === -6n /* ENXIO: no data after */) break;
        data = 0n; // no SEEK_DATA on this file system: all data
        hole = BigInt(size);
      } else {
        hole = tryLseek(fd, data, SEEK_HOLE);
        if (hole < 0n || hole > BigInt(size)) hole = BigInt(size);
      }
      const buf = new Uint8Array(Number(hole - data));
      for (let got = 0; got < buf.length;) {
        const n = pread(fd, buf.subarray(got), data + BigInt(got), path);
        if (n <= 0) throw new Error(`Cannot read ${path}: it ended early`);
        got += n;
      }
      out.push({ off: Number(data), data: buf });
    }
    return out;
  } finally {
    close(fd);
  }
}

/**
 * The ghost of the deleted file open at `link` (a /proc link to it), as `st` describes it: its
 * inode, owner and times to the microsecond; `extra` gives its mode and what only some kinds
 * have (contents, device number, symlink target).
 */
export function ghostOf(
  link: string,
  st: Deno.FileInfo,
  extra: Partial<Ghost> & { mode: number },
): Ghost {
  const stamp = statStamp(link);
  return {
    dev: st.dev,
    kdev: stamp.devMajor * (1 << 20) + stamp.devMinor,
    ino: st.ino ?? 0,
    size: 0,
    chunks: [],
    uid: st.uid ?? 0,
    gid: st.gid ?? 0,
    atime: stamp.atime,
    mtime: stamp.mtime,
    ...extra,
  };
}

/** ghost-file-ID.img (the deleted file's contents, once per inode) and a remap-fpath.img entry. */
export function writeGhost(ctx: DumpContext, fileId: number, g: Ghost): void {
  const key = `${g.dev}:${g.ino}`;
  let ghostId = ctx.ghostIds.get(key);
  if (ghostId === undefined) {
    ghostId = ctx.fileId();
    ctx.ghostIds.set(key, ghostId);
    writeGhostImage(ctx, ghostId, g);
  }
  ctx.remaps.push(
    create(remap_file_path_entrySchema, {
      origId: fileId,
      remapId: ghostId,
      remapType: remap_type.GHOST,
    }),
  );
}

/**
 * A remap-fpath.img entry for file `fileId`, under /proc/`pid` of a task that is gone: the
 * restore makes a task `pid` for the moment it opens it (criu's dead-process remap).
 */
export function writeDeadProcRemap(ctx: DumpContext, fileId: number, pid: number): void {
  ctx.remaps.push(
    create(remap_file_path_entrySchema, {
      origId: fileId,
      remapId: pid,
      remapType: remap_type.PROCFS,
    }),
  );
}

/**
 * A file deleted but linked elsewhere, linked again at `remap` for the restore: a REG entry for
 * the link and a LINKED remap-fpath.img entry (criu's link remap). One entry per link.
 */
export function writeLinkRemap(
  ctx: DumpContext,
  files: ImageWriter,
  fileId: number,
  remap: string,
): void {
  let remapId = ctx.linkRemapIds.get(remap);
  if (remapId === undefined) {
    remapId = ctx.fileId();
    ctx.linkRemapIds.set(remap, remapId);
    const mntId = ctx.linkRemapMounts.get(remap);
    writeRegFile(files, regFileEntry(remapId, remap, { flags: O.RDONLY, mntId }));
  }
  ctx.remaps.push(
    create(remap_file_path_entrySchema, { origId: fileId, remapId, remapType: remap_type.LINKED }),
  );
}

function writeGhostImage(ctx: DumpContext, ghostId: number, g: Ghost): void {
  // criu's ghost image keeps microseconds.
  const tv = (t: { sec: bigint; nsec: number }) =>
    create(timevalSchema, { tvSec: t.sec, tvUsec: BigInt(Math.floor(t.nsec / 1000)) });
  const chunked = g.size >= CHUNKS_FROM;
  const img = ctx.image(`ghost-file-${ghostId.toString(16)}.img`, "GHOST_FILE").entry(
    ghost_file_entrySchema,
    create(ghost_file_entrySchema, {
      uid: ctx.uid(g.uid, `the owner of deleted file ${ghostId}`),
      gid: ctx.gid(g.gid, `the group of deleted file ${ghostId}`),
      mode: g.mode,
      dev: g.kdev,
      ino: BigInt(g.ino),
      atim: tv(g.atime),
      mtim: tv(g.mtime),
      chunks: chunked || undefined,
      // Only a regular file has contents (criu writes no size for the others).
      size: (g.mode & 0o170000) === 0o100000 ? BigInt(g.size) : undefined,
      rdev: g.rdev,
      symlnkTarget: g.symlinkTarget,
    }),
  );
  if (chunked) {
    for (const c of g.chunks) {
      img.entry(
        ghost_chunk_entrySchema,
        create(ghost_chunk_entrySchema, { len: BigInt(c.data.length), off: BigInt(c.off) }),
      ).raw(c.data);
    }
    return;
  }
  // Unchunked: the bytes from 0 to the end, holes written as zeros.
  const all = new Uint8Array(g.size);
  for (const c of g.chunks) all.set(c.data.subarray(0, Math.max(0, g.size - c.off)), c.off);
  img.raw(all);
}

/** remap-fpath.img. */
export function writeRemaps(ctx: DumpContext): void {
  if (!ctx.remaps.length) return;
  const img = ctx.image("remap-fpath.img", "REMAP_FPATH");
  for (const r of ctx.remaps) img.entry(remap_file_path_entrySchema, r);
}
