/**
 * Open files that were deleted (ghosts): their contents go into ghost-file-N.img, and
 * remap-fpath.img says which file entry each one restores.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  ghost_file_entrySchema,
  remap_file_path_entrySchema,
  remap_type,
  timevalSchema,
} from "../../proto/gen/files_pb.ts";
import type { DumpContext } from "./context.ts";
import type { Ghost } from "./file_types.ts";

/** ghost-file-ID.img (the deleted file's contents) and its remap-fpath.img entry. */
export function writeGhost(ctx: DumpContext, fileId: number, g: Ghost): void {
  const tv = (d: Date | null) => {
    const ms = d?.getTime() ?? 0;
    return create(timevalSchema, {
      tvSec: BigInt(Math.floor(ms / 1000)),
      tvUsec: BigInt((ms % 1000) * 1000),
    });
  };
  const ghostId = ctx.fileId();
  ctx.image(`ghost-file-${ghostId}.img`, "GHOST_FILE")
    .entry(
      ghost_file_entrySchema,
      create(ghost_file_entrySchema, {
        uid: g.uid,
        gid: g.gid,
        mode: g.mode,
        atim: tv(g.atime),
        mtim: tv(g.mtime),
        size: BigInt(g.data.length),
      }),
    )
    .raw(g.data);
  ctx.remaps.push(
    create(remap_file_path_entrySchema, {
      origId: fileId,
      remapId: ghostId,
      remapType: remap_type.GHOST,
    }),
  );
}

/** remap-fpath.img. */
export function writeRemaps(ctx: DumpContext): void {
  if (!ctx.remaps.length) return;
  const img = ctx.image("remap-fpath.img", "REMAP_FPATH");
  for (const r of ctx.remaps) img.entry(remap_file_path_entrySchema, r);
}
