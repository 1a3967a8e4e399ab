/**
 * The command line from the sources, when the bundled build is missing or stale (main.ts).
 *
 * @module
 */
export { main } from "./commands.ts";
