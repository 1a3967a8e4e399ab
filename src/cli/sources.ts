/**
 * The command line from the sources, when the bundled build is missing or stale (main.ts).
 *
 * The protobuf package is imported here, in the first module of the command line, so that
 * Deno sets up its npm resolution with it; met later, in a module a command loads when needed
 * (src/util/load.ts), it would cost each command about 0.1 s.
 *
 * @module
 */
import "@bufbuild/protobuf";

export { main } from "./commands.ts";
