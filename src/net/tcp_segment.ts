/**
 * A TCP segment forged from the peer of a connection being restored, sent over a raw socket
 * to the local end: how a FIN the peer had sent (or its acknowledgement of ours) is put back
 * into a half-closed connection. The segment carries the network lock's mark, so the lock
 * lets it through while it drops everything else of the connection.
 *
 * ```
 * IPv4 header (20, checksum and length filled by the kernel) | TCP header (20)
 * IPv6 header (40)                                           | TCP header (20)
 * ```
 *
 * @module
 */
import { netSocket } from "./ns_sockets.ts";
import { close } from "../syscalls/mod.ts";
import {
  AF_INET,
  AF_INET6,
  inetSockaddr,
  IPPROTO,
  sendAll,
  setsockopt,
  SO,
  SOCK_CLOEXEC,
  SOCK_RAW,
} from "../syscalls/socket.ts";
import { type Connection, isV4Mapped, wireAddr } from "./addr.ts";

/** The mark of packets the network lock lets through (CRIU's SOCCR_MARK). */
export const LOCK_BYPASS_MARK = 0xc114;

/** TCP header flags. */
export const TH = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

function bytesOf(words: number[]): Uint8Array {
  return new Uint8Array(new Uint32Array(words).buffer);
}

function checksum(parts: Uint8Array[]): number {
  let sum = 0;
  for (const p of parts) {
    for (let i = 0; i < p.length; i += 2) sum += (p[i] << 8) | (p[i + 1] ?? 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** One segment's numbers. */
export interface Segment {
  seq: number;
  ack: number;
  flags: number;
  window: number;
}

/**
 * The packet of segment `s` from the peer of connection `ends` to its local end: IP header
 * (IPv4 checksum left to the kernel) and TCP header with its checksum.
 */
export function fakeSegment(ends: Connection, s: Segment): Uint8Array {
  const v6 = ends.family === AF_INET6;
  const from = bytesOf(ends.dstAddr), to = bytesOf(ends.srcAddr);
  const tcp = new Uint8Array(20);
  const t = new DataView(tcp.buffer);
  t.setUint16(0, ends.dstPort);
  t.setUint16(2, ends.srcPort);
  t.setUint32(4, s.seq >>> 0);
  t.setUint32(8, s.ack >>> 0);
  tcp[12] = 5 << 4;
  tcp[13] = s.flags;
  t.setUint16(14, Math.min(s.window, 0xffff));
  const pseudo = new Uint8Array(v6 ? 40 : 12);
  const pv = new DataView(pseudo.buffer);
  pseudo.set(from, 0);
  pseudo.set(to, from.length);
  if (v6) {
    pv.setUint32(32, tcp.length);
    pseudo[39] = IPPROTO.TCP;
  } else {
    pseudo[9] = IPPROTO.TCP;
    pv.setUint16(10, tcp.length);
  }
  t.setUint16(16, checksum([pseudo, tcp]));

  const ip = new Uint8Array(v6 ? 40 : 20);
  const iv = new DataView(ip.buffer);
  if (v6) {
    iv.setUint32(0, 6 << 28);
    iv.setUint16(4, tcp.length);
    ip[6] = IPPROTO.TCP;
    ip[7] = 64;
    ip.set(from, 8);
    ip.set(to, 24);
  } else {
    ip[0] = 0x45;
    iv.setUint16(2, ip.length + tcp.length);
    ip[8] = 64;
    ip[9] = IPPROTO.TCP;
    ip.set(from, 12);
    ip.set(to, 16);
  }
  const packet = new Uint8Array(ip.length + tcp.length);
  packet.set(ip);
  packet.set(tcp, ip.length);
  return packet;
}

/**
 * The connection as it runs on the wire: an IPv6 socket talking to an IPv4 peer (addresses
 * ::ffff:a.b.c.d) sends and receives IPv4 packets.
 */
export function onTheWire(ends: Connection): Connection {
  if (ends.family !== AF_INET6 || !isV4Mapped(ends.srcAddr) || !isV4Mapped(ends.dstAddr)) {
    return ends;
  }
  return {
    ...ends,
    family: AF_INET,
    srcAddr: wireAddr(ends.srcAddr),
    dstAddr: wireAddr(ends.dstAddr),
  };
}

/** Sends segment `s` from the peer of connection `ends` to its local end, over a raw socket. */
export function sendFakeSegment(connection: Connection, s: Segment): void {
  const ends = onTheWire(connection);
  const packet = fakeSegment(ends, s);
  const fd = netSocket(ends.family, SOCK_RAW | SOCK_CLOEXEC, IPPROTO.RAW);
  try {
    setsockopt(fd, SO.MARK, new Uint8Array(new Uint32Array([LOCK_BYPASS_MARK]).buffer));
    const to = inetSockaddr({ family: ends.family, port: 0, addr: ends.srcAddr });
    sendAll(fd, packet, { addr: to, len: to.length });
  } finally {
    close(fd);
  }
}
