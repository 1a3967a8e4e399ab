/**
 * `criu dedup` and `--auto-dedup`: the pages a dump holds itself are taken out of its parent
 * images (holes punched in their pages files, sizes kept), since a restore reads them from
 * the newest images that have them. Pages the dump leaves to its parents (PE_PARENT) stay.
 *
 * @module
 */
import { close, O, open, punchHole } from "../syscalls/mod.ts";
import { PE_PARENT, PE_PRESENT } from "../pagemap/pagemap.ts";
import { type PagesLevel, readPagesLevel } from "../restore/images.ts";
import { exists } from "../util/exists.ts";
import { ImagesDir } from "./images_dir.ts";

/** Punches out of the parents of the images at `path` the pages they hold; returns how many. */
export function dedup(path: string): number {
  const dir = new ImagesDir(path);
  const levels = new Map<string, PagesLevel | null>();
  let punched = 0;
  for (const name of dir.names()) {
    const m = /^pagemap-(\d+)\.img$/.exec(name);
    if (!m) continue;
    for (const run of readPagesLevel(dir.file(name)).entries) {
      if (run.flags & PE_PRESENT) {
        punched += punchParents(levels, dir, name, run.vaddr, run.nrPages, 1);
      }
    }
  }
  return punched;
}

/** The level whose pagemap is at `path` (null: none), read once into `levels`. */
function level(levels: Map<string, PagesLevel | null>, path: string): PagesLevel | null {
  let l = levels.get(path);
  if (l === undefined) {
    l = exists(path) ? readPagesLevel(path) : null;
    levels.set(path, l);
  }
  return l;
}

/**
 * Punches pages [vaddr, +n) of pagemap `name` out of the images `depth` parents above `dir`
 * (and, where those leave them to their own parents, further up).
 */
function punchParents(
  levels: Map<string, PagesLevel | null>,
  dir: ImagesDir,
  name: string,
  vaddr: bigint,
  n: number,
  depth: number,
): number {
  const l = level(levels, dir.ancestor(depth).file(name));
  if (!l) return 0;
  const end = vaddr + BigInt(n) * 4096n;
  let punched = 0;
  let fd = -1;
  try {
    l.entries.forEach((e, j) => {
      const eEnd = e.vaddr + BigInt(e.nrPages) * 4096n;
      const from = e.vaddr > vaddr ? e.vaddr : vaddr, to = eEnd < end ? eEnd : end;
      if (from >= to) return;
      const pages = Number((to - from) / 4096n);
      if (e.flags & PE_PRESENT) {
        if (fd < 0) fd = open(l.pages, O.RDWR | O.CLOEXEC);
        const at = BigInt(l.offsets[j]) + (from - e.vaddr);
        punchHole(fd, at, to - from, l.pages);
        punched += pages;
      } else if (e.flags & PE_PARENT) {
        punched += punchParents(levels, dir, name, from, pages, depth + 1);
      }
    });
  } finally {
    if (fd >= 0) close(fd);
  }
  return punched;
}
