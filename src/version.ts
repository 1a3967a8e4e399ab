/**
 * The deno-criu version, printed by `criu --version` and written into the images it makes.
 *
 * @module
 */

/** This release. */
export const VERSION = "0.1.0";
