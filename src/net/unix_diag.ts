/**
 * What the kernel knows about every unix socket of this network namespace, from sock_diag
 * (NETLINK_SOCK_DIAG, UNIX_DIAG): type, state, peer, bound name, queue lengths, pending
 * connections, shutdown state. /proc/net/unix has no peers; this has.
 *
 * ```
 * request  nlmsghdr (16) | unix_diag_req (24): family, protocol, pad, states, ino, show, cookie[2]
 * reply    nlmsghdr (16) | unix_diag_msg (16): family, type, state, pad, ino, cookie[2]
 *                        | rtattr (len u16, type u16, data, padded to 4) ...
 * ```
 *
 * @module
 */
import { close, Errno, lastErrno, libc, NR, tryRead, writeAll } from "../syscalls/mod.ts";

const AF_NETLINK = 16, NETLINK_SOCK_DIAG = 4, SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1, NLM_F_DUMP = 0x300, NLMSG_DONE = 3, NLMSG_ERROR = 2;
const UDIAG_SHOW = { NAME: 1, VFS: 2, PEER: 4, ICONS: 8, RQLEN: 0x10 } as const;
const UNIX_DIAG = { NAME: 0, VFS: 1, PEER: 2, ICONS: 3, RQLEN: 4, SHUTDOWN: 6 } as const;

/** One unix socket as sock_diag reports it. */
export interface UnixSocketInfo {
  ino: number;
  /** SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5. */
  type: number;
  /** TCP-like state: 1 established, 7 close (unconnected), 10 listen. */
  state: number;
  /** Peer's inode, 0 when none. */
  peer: number;
  /** Bound name (abstract names start with a NUL byte); empty when unbound. */
  name: Uint8Array;
  /** Inode of the file a path-bound socket is at, 0 otherwise. */
  vfsIno: number;
  /** Bytes (or, for a listener, connections) waiting in the receive queue. */
  rqueue: number;
  wqueue: number;
  /** Inodes of connections waiting to be accepted (listeners). */
  icons: number[];
  /** Shutdown bits: 1 receive, 2 send. */
  shutdown: number;
}

function sys(nr: number, ...args: bigint[]): number {
  const a = [...args, 0n, 0n, 0n, 0n, 0n, 0n].slice(0, 6);
  return Number(libc.syscall(BigInt(nr), a[0], a[1], a[2], a[3], a[4], a[5]));
}

/** Every unix socket of this network namespace, by inode. */
export function unixSockets(): Map<number, UnixSocketInfo> {
  const fd = sys(
    NR.socket,
    BigInt(AF_NETLINK),
    BigInt(2 /* DGRAM */ | 0o2000000),
    BigInt(NETLINK_SOCK_DIAG),
  );
  if (fd < 0) throw new Errno("socket(NETLINK_SOCK_DIAG)", lastErrno());
  try {
    const req = new Uint8Array(40);
    const v = new DataView(req.buffer);
    v.setUint32(0, 40, true);
    v.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
    v.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
    v.setUint32(8, 1, true);
    req[16] = 1; // AF_UNIX
    v.setUint32(20, 0xffffffff, true); // every state
    v.setUint32(
      28,
      UDIAG_SHOW.NAME | UDIAG_SHOW.VFS | UDIAG_SHOW.PEER | UDIAG_SHOW.ICONS | UDIAG_SHOW.RQLEN,
      true,
    );
    writeAll(fd, req, "sock_diag request");
    const out = new Map<number, UnixSocketInfo>();
    const buf = new Uint8Array(64 << 10);
    for (;;) {
      const n = tryRead(fd, buf);
      if (n < 0) throw new Errno("recv(NETLINK_SOCK_DIAG)", -n);
      for (let off = 0; off + 16 <= n;) {
        const h = new DataView(buf.buffer, off);
        const len = h.getUint32(0, true), type = h.getUint16(4, true);
        if (type === NLMSG_DONE) return out;
        if (type === NLMSG_ERROR) throw new Errno("sock_diag", -h.getInt32(16, true));
        parseMessage(buf.subarray(off + 16, off + len), out);
        off += (len + 3) & ~3;
      }
    }
  } finally {
    close(fd);
  }
}

function parseMessage(m: Uint8Array, out: Map<number, UnixSocketInfo>): void {
  const v = new DataView(m.buffer, m.byteOffset, m.byteLength);
  const info: UnixSocketInfo = {
    ino: v.getUint32(4, true),
    type: m[1],
    state: m[2],
    peer: 0,
    name: new Uint8Array(),
    vfsIno: 0,
    rqueue: 0,
    wqueue: 0,
    icons: [],
    shutdown: 0,
  };
  for (let off = 16; off + 4 <= m.length;) {
    const len = v.getUint16(off, true), type = v.getUint16(off + 2, true);
    if (len < 4) break;
    const data = m.subarray(off + 4, off + len);
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    switch (type) {
      case UNIX_DIAG.NAME:
        info.name = data.slice();
        break;
      case UNIX_DIAG.VFS:
        info.vfsIno = dv.getUint32(0, true);
        break;
      case UNIX_DIAG.PEER:
        info.peer = dv.getUint32(0, true);
        break;
      case UNIX_DIAG.ICONS:
        for (let i = 0; i + 4 <= data.length; i += 4) info.icons.push(dv.getUint32(i, true));
        break;
      case UNIX_DIAG.RQLEN:
        info.rqueue = dv.getUint32(0, true);
        info.wqueue = dv.getUint32(4, true);
        break;
      case UNIX_DIAG.SHUTDOWN:
        info.shutdown = data[0];
        break;
    }
    off += (len + 3) & ~3;
  }
  out.set(info.ino, info);
}
