/**
 * NETLINK_SOCK_DIAG: one dump request, every reply message handed to a parser. The unix and
 * inet modules build their requests and read their replies (unix_diag.ts, inet_diag.ts).
 *
 * ```
 * request  nlmsghdr (16): len, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, pid
 *          | the family's request body
 * reply    nlmsghdr (16) | the family's message | rtattr (len u16, type u16, data, padded to 4)...
 * ```
 *
 * @module
 */
import { netSocket } from "./ns_sockets.ts";
import { close, Errno, tryRead, writeAll } from "../syscalls/mod.ts";

const AF_NETLINK = 16, NETLINK_SOCK_DIAG = 4, SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1, NLM_F_DUMP = 0x300, NLMSG_DONE = 3, NLMSG_ERROR = 2;

/** Sends dump request `body` and calls `onMessage` with each reply message (header stripped). */
export function sockDiagDump(body: Uint8Array, onMessage: (m: Uint8Array) => void): void {
  // In the tree's network namespace: sock_diag answers for the socket's own.
  const fd = netSocket(AF_NETLINK, 2 /* DGRAM */ | 0o2000000, NETLINK_SOCK_DIAG);
  try {
    const req = new Uint8Array(16 + body.length);
    const v = new DataView(req.buffer);
    v.setUint32(0, req.length, true);
    v.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
    v.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
    v.setUint32(8, 1, true);
    req.set(body, 16);
    writeAll(fd, req, "sock_diag request");
    const buf = new Uint8Array(64 << 10);
    for (;;) {
      const n = tryRead(fd, buf);
      if (n < 0) throw new Errno("recv(NETLINK_SOCK_DIAG)", -n);
      for (let off = 0; off + 16 <= n;) {
        const h = new DataView(buf.buffer, off);
        const len = h.getUint32(0, true), type = h.getUint16(4, true);
        if (type === NLMSG_DONE) return;
        if (type === NLMSG_ERROR) throw new Errno("sock_diag", -h.getInt32(16, true));
        onMessage(buf.subarray(off + 16, off + len));
        off += (len + 3) & ~3;
      }
    }
  } finally {
    close(fd);
  }
}

/** The attributes after a message's fixed part (`start` bytes): type → data. */
export function diagAttributes(m: Uint8Array, start: number): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  const v = new DataView(m.buffer, m.byteOffset, m.byteLength);
  for (let off = start; off + 4 <= m.length;) {
    const len = v.getUint16(off, true), type = v.getUint16(off + 2, true);
    if (len < 4) break;
    out.set(type, m.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}
