/**
 * The `criu` command line: `deno run -A main.ts <args>` behaves like `criu <args>`.
 *
 * It runs the bundled build (`deno task bundle`, made by scripts/setup.sh) when that is current
 * for the sources, else the sources themselves (src/cli/commands.ts): the same program, loaded
 * from one file instead of some two hundred.
 *
 * @module
 */
import { freshBundle } from "./src/cli/bundle_fresh.ts";

if (import.meta.main) {
  const bundle = freshBundle(new URL("./", import.meta.url));
  // Not literal specifiers: Deno would load both graphs before running anything.
  const { main }: typeof import("./src/cli/commands.ts") = await import(
    bundle ?? ["./src/cli/sources.ts"][0]
  );
  Deno.exit(await main(Deno.args));
}
