/**
 * Where a command reads and writes: its images directory, and its work directory (logs,
 * pidfiles, stats, action scripts' cwd).
 *
 * @module
 */
import { isAbsolute, join, resolve } from "node:path";
import type { CriuOpts } from "./options.ts";

/** Where a dump or restore reads and writes: images, and the work directory for the rest. */
export interface Dirs {
  images: string;
  /** Logs, pidfiles and action scripts' cwd (`-W`, default the images directory). */
  work: string;
}

export function dirsOf(o: CriuOpts): Dirs {
  const images = resolve(o.imagesDir);
  return { images, work: o.workDir ? resolve(o.workDir) : images };
}

/** `path` as criu takes it: relative to the work directory. */
export function inWorkDir(dirs: Dirs, path: string): string {
  return isAbsolute(path) ? path : join(dirs.work, path);
}
