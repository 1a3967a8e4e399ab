/**
 * The socket options every socket's image keeps (sk_opts_entry's first fields): buffer sizes
 * and send/receive timeouts, read from a socket and from an image the same way for unix and
 * inet sockets.
 *
 * @module
 */
import type { sk_opts_entry } from "../../proto/gen/files_pb.ts";
import { getsockopt, SO } from "../syscalls/socket.ts";

/** Buffer sizes (as the kernel reports them, doubled) and timeouts ([seconds, microseconds]). */
export interface CommonSocketOptions {
  sndbuf: number;
  rcvbuf: number;
  sndTimeo: [bigint, bigint];
  rcvTimeo: [bigint, bigint];
}

function timeo(fd: number, name: number): [bigint, bigint] {
  const tv = new BigInt64Array(2);
  getsockopt(fd, name, new Uint8Array(tv.buffer));
  return [tv[0], tv[1]];
}

function int(fd: number, name: number): number {
  const v = new Int32Array(1);
  getsockopt(fd, name, new Uint8Array(v.buffer));
  return v[0];
}

/** Reads the common options of socket `fd`. */
export function readCommonOptions(fd: number): CommonSocketOptions {
  return {
    sndbuf: int(fd, SO.SNDBUF),
    rcvbuf: int(fd, SO.RCVBUF),
    sndTimeo: timeo(fd, SO.SNDTIMEO),
    rcvTimeo: timeo(fd, SO.RCVTIMEO),
  };
}

/** The common options an image's sk_opts_entry holds (zeros where it has none). */
export function commonOptionsOf(e: sk_opts_entry | undefined): CommonSocketOptions {
  return {
    sndbuf: e?.soSndbuf ?? 0,
    rcvbuf: e?.soRcvbuf ?? 0,
    sndTimeo: [e?.soSndTmoSec ?? 0n, e?.soSndTmoUsec ?? 0n],
    rcvTimeo: [e?.soRcvTmoSec ?? 0n, e?.soRcvTmoUsec ?? 0n],
  };
}
