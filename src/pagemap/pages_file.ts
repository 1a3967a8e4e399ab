/**
 * A pages-N.img being written: sized first and mapped shared, its pages made in one pass
 * (MAP_POPULATE), filled in place by a reader (a task's memory, a shmem object: one copy, no
 * write calls), synced later with the rest of the images.
 *
 * @module
 */
import { IMAGE_MODE } from "../images/image.ts";
import {
  close,
  mapFileForWriting,
  O,
  open,
  startWriteback,
  unmapHere,
  viewAt,
} from "../syscalls/mod.ts";
import type { XferStats } from "./page_xfer.ts";

/**
 * A spare pages file at `path` of `len` bytes, its pages made and touched now, for
 * {@link fillPagesFile} to take: filling pages already there costs a fraction of making them
 * (on tmpfs in a virtual machine, where a page first touched is a fault of the host's too,
 * about a third).
 */
export function makeSpare(path: string, len: number): void {
  const fd = open(path, O.RDWR | O.CREAT | O.TRUNC | O.CLOEXEC, IMAGE_MODE);
  try {
    unmapHere(mapFileForWriting(fd, len, path), BigInt(len));
  } finally {
    close(fd);
  }
}

/**
 * A new pages file at `path` of `total` bytes (with `spare`, that file made beforehand,
 * renamed, its pages used), `fill`ed through its mapping, left unsynced (the dump syncs its
 * images directory's files together: ImagesDir.sync). Making the file counts as writing,
 * `fill` as reading.
 */
export function fillPagesFile(
  path: string,
  total: number,
  fill: (file: Uint8Array) => void,
  spare?: string,
): XferStats {
  const stats: XferStats = { pages: 0, readUs: 0, writeUs: 0 };
  let taken = false;
  if (spare && total > 0) {
    try {
      Deno.renameSync(spare, path);
      taken = true;
    } catch {
      // made afresh
    }
  }
  const fd = open(path, O.RDWR | O.CLOEXEC | (taken ? 0 : O.CREAT | O.TRUNC), IMAGE_MODE);
  try {
    Deno.chmodSync(path, IMAGE_MODE);
    if (total > 0) {
      let t = performance.now();
      const addr = mapFileForWriting(fd, total, path);
      stats.writeUs += (performance.now() - t) * 1000;
      try {
        t = performance.now();
        fill(viewAt(addr, total));
        stats.readUs += (performance.now() - t) * 1000;
        stats.pages = total / 4096;
      } finally {
        unmapHere(addr, BigInt(total));
      }
      startWriteback(fd);
    }
  } finally {
    close(fd);
  }
  return stats;
}
