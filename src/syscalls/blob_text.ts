/**
 * A blob of parasite/ mapped executable in criu's own process (spawn.ts's clone_root, the page
 * copier of page_copy.ts).
 *
 * @module
 */
import { decodeBase64 } from "../util/base64.ts";
import { BLOBS } from "../../parasite/blobs_gen.ts";
import { Errno } from "./errno.ts";
import { lastErrno, libc } from "./ffi.ts";
import { rawSyscall } from "./process.ts";
import { NR } from "./syscall_numbers.ts";

const PROT_RW = 3, PROT_RX = 5, MAP_PRIVATE_ANON = 0x22;
/** mmap's failure (MAP_FAILED). */
export const MAP_FAILED = 0xffffffffffffffffn;

/** Blob `name` mapped executable here: the address of its first byte (its entry) and its size. */
export function mapBlobText(name: keyof typeof BLOBS): { text: bigint; size: bigint } {
  const code = decodeBase64(BLOBS[name]);
  const size = BigInt(Math.ceil(code.length / 4096) * 4096);
  const text = libc.mmap(0n, size, PROT_RW, MAP_PRIVATE_ANON, -1, 0n);
  if (text === MAP_FAILED) throw new Errno("mmap", lastErrno(), `blob ${name}`);
  const view = new Deno.UnsafePointerView(Deno.UnsafePointer.create(text)!);
  new Uint8Array(view.getArrayBuffer(code.length)).set(code);
  if (rawSyscall(NR.mprotect, text, size, PROT_RX) < 0n) {
    const errno = lastErrno();
    libc.munmap(text, size);
    throw new Errno("mprotect", errno, `blob ${name}`);
  }
  return { text, size };
}
