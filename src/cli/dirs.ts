/**
 * Where a command reads and writes: its images directory, and its work directory (logs,
 * pidfiles, stats, action scripts' cwd).
 *
 * @module
 */
import { isAbsolute, join, resolve } from "../util/path.ts";
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

/**
 * Appends an error found in a command's options, before it ran, to the log file `o` names,
 * if it can: harnesses look there for the reason (zdtm reads the log, runc shows its name).
 * `where` says who found it.
 */
export function logOptionsError(o: CriuOpts, msg: string, where: string): void {
  if (!o.logFile || o.logFile === "-") return;
  try {
    Deno.writeTextFileSync(
      inWorkDir(dirsOf(o), o.logFile),
      `(00.000000) Error (${where}): ${msg}\n`,
      { append: true },
    );
  } catch {
    // no directory to log into: the caller reports it anyway
  }
}
