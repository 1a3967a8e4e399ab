/**
 * Inet addresses and connections, as the images keep them (addresses as raw 32-bit words),
 * and as text.
 *
 * @module
 */
import { AF_INET } from "../syscalls/socket.ts";

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
