/**
 * The entry of the dump's bundle (scripts/bundle.ts): the command line with what `criu dump`
 * and `criu pre-dump` load (src/util/load.ts) and nothing else. main.ts runs it when the first
 * argument is one of those commands.
 *
 * @module
 */
import { registerBundled } from "../util/load.ts";
import * as runDump from "./run_dump.ts";

registerBundled({ "cli/run_dump.ts": runDump });

export { main } from "./commands.ts";
