/**
 * `--status-fd`: how a command started in the background says it is ready, as criu's do (zdtm
 * and runc wait for it): one zero byte, perhaps a line after it, then the descriptor closed.
 *
 * @module
 */
import { close, writeAll } from "../syscalls/mod.ts";

/** Says ready on status descriptor `fd` (none: nothing to do), with `line` after the byte. */
export function statusReady(fd: number | undefined, line?: string): void {
  if (fd === undefined) return;
  writeAll(fd, new Uint8Array(1), "status fd");
  if (line !== undefined) writeAll(fd, new TextEncoder().encode(line), "status fd");
  close(fd);
}
