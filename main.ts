/**
 * The `criu` command line: `deno run -A main.ts <args>` behaves like `criu <args>`.
 *
 * @module
 */
import { main } from "./src/cli/commands.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
