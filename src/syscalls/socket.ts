/**
 * Passing descriptors with SCM_RIGHTS over an abstract unix datagram socket: how the restorer
 * hands an open file (one open file description, shared however many tasks hold it) to a task.
 *
 * ```
 * struct sockaddr_un { u16 family; char path[108]; }    abstract name: path[0] = 0, no NUL
 * struct msghdr  (56)  name, namelen(u32), iov, iovlen, control, controllen, flags(i32)
 * struct cmsghdr (16)  len(u64), level(i32), type(i32), then the fds (i32 each)
 * ```
 *
 * @module
 */
import { Errno, unwrap } from "./errno.ts";
import { addressOf, lastErrno, libc } from "./ffi.ts";
import { rawSyscall, sleep } from "./process.ts";
import { NR } from "./syscall_numbers.ts";

/** AF_UNIX. */
export const AF_UNIX = 1;
/** SOCK_STREAM. */
export const SOCK_STREAM = 1;
/** SOCK_DGRAM. */
export const SOCK_DGRAM = 2;
/** SOCK_SEQPACKET. */
export const SOCK_SEQPACKET = 5;
/** SOCK_CLOEXEC. */
export const SOCK_CLOEXEC = 0o2000000;
/** MSG_CMSG_CLOEXEC. */
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** Most descriptors one message carries (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
/** sizeof(struct msghdr). */
export const MSGHDR_SIZE = 56;
const CMSG_HDR = 16;

/** The bytes of a sockaddr_un for an abstract name, and its length. */
export function abstractAddr(name: string): { addr: Uint8Array; len: number } {
  const path = new TextEncoder().encode(name);
  if (path.length > 107) throw new Error(`Abstract socket name too long: ${name}`);
  const addr = new Uint8Array(110);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(path, 3); // path[0] = 0: abstract
  return { addr, len: 3 + path.length };
}

/** Room for a control message carrying `n` descriptors. */
export function cmsgSpace(n: number): number {
  return (CMSG_HDR + n * 4 + 7) & ~7;
}

function sys(nr: number, ...args: bigint[]): bigint {
  const a = [...args, 0n, 0n, 0n, 0n, 0n, 0n].slice(0, 6);
  const ret = libc.syscall(BigInt(nr), a[0], a[1], a[2], a[3], a[4], a[5]);
  return typeof ret === "bigint" ? ret : BigInt(ret);
}

/** The control message (cmsghdr, SCM_RIGHTS) that passes `fds`. */
function rightsControl(fds: number[]): Uint8Array {
  const control = new Uint8Array(cmsgSpace(fds.length));
  const cv = new DataView(control.buffer);
  cv.setBigUint64(0, BigInt(CMSG_HDR + fds.length * 4), true);
  cv.setInt32(8, SOL_SOCKET, true);
  cv.setInt32(12, SCM_RIGHTS, true);
  fds.forEach((fd, i) => cv.setInt32(CMSG_HDR + i * 4, fd, true));
  return control;
}

/** A unix datagram socket of this process for sending descriptors. */
export function unixDgramSocket(): number {
  const fd = sys(NR.socket, BigInt(AF_UNIX), BigInt(SOCK_DGRAM | SOCK_CLOEXEC), 0n);
  return Number(unwrap(fd, "socket(AF_UNIX)"));
}

/**
 * Sends `fds` (at most SCM_MAX_FD) with one byte of data on connected socket `sock`, or to the
 * abstract socket `name` when given.
 */
export function sendFds(sock: number, fds: number[], name?: string): void {
  if (fds.length > SCM_MAX_FD) {
    throw new Error(`Too many descriptors in one message: ${fds.length}`);
  }
  const data = new Uint8Array([0x2a]);
  const iov = new BigUint64Array([addressOf(data), 1n]);
  const control = rightsControl(fds);
  const msg = new Uint8Array(MSGHDR_SIZE);
  const mv = new DataView(msg.buffer);
  if (name !== undefined) {
    const { addr, len } = abstractAddr(name);
    mv.setBigUint64(0, addressOf(addr), true);
    mv.setUint32(8, len, true);
  }
  mv.setBigUint64(16, addressOf(new Uint8Array(iov.buffer)), true);
  mv.setBigUint64(24, 1n, true);
  mv.setBigUint64(32, addressOf(control), true);
  mv.setBigUint64(40, BigInt(control.length), true);
  const ret = sys(NR.sendmsg, BigInt(sock), addressOf(msg), 0n);
  if (ret < 0n) {
    throw new Errno("sendmsg(SCM_RIGHTS)", lastErrno(), name ? `to ${name.slice(1)}` : "");
  }
}

/**
 * A msghdr for recvmsg in another task, laid out in one block at `base` (its address there):
 * msghdr, then a 1-byte data buffer and its iovec, then room for `n` descriptors.
 */
export function recvMsgBlock(
  base: bigint,
  n: number,
): { bytes: Uint8Array; controlOffset: number } {
  const iovOff = MSGHDR_SIZE, dataOff = iovOff + 16, controlOffset = dataOff + 8;
  const bytes = new Uint8Array(controlOffset + cmsgSpace(n));
  const v = new DataView(bytes.buffer);
  v.setBigUint64(16, base + BigInt(iovOff), true); // msg_iov
  v.setBigUint64(24, 1n, true); // msg_iovlen
  v.setBigUint64(32, base + BigInt(controlOffset), true); // msg_control
  v.setBigUint64(40, BigInt(cmsgSpace(n)), true); // msg_controllen
  v.setBigUint64(iovOff, base + BigInt(dataOff), true);
  v.setBigUint64(iovOff + 8, 1n, true);
  return { bytes, controlOffset };
}

/** The descriptors of a received control message (as read back from the task). */
export function parseRights(control: Uint8Array): number[] {
  const v = new DataView(control.buffer, control.byteOffset, control.byteLength);
  const len = Number(v.getBigUint64(0, true));
  if (v.getInt32(8, true) !== SOL_SOCKET || v.getInt32(12, true) !== SCM_RIGHTS || len < CMSG_HDR) {
    return [];
  }
  return Array.from({ length: (len - CMSG_HDR) / 4 }, (_, i) => v.getInt32(CMSG_HDR + i * 4, true));
}

/** lseek(2). */
export function lseek(fd: number, offset: bigint, whence: number): bigint {
  return unwrap(sys(NR.lseek, BigInt(fd), offset, BigInt(whence)), "lseek", `fd ${fd}`);
}

/** lseek(2) returning `-errno` on failure (ENXIO ends a SEEK_DATA walk). */
export function tryLseek(fd: number, offset: bigint, whence: number): bigint {
  const ret = sys(NR.lseek, BigInt(fd), offset, BigInt(whence));
  return ret < 0n ? -BigInt(lastErrno()) : ret;
}

/** Socket option names used by deno-criu (SOL_SOCKET level). */
export const SO = {
  REUSEADDR: 2,
  TYPE: 3,
  /** SO_ERROR: reading it takes the error waiting on the socket away. */
  ERROR: 4,
  PEERNAME: 28,
  BROADCAST: 6,
  SNDBUF: 7,
  RCVBUF: 8,
  RCVTIMEO: 20,
  SNDTIMEO: 21,
  SNDBUFFORCE: 32,
  RCVBUFFORCE: 33,
  DONTROUTE: 5,
  KEEPALIVE: 9,
  OOBINLINE: 10,
  NO_CHECK: 11,
  LINGER: 13,
  PASSCRED: 16,
  PASSSEC: 34,
  /** SO_ATTACH_FILTER; read back as SO_GET_FILTER. */
  ATTACH_FILTER: 26,
  BUF_LOCK: 72,
  PRIORITY: 12,
  REUSEPORT: 15,
  RCVLOWAT: 18,
  BINDTODEVICE: 25,
  MARK: 36,
  DOMAIN: 39,
  PROTOCOL: 38,
  PEEK_OFF: 42,
} as const;

/** Protocol levels and their options used by deno-criu. */
export const SOL = { SOCKET: 1, IP: 0, TCP: 6, UDP: 17, IPV6: 41, ICMPV6: 58, RAW: 255 } as const;
/** UDP_CORK (level SOL_UDP). */
export const UDP_CORK = 1;
/** TCP_* options. */
export const TCP_OPT = {
  NODELAY: 1,
  MAXSEG: 2,
  CORK: 3,
  KEEPIDLE: 4,
  KEEPINTVL: 5,
  KEEPCNT: 6,
  INFO: 11,
  REPAIR: 19,
  REPAIR_QUEUE: 20,
  QUEUE_SEQ: 21,
  REPAIR_OPTIONS: 22,
  TIMESTAMP: 24,
  REPAIR_WINDOW: 29,
} as const;
/** TCP_REPAIR_QUEUE values. */
export const TCP_QUEUE = { NONE: 0, RECV: 1, SEND: 2 } as const;
/** TCP_REPAIR values. */
export const TCP_REPAIR = { OFF: 0, ON: 1, OFF_NO_WINDOW_PROBE: -1 } as const;
/** Socket ioctls: bytes in the receive queue, in the send queue, and not yet sent. */
export const SIOC = { INQ: 0x541b, OUTQ: 0x5411, OUTQNSD: 0x894b } as const;
/** IPPROTO_* numbers. */
export const IPPROTO = { TCP: 6, UDP: 17, RAW: 255 } as const;
/** SOCK_RAW. */
export const SOCK_RAW = 3;
/** IPV6_V6ONLY. */
export const IPV6_V6ONLY = 26;
/** IP-level options (SOL_IP) and their IPv6 counterparts (SOL_IPV6). */
export const IP_OPT = {
  TOS: 1,
  TTL: 2,
  PKTINFO: 8,
  /** IPv4 header options; setting them makes a connection work its segment size out again. */
  OPTIONS: 4,
  FREEBIND: 15,
  IPV6_RECVPKTINFO: 49,
  IPV6_FREEBIND: 78,
  /** Raw sockets: the caller writes the IP header (IPv4), never fragment (IPv4). */
  HDRINCL: 3,
  NODEFRAG: 22,
  IPV6_CHECKSUM: 7,
  IPV6_HDRINCL: 36,
  /** ICMP_FILTER (SOL_RAW) and ICMPV6_FILTER (SOL_ICMPV6): which ICMP types are dropped. */
  ICMP_FILTER: 1,
  ICMPV6_FILTER: 1,
} as const;
/** Address families. */
export const AF_INET = 2;
export const AF_INET6 = 10;

/** An IPv4 or IPv6 socket address: the port and the address as raw 32-bit words in memory order. */
export interface InetAddr {
  family: number;
  port: number;
  /** One word for IPv4, four for IPv6, each read little-endian from the address bytes. */
  addr: number[];
}

/** Decodes a sockaddr_in or sockaddr_in6 (from getsockname or getpeername). */
export function parseInetAddr(raw: Uint8Array): InetAddr {
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const family = v.getUint16(0, true);
  const port = v.getUint16(2, false);
  const words = family === AF_INET6 ? [8, 12, 16, 20] : [4];
  return { family, port, addr: words.map((o) => v.getUint32(o, true)) };
}

/** Encodes a sockaddr_in or sockaddr_in6. */
export function inetSockaddr(a: InetAddr): Uint8Array {
  const raw = new Uint8Array(a.family === AF_INET6 ? 28 : 16);
  const v = new DataView(raw.buffer);
  v.setUint16(0, a.family, true);
  v.setUint16(2, a.port, false);
  const words = a.family === AF_INET6 ? [8, 12, 16, 20] : [4];
  words.forEach((o, i) => v.setUint32(o, a.addr[i] ?? 0, true));
  return raw;
}

/** getsockname(2) (or getpeername(2) with `peer`): the raw address, or null when there is none. */
export function sockName(fd: number, peer = false): Uint8Array | null {
  const raw = new Uint8Array(128);
  const len = new Uint32Array([raw.length]);
  const nr = peer ? NR.getpeername : NR.getsockname;
  const ret = sys(nr, BigInt(fd), addressOf(raw), addressOf(new Uint8Array(len.buffer)));
  if (ret < 0n) {
    const e = lastErrno();
    if (peer && e === 107) return null; // ENOTCONN
    throw new Errno(peer ? "getpeername" : "getsockname", e, `fd ${fd}`);
  }
  return raw.slice(0, len[0]);
}

/**
 * The peer address of socket `fd` (of `family`) by SO_PEERNAME, which, unlike getpeername(),
 * still answers for a TCP socket closed after its connection; null when it has none
 * (ENOTCONN).
 */
export function peerName(fd: number, family: number): Uint8Array | null {
  // Exactly the address's size: the kernel refuses a larger buffer (EINVAL).
  const raw = new Uint8Array(family === AF_INET6 ? 28 : 16);
  try {
    getsockopt(fd, SO.PEERNAME, raw);
  } catch (e) {
    if (e instanceof Errno && e.errno === 107 /* ENOTCONN */) return null;
    throw e;
  }
  return raw;
}

/** The parts of struct tcp_info deno-criu reads. */
export interface TcpInfo {
  /** TCP_* state (1 established, 7 close, 10 listen). */
  state: number;
  /** TCPI_OPT_* bits: 1 timestamps, 2 SACK, 4 window scaling. */
  options: number;
  /** Window scale shifts, ours for sending and for receiving. */
  sndWscale: number;
  rcvWscale: number;
  /** For a listener: connections waiting to be accepted. */
  unacked: number;
  /** For a listener: its backlog. */
  sacked: number;
}

/** getsockopt(TCP_INFO). */
export function tcpInfo(fd: number): TcpInfo {
  const raw = new Uint8Array(104);
  getsockopt(fd, TCP_OPT.INFO, raw, SOL.TCP);
  const v = new DataView(raw.buffer);
  return {
    state: raw[0],
    options: raw[5],
    sndWscale: raw[6] & 0xf,
    rcvWscale: raw[6] >> 4,
    unacked: v.getUint32(24, true),
    sacked: v.getUint32(28, true),
  };
}

/** bind(2) to raw address bytes. */
export function bindRaw(fd: number, addr: Uint8Array, what: string): void {
  unwrap(sys(NR.bind, BigInt(fd), addressOf(addr), BigInt(addr.length)), "bind", what);
}

/** connect(2) to raw address bytes. */
export function connectRaw(fd: number, addr: Uint8Array, what: string): void {
  unwrap(sys(NR.connect, BigInt(fd), addressOf(addr), BigInt(addr.length)), "connect", what);
}
/** MSG_* flags. */
export const MSG = { PEEK: 2, DONTWAIT: 0x40 } as const;

/** socketpair(2): two connected sockets of `type`. */
export function socketpair(domain: number, type: number): [number, number] {
  const fds = new Int32Array(2);
  unwrap(
    sys(NR.socketpair, BigInt(domain), BigInt(type), 0n, addressOf(new Uint8Array(fds.buffer))),
    "socketpair",
  );
  return [fds[0], fds[1]];
}

/** socket(2). */
export function socket(domain: number, type: number, protocol = 0): number {
  return Number(unwrap(sys(NR.socket, BigInt(domain), BigInt(type), BigInt(protocol)), "socket"));
}

/** A sockaddr_un for a unix socket name as the kernel reports it (abstract names start with NUL). */
export function unixAddr(name: Uint8Array): { addr: Uint8Array; len: number } {
  const addr = new Uint8Array(110);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(name.subarray(0, 108), 2);
  return { addr, len: 2 + Math.min(name.length, 108) + (name[0] === 0 ? 0 : 1) };
}

/** bind(2) to a unix name. */
export function bindUnix(fd: number, name: Uint8Array, what: string): void {
  const { addr, len } = unixAddr(name);
  unwrap(sys(NR.bind, BigInt(fd), addressOf(addr), BigInt(len)), "bind", what);
}

/** listen(2). */
export function listen(fd: number, backlog: number): void {
  unwrap(sys(NR.listen, BigInt(fd), BigInt(backlog)), "listen", `fd ${fd}`);
}

/** shutdown(2) that ignores its answer (ENOTCONN for an unconnected socket it marks anyway). */
export function shutdownQuiet(fd: number, how: number): void {
  sys(NR.shutdown, BigInt(fd), BigInt(how));
}

/** shutdown(2); `how` 0 reading, 1 writing, 2 both. */
export function shutdown(fd: number, how: number): void {
  unwrap(sys(NR.shutdown, BigInt(fd), BigInt(how)), "shutdown", `fd ${fd}`);
}

/**
 * getsockopt(2) at `level` (SOL_SOCKET unless given) into `out` (its length is the option's
 * size); returns the length the kernel gave.
 */
export function getsockopt(fd: number, name: number, out: Uint8Array, level = SOL_SOCKET): number {
  const len = new Uint32Array([out.length]);
  unwrap(
    sys(
      NR.getsockopt,
      BigInt(fd),
      BigInt(level),
      BigInt(name),
      addressOf(out),
      addressOf(new Uint8Array(len.buffer)),
    ),
    `getsockopt(${name})`,
    `fd ${fd}`,
  );
  return len[0];
}

/**
 * The classic BPF filter attached to socket `fd` (SO_GET_FILTER), each instruction (`struct
 * sock_filter {u16 code; u8 jt; u8 jf; u32 k;}`) as one word: code << 48 | jt << 40 | jf << 32
 * | k, as criu stores it. Empty when none is attached.
 */
export function getSocketFilter(fd: number): bigint[] {
  const count = new Uint32Array([0]);
  const lenAt = addressOf(new Uint8Array(count.buffer));
  unwrap(
    sys(NR.getsockopt, BigInt(fd), BigInt(SOL_SOCKET), 26n, 0n, lenAt),
    "getsockopt(SO_GET_FILTER)",
    `fd ${fd}`,
  );
  if (!count[0]) return [];
  const insns = new Uint8Array(count[0] * 8);
  unwrap(
    sys(NR.getsockopt, BigInt(fd), BigInt(SOL_SOCKET), 26n, addressOf(insns), lenAt),
    "getsockopt(SO_GET_FILTER)",
    `fd ${fd}`,
  );
  const v = new DataView(insns.buffer);
  return Array.from(
    { length: count[0] },
    (_, i) =>
      (BigInt(v.getUint16(i * 8, true)) << 48n) | (BigInt(v.getUint8(i * 8 + 2)) << 40n) |
      (BigInt(v.getUint8(i * 8 + 3)) << 32n) | BigInt(v.getUint32(i * 8 + 4, true)),
  );
}

/** Attaches classic BPF filter `words` (as {@link getSocketFilter} gives them) to `fd`. */
export function setSocketFilter(fd: number, words: bigint[]): void {
  const insns = new Uint8Array(words.length * 8);
  const v = new DataView(insns.buffer);
  words.forEach((w, i) => {
    v.setUint16(i * 8, Number((w >> 48n) & 0xffffn), true);
    v.setUint8(i * 8 + 2, Number((w >> 40n) & 0xffn));
    v.setUint8(i * 8 + 3, Number((w >> 32n) & 0xffn));
    v.setUint32(i * 8 + 4, Number(w & 0xffffffffn), true);
  });
  // struct sock_fprog {unsigned short len; struct sock_filter *filter;}
  const prog = new BigUint64Array([BigInt(words.length), addressOf(insns)]);
  setsockopt(fd, 26, new Uint8Array(prog.buffer));
}

/** setsockopt(2) at `level` (SOL_SOCKET unless given) of bytes `value`. */
export function setsockopt(fd: number, name: number, value: Uint8Array, level = SOL_SOCKET): void {
  unwrap(
    sys(
      NR.setsockopt,
      BigInt(fd),
      BigInt(level),
      BigInt(name),
      addressOf(value),
      BigInt(value.length),
    ),
    `setsockopt(${name})`,
    `fd ${fd}`,
  );
}

/** send(2) of a whole message (sendto with no address). */
export function sendAll(
  fd: number,
  data: Uint8Array,
  to?: { addr: Uint8Array; len: number },
): void {
  const ret = sys(
    NR.sendto,
    BigInt(fd),
    addressOf(data),
    BigInt(data.length),
    0n,
    to ? addressOf(to.addr) : 0n,
    to ? BigInt(to.len) : 0n,
  );
  if (ret < 0n) throw new Errno("send", lastErrno(), `fd ${fd}`);
  if (Number(ret) !== data.length) {
    throw new Error(`Short send on fd ${fd}: ${ret} of ${data.length} bytes`);
  }
}

/** send(2) once, with MSG_* `flags`: the bytes taken, which may be fewer than given. */
export function sendSome(fd: number, data: Uint8Array, what: string, flags = 0): number {
  const ret = sys(
    NR.sendto,
    BigInt(fd),
    addressOf(data),
    BigInt(data.length),
    BigInt(flags),
    0n,
    0n,
  );
  return Number(unwrap(ret, "send", what));
}

/** recv(2) with MSG_PEEK | MSG_DONTWAIT into `buf`: the bytes copied (0 when none wait). */
export function peekInto(fd: number, buf: Uint8Array, what: string): number {
  const ret = sys(
    NR.recvfrom,
    BigInt(fd),
    addressOf(buf),
    BigInt(buf.length),
    BigInt(MSG.PEEK | MSG.DONTWAIT),
    0n,
    0n,
  );
  if (ret < 0n && lastErrno() === 11) return 0;
  return Number(unwrap(ret, "recv(MSG_PEEK)", what));
}

/**
 * One recvmsg(MSG_PEEK | MSG_DONTWAIT): the next message (or stream bytes) without taking it,
 * the descriptors in flight with it (copies, installed here close-on-exec), and whether other
 * control data (credentials) came with it. Returns null when the queue is empty. A failure
 * names `what` (the socket).
 */
export function peekMessage(
  fd: number,
  max: number,
  what: string,
): { data: Uint8Array; fds: number[]; other: boolean } | null {
  const got = recvMessage(fd, max, MSG.PEEK | MSG.DONTWAIT);
  if (got === -11) return null; // EAGAIN: nothing queued
  if (typeof got === "number") throw new Errno("recvmsg(MSG_PEEK)", -got, what);
  return got;
}

/**
 * One recvmsg, waiting: the next message and the descriptors that came with it (installed here
 * close-on-exec); null at the end (the peer gone).
 */
export function receiveMessage(
  fd: number,
  max: number,
): { data: Uint8Array; fds: number[] } | null {
  let got;
  do got = recvMessage(fd, max, 0); while (got === -4 /* EINTR */);
  if (typeof got === "number") throw new Errno("recvmsg", -got, `fd ${fd}`);
  return got.data.length || got.fds.length ? { data: got.data, fds: got.fds } : null;
}

/**
 * recvmsg(2) of at most `max` bytes with `flags`: the message, the descriptors in flight with
 * it (installed here close-on-exec), and whether other control data (credentials) came with
 * it; or -errno.
 */
function recvMessage(
  fd: number,
  max: number,
  flags: number,
): { data: Uint8Array; fds: number[]; other: boolean } | number {
  const data = new Uint8Array(max);
  const control = new Uint8Array(cmsgSpace(SCM_MAX_FD) + 256);
  const h = msgHeader(data, control);
  const MSG_CMSG_CLOEXEC = 0x40000000;
  const ret = sys(NR.recvmsg, BigInt(fd), addressOf(h.msg), BigInt(flags | MSG_CMSG_CLOEXEC));
  if (ret < 0n) return -lastErrno();
  const clen = Number(new DataView(h.msg.buffer).getBigUint64(40, true));
  const cv = new DataView(control.buffer);
  const fds: number[] = [];
  let other = false;
  for (let off = 0; off + CMSG_HDR <= clen;) {
    const len = Number(cv.getBigUint64(off, true));
    if (len < CMSG_HDR) break;
    if (cv.getInt32(off + 8, true) === SOL_SOCKET && cv.getInt32(off + 12, true) === SCM_RIGHTS) {
      for (let i = CMSG_HDR; i + 4 <= len; i += 4) fds.push(cv.getInt32(off + i, true));
    } else {
      other = true;
    }
    off += (len + 7) & ~7;
  }
  return { data: data.slice(0, Number(ret)), fds, other };
}

/**
 * A msghdr of one buffer and a control area. Keep the returned object alive while the kernel
 * uses the header (it holds the iovec the header points to).
 */
function msgHeader(
  data: Uint8Array,
  control: Uint8Array,
): { msg: Uint8Array; iov: BigUint64Array; data: Uint8Array; control: Uint8Array } {
  const iov = new BigUint64Array([addressOf(data), BigInt(data.length)]);
  const msg = new Uint8Array(MSGHDR_SIZE);
  const mv = new DataView(msg.buffer);
  mv.setBigUint64(16, addressOf(new Uint8Array(iov.buffer)), true);
  mv.setBigUint64(24, 1n, true);
  mv.setBigUint64(32, addressOf(control), true);
  mv.setBigUint64(40, BigInt(control.length), true);
  return { msg, iov, data, control };
}

/** sendmsg(2) of `data` with descriptors `fds` in flight (SCM_RIGHTS). */
export function sendWithFds(sock: number, data: Uint8Array, fds: number[], what: string): void {
  const h = msgHeader(data, rightsControl(fds));
  const MSG_NOSIGNAL = 0x4000;
  const ret = sys(NR.sendmsg, BigInt(sock), addressOf(h.msg), BigInt(MSG_NOSIGNAL));
  if (ret < 0n) throw new Errno("sendmsg(SCM_RIGHTS)", lastErrno(), what);
  if (Number(ret) !== data.length) throw new Error(`Cannot send ${what}: a short write`);
}

/** connect(2) to a unix name. */
export function connectUnix(fd: number, name: Uint8Array, what: string): void {
  const { addr, len } = unixAddr(name);
  unwrap(sys(NR.connect, BigInt(fd), addressOf(addr), BigInt(len)), "connect", what);
}

/** accept4(2), with SOCK_CLOEXEC. */
export function accept(fd: number, what: string): number {
  return Number(unwrap(sys(NR.accept4, BigInt(fd), 0n, 0n, BigInt(SOCK_CLOEXEC)), "accept4", what));
}

/** SIOCGSKNS: a descriptor (close-on-exec) of the network namespace socket `fd` belongs to. */
export function socketNetns(fd: number, what: string): number {
  const SIOCGSKNS = 0x894c;
  return Number(unwrap(rawSyscall(NR.ioctl, fd, SIOCGSKNS, 0), "ioctl(SIOCGSKNS)", what));
}

const MSG_TRUNC = 0x20, EINTR = 4, SO_PEERCRED = 17;

/**
 * Waits, off the event loop, until `fd` can be read (or its peer has gone). Resolves to false
 * when the descriptor is bad or the wait failed.
 */
export async function readable(fd: number): Promise<boolean> {
  const POLLIN = 1, POLLNVAL = 0x20;
  // struct pollfd { int fd; short events; short revents; }
  const pfd = new Int32Array([fd, POLLIN]);
  for (;;) {
    const n = await libc.poll_nb(new Uint8Array(pfd.buffer), 1n, -1);
    if (n > 0) return ((pfd[1] >>> 16) & POLLNVAL) === 0;
    if (n < 0) {
      // EINTR (criu's own SIGCHLD) is the usual cause; a bad descriptor reports POLLNVAL.
      await sleep(1);
    }
  }
}

/**
 * One whole packet of SOCK_SEQPACKET socket `fd`, however long: its length read first without
 * taking it (MSG_PEEK | MSG_TRUNC), then taken. Null at end of stream (the peer closed). Blocks.
 * With `fds`, the descriptors the packet carries (SCM_RIGHTS, up to 8) are pushed there,
 * close-on-exec; without, the kernel closes them.
 */
export function recvPacket(fd: number, what: string, fds?: number[]): Uint8Array | null {
  const probe = new Uint8Array(1);
  const peek = () =>
    sys(NR.recvfrom, BigInt(fd), addressOf(probe), 1n, BigInt(MSG.PEEK | MSG_TRUNC), 0n, 0n);
  let len = peek();
  while (len < 0n && lastErrno() === EINTR) len = peek();
  if (len === 0n) {
    // An empty packet and the end of the stream look the same here; neither is a request.
    sys(NR.recvfrom, BigInt(fd), addressOf(probe), 1n, 0n, 0n, 0n);
    return null;
  }
  const buf = new Uint8Array(Number(unwrap(len, "recv(MSG_PEEK)", what)));
  const control = new Uint8Array(fds ? cmsgSpace(8) : 0);
  const iov = new BigUint64Array([addressOf(buf), BigInt(buf.length)]);
  const msg = new Uint8Array(MSGHDR_SIZE);
  const mv = new DataView(msg.buffer);
  mv.setBigUint64(16, addressOf(iov), true); // msg_iov
  mv.setBigUint64(24, 1n, true); // msg_iovlen
  if (fds) {
    mv.setBigUint64(32, addressOf(control), true); // msg_control
    mv.setBigUint64(40, BigInt(control.length), true); // msg_controllen
  }
  const take = () => sys(NR.recvmsg, BigInt(fd), addressOf(msg), BigInt(MSG_CMSG_CLOEXEC));
  let got = take();
  while (got < 0n && lastErrno() === EINTR) got = take();
  const n = Number(unwrap(got, "recvmsg", what));
  if (fds && mv.getBigUint64(40, true) > 0n) fds.push(...parseRights(control));
  return buf.subarray(0, n);
}

/** The credentials of the process at the other end of unix socket `fd` (SO_PEERCRED). */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const cred = new Int32Array(3);
  getsockopt(fd, SO_PEERCRED, new Uint8Array(cred.buffer));
  return { pid: cred[0], uid: cred[1], gid: cred[2] };
}

/**
 * Reads exactly `buf.length` bytes of stream socket `fd` (blocking), the descriptors that come
 * with them (SCM_RIGHTS, close-on-exec) pushed onto `fds`. False at end of stream before any
 * byte.
 */
export function recvExact(fd: number, buf: Uint8Array, what: string, fds?: number[]): boolean {
  const control = new Uint8Array(cmsgSpace(8));
  for (let off = 0; off < buf.length;) {
    const h = msgHeader(buf.subarray(off), control);
    const mv = new DataView(h.msg.buffer);
    const got = sys(NR.recvmsg, BigInt(fd), addressOf(h.msg), BigInt(MSG_CMSG_CLOEXEC));
    if (got < 0n && lastErrno() === EINTR) continue;
    const n = Number(unwrap(got, "recvmsg", what));
    if (mv.getBigUint64(40, true) > 0n) {
      const rights = parseRights(control);
      if (fds) fds.push(...rights);
      else rights.forEach((r) => sys(NR.close, BigInt(r)));
    }
    if (n === 0) {
      if (off === 0) return false;
      throw new Error(`${what}: the stream ended inside a message`);
    }
    off += n;
  }
  return true;
}
