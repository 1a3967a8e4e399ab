/**
 * How to start this criu again (a service's workers, a daemon): the compiled binary itself,
 * or Deno running this program's main module.
 *
 * @module
 */
import { basename, fileURLToPath } from "./path.ts";

/** The command that runs this criu. */
export function selfCommand(): string[] {
  const exe = Deno.execPath();
  if (basename(exe) !== "deno") return [exe];
  return [exe, "run", "-A", "--quiet", fileURLToPath(Deno.mainModule)];
}
