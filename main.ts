/**
 * The `criu` command line: `deno run -A main.ts <args>` behaves like `criu <args>`.
 *
 * @module
 */
// Deno sets up its npm resolution when the entry's graph has an npm package: loaded up front,
// the protobuf library makes the commands' modules (loaded when needed, src/util/load.ts) load
// as fast as a static import would (set up later, it costs each command ~0.1 s).
import "@bufbuild/protobuf";
import { main } from "./src/cli/commands.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
