/**
 * The error of a malformed command line or configuration file.
 *
 * @module
 */

/** A malformed command line: printed with a hint to `criu --help`, exit code 1. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
