/**
 * What sock_diag (INET_DIAG) knows of inet sockets that getsockopt() does not tell: their
 * shutdown state (a UDP socket shut down for writing looks like any other otherwise).
 *
 * ```
 * request  inet_diag_req_v2 (56): family, protocol, ext, pad, states, inet_diag_sockid (48)
 * reply    inet_diag_msg (72): family, state, timer, retrans, sockid (48), expires, rqueue,
 *          wqueue, uid, inode | rtattrs: INET_DIAG_SHUTDOWN (8) u8 ...
 * ```
 *
 * @module
 */
import { diagAttributes, sockDiagDump } from "./sock_diag.ts";

const INET_DIAG_SHUTDOWN = 8;

/** Shutdown bits (1 receive, 2 send) of every TCP and UDP socket of this namespace, by inode. */
export function inetShutdowns(): Map<number, number> {
  const out = new Map<number, number>();
  for (const family of [2, 10]) {
    for (const protocol of [6, 17]) {
      const req = new Uint8Array(56);
      req[0] = family;
      req[1] = protocol;
      new DataView(req.buffer).setUint32(4, 0xffffffff, true); // every state
      sockDiagDump(req, (m) => {
        const ino = new DataView(m.buffer, m.byteOffset, m.byteLength).getUint32(68, true);
        const shutdown = diagAttributes(m, 72).get(INET_DIAG_SHUTDOWN);
        if (shutdown?.length) out.set(ino, shutdown[0]);
      });
    }
  }
  return out;
}
