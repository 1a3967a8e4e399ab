/**
 * A walk of a directory tree on one file system, each file met once with its lstat.
 *
 * @module
 */

/**
 * Calls `each` for `dir` (followed: it may be a /proc/PID/fd/N link to a directory) and every
 * file below it on its file system (symlinks not followed).
 */
export function walkFiles(dir: string, each: (path: string, st: Deno.FileInfo) => void): void {
  const top = Deno.statSync(dir);
  const visit = (path: string, st: Deno.FileInfo) => {
    each(path, st);
    if (!st.isDirectory || st.dev !== top.dev) return;
    for (const e of Deno.readDirSync(path)) {
      const child = `${path}/${e.name}`;
      visit(child, Deno.lstatSync(child));
    }
  };
  visit(dir, top);
}
