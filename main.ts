/**
 * The `criu` command line: `deno run -A main.ts <args>` behaves like `criu <args>`.
 *
 * It runs the bundled build (`deno task bundle`, made by scripts/setup.sh) when that is current
 * for the sources, else the sources themselves (src/cli/sources.ts): the same program, loaded
 * from one file instead of some two hundred; for dump and restore, from a file of that
 * command's modules only.
 *
 * @module
 */
import { freshBundle } from "./src/cli/bundle_fresh.ts";

if (import.meta.main) {
  const bundle = freshBundle(new URL("./", import.meta.url), Deno.args[0]);
  // Not literal specifiers: Deno would load both graphs before running anything. And no
  // top-level await: Deno keeps the compiled code of the modules (its code cache) only for a
  // main module that finished evaluating, which one waiting for the command to exit never does.
  import(bundle ?? ["./src/cli/sources.ts"][0])
    .then(({ main }: typeof import("./src/cli/commands.ts")) => main(Deno.args))
    .then((code) => Deno.exit(code));
}
