/**
 * The socket options every socket's image keeps (sk_opts_entry's first fields): buffer sizes
 * and send/receive timeouts, read from a socket and from an image, and given back, the same
 * way for unix and inet sockets.
 *
 * @module
 */
import type { sk_opts_entry } from "../../proto/gen/files_pb.ts";
import { getsockopt, setsockopt, SO } from "../syscalls/socket.ts";

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

/**
 * Gives socket `fd` the common options `o`. The kernel doubles a buffer size it is given, so
 * it gets half of what it reported; FORCE passes net.core.[rw]mem_max, which a size the
 * kernel grew by itself may exceed.
 */
export function applyCommonOptions(fd: number, o: CommonSocketOptions): void {
  const half = (v: number) => new Uint8Array(new Int32Array([Math.max(1, v >> 1)]).buffer);
  if (o.sndbuf) setsockopt(fd, SO.SNDBUFFORCE, half(o.sndbuf));
  if (o.rcvbuf) setsockopt(fd, SO.RCVBUFFORCE, half(o.rcvbuf));
  for (const [name, tv] of [[SO.SNDTIMEO, o.sndTimeo], [SO.RCVTIMEO, o.rcvTimeo]] as const) {
    if (tv[0] || tv[1]) setsockopt(fd, name, new Uint8Array(new BigInt64Array(tv).buffer));
  }
}
