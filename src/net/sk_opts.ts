/**
 * The socket options every socket's image keeps (sk_opts_entry), the same set for unix and inet
 * sockets, as criu keeps it: read from a socket, read from an image, and given back.
 *
 * SO_REUSEADDR is read here but given back by each kind of socket at its own moment (a TCP
 * socket needs it around bind and repair mode).
 *
 * @module
 */
import { isFieldSet, type MessageInitShape } from "../images/protobuf.ts";
import { type sk_opts_entry, sk_opts_entrySchema } from "../../proto/gen/files_pb.ts";
import {
  AF_UNIX,
  getSocketFilter,
  getsockopt,
  setSocketFilter,
  setsockopt,
  SO,
} from "../syscalls/socket.ts";

/** A socket's generic options. Buffer sizes as the kernel reports them (doubled). */
export interface CommonSocketOptions {
  sndbuf: number;
  rcvbuf: number;
  /** [seconds, microseconds]. */
  sndTimeo: [bigint, bigint];
  rcvTimeo: [bigint, bigint];
  reuseaddr: boolean;
  reuseport: boolean;
  priority: number;
  rcvlowat: number;
  mark: number;
  /** Unix sockets only (undefined for others). */
  passcred?: boolean;
  passsec?: boolean;
  dontroute: boolean;
  noCheck: boolean;
  broadcast: boolean;
  keepalive: boolean;
  oobinline: boolean;
  /** SO_LINGER's l_linger when lingering is on, else undefined. */
  linger?: number;
  /** SO_BUF_LOCK (which buffer sizes were set by hand), when the kernel has it. */
  bufLock?: number;
  boundDev: string;
  /** A classic BPF filter, one word per instruction (see getSocketFilter). */
  filter: bigint[];
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

function tryInt(fd: number, name: number): number | undefined {
  try {
    return int(fd, name);
  } catch {
    return undefined; // an option this kernel does not have
  }
}

function boundDevice(fd: number): string {
  const dev = new Uint8Array(32);
  try {
    getsockopt(fd, SO.BINDTODEVICE, dev);
  } catch {
    return "";
  }
  return new TextDecoder().decode(dev.subarray(0, Math.max(0, dev.indexOf(0))));
}

/** Reads the generic options of socket `fd` of address family `family`. */
export function readCommonOptions(fd: number, family: number): CommonSocketOptions {
  const linger = new Int32Array(2);
  getsockopt(fd, SO.LINGER, new Uint8Array(linger.buffer));
  const unix = family === AF_UNIX;
  return {
    sndbuf: int(fd, SO.SNDBUF),
    rcvbuf: int(fd, SO.RCVBUF),
    sndTimeo: timeo(fd, SO.SNDTIMEO),
    rcvTimeo: timeo(fd, SO.RCVTIMEO),
    reuseaddr: int(fd, SO.REUSEADDR) !== 0,
    reuseport: int(fd, SO.REUSEPORT) !== 0,
    priority: int(fd, SO.PRIORITY),
    rcvlowat: int(fd, SO.RCVLOWAT),
    mark: int(fd, SO.MARK),
    passcred: unix ? int(fd, SO.PASSCRED) !== 0 : undefined,
    passsec: unix ? int(fd, SO.PASSSEC) !== 0 : undefined,
    dontroute: int(fd, SO.DONTROUTE) !== 0,
    noCheck: int(fd, SO.NO_CHECK) !== 0,
    broadcast: int(fd, SO.BROADCAST) !== 0,
    keepalive: int(fd, SO.KEEPALIVE) !== 0,
    oobinline: int(fd, SO.OOBINLINE) !== 0,
    linger: linger[0] ? linger[1] : undefined,
    bufLock: tryInt(fd, SO.BUF_LOCK),
    boundDev: boundDevice(fd),
    filter: getSocketFilter(fd),
  };
}

/** The options of a socket that never had any set (a listener made up for the images). */
export function defaultOptions(): CommonSocketOptions {
  return commonOptionsOf(undefined);
}

/** The generic options an image's sk_opts_entry holds (defaults where it has none). */
export function commonOptionsOf(e: sk_opts_entry | undefined): CommonSocketOptions {
  return {
    sndbuf: e?.soSndbuf ?? 0,
    rcvbuf: e?.soRcvbuf ?? 0,
    sndTimeo: [e?.soSndTmoSec ?? 0n, e?.soSndTmoUsec ?? 0n],
    rcvTimeo: [e?.soRcvTmoSec ?? 0n, e?.soRcvTmoUsec ?? 0n],
    reuseaddr: e?.reuseaddr ?? false,
    reuseport: e?.soReuseport ?? false,
    priority: e?.soPriority ?? 0,
    rcvlowat: e?.soRcvlowat ?? 1,
    mark: e?.soMark ?? 0,
    passcred: e?.soPasscred,
    passsec: e?.soPasssec,
    dontroute: e?.soDontroute ?? false,
    noCheck: e?.soNoCheck ?? false,
    broadcast: e?.soBroadcast ?? false,
    keepalive: e?.soKeepalive ?? false,
    oobinline: (e?.soOobinline ?? 0) !== 0,
    // Optional in the image: absent means off (linger) or unknown (lock), not 0.
    linger: e && isFieldSet(e, sk_opts_entrySchema.field.soLinger) ? e.soLinger : undefined,
    bufLock: e && isFieldSet(e, sk_opts_entrySchema.field.soBufLock) ? e.soBufLock : undefined,
    boundDev: e?.soBoundDev ?? "",
    filter: [...(e?.soFilter ?? [])],
  };
}

/** The sk_opts_entry fields for `o` (the caller adds what is its own). */
export function commonOptionsEntry(
  o: CommonSocketOptions,
): MessageInitShape<typeof sk_opts_entrySchema> {
  return {
    soSndbuf: o.sndbuf,
    soRcvbuf: o.rcvbuf,
    soSndTmoSec: o.sndTimeo[0],
    soSndTmoUsec: o.sndTimeo[1],
    soRcvTmoSec: o.rcvTimeo[0],
    soRcvTmoUsec: o.rcvTimeo[1],
    reuseaddr: o.reuseaddr,
    soReuseport: o.reuseport,
    soPriority: o.priority,
    soRcvlowat: o.rcvlowat,
    soMark: o.mark || undefined,
    soPasscred: o.passcred,
    soPasssec: o.passsec,
    soDontroute: o.dontroute,
    soNoCheck: o.noCheck,
    soBroadcast: o.broadcast,
    soKeepalive: o.keepalive,
    soOobinline: o.oobinline ? 1 : 0,
    soLinger: o.linger,
    soBufLock: o.bufLock,
    soBoundDev: o.boundDev || undefined,
    soFilter: o.filter,
  };
}

/** SO_BUF_LOCK `bufLock` (which buffer sizes the kernel may not tune), when it was dumped. */
export function applyBufferLock(fd: number, bufLock: number | undefined): void {
  if (bufLock === undefined) return;
  try {
    setsockopt(fd, SO.BUF_LOCK, new Uint8Array(new Int32Array([bufLock]).buffer));
  } catch {
    // SO_BUF_LOCK is newer than some kernels; an unlocked size is what those have
  }
}

/**
 * Gives socket `fd` the generic options `o`, SO_REUSEADDR aside. The kernel doubles a buffer
 * size it is given, so it gets half of what it reported; FORCE passes net.core.[rw]mem_max,
 * which a size the kernel grew by itself may exceed. SO_BUF_LOCK comes after the sizes (setting
 * a size locks it): a size the kernel still tunes by itself goes back to being tuned. A TCP
 * connection keeps its sizes locked until its queues are back (`lock: false`; see
 * {@link applyBufferLock}): unlocked, the repair connect sizes its windows anew.
 */
export function applyCommonOptions(
  fd: number,
  o: CommonSocketOptions,
  { lock = true }: { lock?: boolean } = {},
): void {
  const i32 = (v: number) => new Uint8Array(new Int32Array([v]).buffer);
  const half = (v: number) => i32(Math.max(1, v >> 1));
  if (o.sndbuf) setsockopt(fd, SO.SNDBUFFORCE, half(o.sndbuf));
  if (o.rcvbuf) setsockopt(fd, SO.RCVBUFFORCE, half(o.rcvbuf));
  if (lock) applyBufferLock(fd, o.bufLock);
  for (const [name, tv] of [[SO.SNDTIMEO, o.sndTimeo], [SO.RCVTIMEO, o.rcvTimeo]] as const) {
    if (tv[0] || tv[1]) setsockopt(fd, name, new Uint8Array(new BigInt64Array(tv).buffer));
  }
  if (o.reuseport) setsockopt(fd, SO.REUSEPORT, i32(1));
  if (o.priority) setsockopt(fd, SO.PRIORITY, i32(o.priority));
  if (o.rcvlowat > 1) setsockopt(fd, SO.RCVLOWAT, i32(o.rcvlowat));
  if (o.mark) setsockopt(fd, SO.MARK, i32(o.mark));
  if (o.passcred) setsockopt(fd, SO.PASSCRED, i32(1));
  if (o.passsec) setsockopt(fd, SO.PASSSEC, i32(1));
  if (o.dontroute) setsockopt(fd, SO.DONTROUTE, i32(1));
  if (o.noCheck) setsockopt(fd, SO.NO_CHECK, i32(1));
  if (o.broadcast) setsockopt(fd, SO.BROADCAST, i32(1));
  if (o.keepalive) setsockopt(fd, SO.KEEPALIVE, i32(1));
  if (o.oobinline) setsockopt(fd, SO.OOBINLINE, i32(1));
  if (o.linger !== undefined) {
    setsockopt(fd, SO.LINGER, new Uint8Array(new Int32Array([1, o.linger]).buffer));
  }
  if (o.boundDev) setsockopt(fd, SO.BINDTODEVICE, new TextEncoder().encode(o.boundDev));
  if (o.filter.length) setSocketFilter(fd, o.filter);
}
