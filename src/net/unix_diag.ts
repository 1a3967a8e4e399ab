/**
 * What the kernel knows about every unix socket of this network namespace, from sock_diag
 * (NETLINK_SOCK_DIAG, UNIX_DIAG): type, state, peer, bound name, queue lengths, pending
 * connections, shutdown state. /proc/net/unix has no peers; this has.
 *
 * ```
 * request  unix_diag_req (24): family, protocol, pad, states, ino, show, cookie[2]
 * reply    unix_diag_msg (16): family, type, state, pad, ino, cookie[2] | rtattrs (sock_diag.ts)
 * ```
 *
 * @module
 */
import { diagAttributes, sockDiagDump } from "./sock_diag.ts";
import { userDev } from "../syscalls/process.ts";

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
  /** Device (as stat gives it) of the file system that file is on, 0 otherwise. */
  vfsDev: number;
  /** Bytes (or, for a listener, connections) waiting in the receive queue. */
  rqueue: number;
  wqueue: number;
  /** Inodes of connections waiting to be accepted (listeners). */
  icons: number[];
  /** Shutdown bits: 1 receive, 2 send. */
  shutdown: number;
}

/** Every unix socket of this network namespace, by inode. */
export function unixSockets(): Map<number, UnixSocketInfo> {
  // unix_diag_req: family, protocol, pad, states, ino, show, cookie[2]
  const req = new Uint8Array(24);
  const v = new DataView(req.buffer);
  req[0] = 1; // AF_UNIX
  v.setUint32(4, 0xffffffff, true); // every state
  v.setUint32(
    12,
    UDIAG_SHOW.NAME | UDIAG_SHOW.VFS | UDIAG_SHOW.PEER | UDIAG_SHOW.ICONS | UDIAG_SHOW.RQLEN,
    true,
  );
  const out = new Map<number, UnixSocketInfo>();
  sockDiagDump(req, (m) => parseMessage(m, out));
  return out;
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
    vfsDev: 0,
    rqueue: 0,
    wqueue: 0,
    icons: [],
    shutdown: 0,
  };
  for (const [type, data] of diagAttributes(m, 16)) {
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    switch (type) {
      case UNIX_DIAG.NAME:
        info.name = data.slice();
        break;
      case UNIX_DIAG.VFS:
        info.vfsIno = dv.getUint32(0, true);
        // The kernel's dev_t, as stat gives it.
        info.vfsDev = userDev(dv.getUint32(4, true));
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
  }
  out.set(info.ino, info);
}
