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
 * none on its way (a tiny dump or restore about 12 ms sooner, some 7 MB more resident); its
 * young generation starts at 16 MB (`--min-semi-space-size`), so that a small dump or restore
 * collects no garbage (two scavenges each before, 2-2.5 ms). The same wherever it is started
 * (bin/criu, the tests, a service's workers): the cache keeps one compilation per file, made
 * again whenever the options differ from the last run's.
 */
export const DENO_RUN: readonly string[] = [
  "run",
  "-A",
  "--quiet",
  "--v8-flags=--no-lazy,--min-semi-space-size=16",
];

/** The command that runs this criu. */
export function selfCommand(): string[] {
  const exe = Deno.execPath();
  if (basename(exe) !== "deno") return [exe];
  return [exe, ...DENO_RUN, fileURLToPath(Deno.mainModule)];
}
