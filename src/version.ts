/**
 * Versions: ours, and the CRIU release whose command line, RPC and images we implement (what
 * `criu --version` prints first, and what runc, podman, LXC and go-criu compare).
 *
 * @module
 */

/** This release of deno-criu. */
export const VERSION = "0.1.0";

/** The CRIU release whose interface and images deno-criu implements. */
export const CRIU_VERSION = "4.2";

/** What `criu --version` prints, as CRIU prints it: its version, then a GitID naming us. */
export function versionText(): string {
  return `Version: ${CRIU_VERSION}\nGitID: deno-criu-${VERSION}`;
}
