/**
 * Whether a path names something.
 *
 * @module
 */
import { pathExists } from "../syscalls/mod.ts";

/** Whether `path` names a file of any kind (a dangling symlink counts: it is not followed). */
export function exists(path: string): boolean {
  const known = pathExists(path);
  if (known !== undefined) return known;
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
