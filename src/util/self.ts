/**
 * How to start this criu again (a service's workers, a daemon): the compiled binary itself,
 * or Deno running this program's main module.
 *
 * @module
 */
import { basename, fileURLToPath } from "./path.ts";

/**
 * How Deno runs this criu's main module (after `deno`): V8 compiles every function as the
 * bundle loads (`--no-lazy`), so that Deno's code cache of it holds them all and a run compiles
 * none on its way (a tiny dump or restore about 12 ms sooner, some 7 MB more resident). The
 * young generation is V8's own: started at 16 MB, a tree's dump (20 x 4 threads) took ~100 ms
 * longer and 28 MB more (6,000 more page faults, each costly on a VM), for no tiny dump
 * measurably sooner. The same wherever it is started (bin/criu, the tests, a service's
 * workers): the cache keeps one compilation per file, made again whenever the options differ
 * from the last run's.
 */
export const DENO_RUN: readonly string[] = [
  "run",
  "-A",
  "--quiet",
  "--v8-flags=--no-lazy",
];

/** The command that runs this criu. */
export function selfCommand(): string[] {
  const exe = Deno.execPath();
  if (basename(exe) !== "deno") return [exe];
  return [exe, ...DENO_RUN, fileURLToPath(Deno.mainModule)];
}
