/**
 * Whether a path names something.
 *
 * @module
 */

/** Whether `path` names a file of any kind (a dangling symlink counts: it is not followed). */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
