/**
 * The entry of the restore's bundle (scripts/bundle.ts): the command line with what
 * `criu restore` loads (src/util/load.ts) and nothing else. main.ts runs it when the first
 * argument is `restore`.
 *
 * @module
 */
import { registerBundled } from "../util/load.ts";
import * as runRestore from "./run_restore.ts";

registerBundled({ "cli/run_restore.ts": runRestore });

export { main } from "./commands.ts";
