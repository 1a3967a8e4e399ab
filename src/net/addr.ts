/**
 * Inet addresses and connections, as the images keep them (addresses as raw 32-bit words),
 * and as text.
 *
 * @module
 */
import { AF_INET } from "../syscalls/socket.ts";

/** Whether address words `a` are an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
export function isV4Mapped(a: readonly number[]): boolean {
  return a.length === 4 && a[0] === 0 && a[1] === 0 && a[2] === 0xffff0000;
}

/** Address words as on the wire: an IPv4-mapped IPv6 address as its IPv4 word. */
export function wireAddr(a: number[]): number[] {
  return isV4Mapped(a) ? [a[3]] : a;
}

/** The address `words` of `family` as text: `10.0.0.1` or `fd00:0:0:0:0:0:0:1`. */
export function addrText(family: number, words: number[]): string {
  const bytes = new Uint8Array(new Uint32Array(words).buffer);
  if (family === AF_INET) return [...bytes.subarray(0, 4)].join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return groups.join(":");
}

/** An address with its port: `10.0.0.1:80` or `[fd00:0:0:0:0:0:0:1]:80`. */
export function endpointText(family: number, port: number, words: number[]): string {
  const a = addrText(family, words);
  return family === AF_INET ? `${a}:${port}` : `[${a}]:${port}`;
}

/** A TCP connection as seen from its local end. */
export interface Connection {
  family: number;
  srcAddr: number[];
  srcPort: number;
  dstAddr: number[];
  dstPort: number;
}

/** A connection as text: `10.0.0.1:80 -> 10.0.0.2:40000`. */
export function connectionText(c: Connection): string {
  return `${endpointText(c.family, c.srcPort, c.srcAddr)} -> ` +
    endpointText(c.family, c.dstPort, c.dstAddr);
}
