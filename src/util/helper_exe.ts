/**
 * The static helper executables of parasite/helpers/, run from a memfd holding the embedded
 * binary (no file is written). The memfd is reopened read-only before exec: a file still open
 * for writing cannot be executed (ETXTBSY).
 *
 * @module
 */
import { HELPERS } from "../../parasite/blobs_gen.ts";
import { addressOf, close, cString, NR, O, open, syscall, writeAll } from "../syscalls/mod.ts";
import { decodeBase64 } from "./base64.ts";

const MFD_CLOEXEC = 1;
const made = new Map<string, number>();

/**
 * A path that executes helper `name` (made once per process): through criu's /proc, or, with
 * `own`, through the executing process's own copy of the descriptor (a child sharing criu's
 * descriptors but not allowed into its /proc).
 */
export function helperExecutable(name: keyof typeof HELPERS, own = false): string {
  let fd = made.get(name);
  if (fd === undefined) {
    const label = cString(`criu-${name}`);
    const rw = Number(
      syscall(NR.memfd_create, "memfd_create", name, addressOf(label), MFD_CLOEXEC),
    );
    try {
      writeAll(rw, decodeBase64(HELPERS[name]), `${name} memfd`);
      fd = open(`/proc/self/fd/${rw}`, O.RDONLY | O.CLOEXEC);
    } finally {
      close(rw);
    }
    made.set(name, fd);
  }
  return own ? `/proc/self/fd/${fd}` : `/proc/${Deno.pid}/fd/${fd}`;
}
