/**
 * The id one network namespace gives another (RTM_GETNSID), as a veth's `link-netnsid` names
 * the namespace of its peer. Asked in the namespace sockets are made in now (ns_sockets.ts).
 *
 * ```
 * request  nlmsghdr (16): len, RTM_GETNSID, NLM_F_REQUEST, seq, pid
 *          | rtgenmsg (family, padded to 4) | rtattr NETNSA_FD (u32: a descriptor of criu's)
 * reply    nlmsghdr (16): RTM_NEWNSID | rtgenmsg (4) | rtattr NETNSA_NSID (s32; -1: none)
 * ```
 *
 * @module
 */
import { netSocket } from "./ns_sockets.ts";
import { diagAttributes } from "./sock_diag.ts";
import { close, Errno, O, open, tryRead, writeAll } from "../syscalls/mod.ts";

const AF_NETLINK = 16, NETLINK_ROUTE = 0, SOCK_RAW = 3, SOCK_CLOEXEC = 0o2000000;
const RTM_NEWNSID = 88, RTM_GETNSID = 90, NLM_F_REQUEST = 1, NLMSG_ERROR = 2;
const NETNSA_NSID = 1, NETNSA_FD = 3;

/**
 * The id the namespace sockets are made in now gives the network namespace of task `pid`;
 * undefined when it gives none.
 */
export function nsidOf(pid: number): number | undefined {
  const target = open(`/proc/${pid}/ns/net`, O.RDONLY | O.CLOEXEC);
  const fd = netSocket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  try {
    const req = new Uint8Array(16 + 4 + 8);
    const v = new DataView(req.buffer);
    v.setUint32(0, req.length, true);
    v.setUint16(4, RTM_GETNSID, true);
    v.setUint16(6, NLM_F_REQUEST, true);
    v.setUint32(8, 1, true);
    v.setUint16(20, 8, true);
    v.setUint16(22, NETNSA_FD, true);
    v.setUint32(24, target, true);
    writeAll(fd, req, "RTM_GETNSID");
    const buf = new Uint8Array(4096);
    const n = tryRead(fd, buf);
    if (n < 0) throw new Errno("recv(RTM_GETNSID)", -n);
    const h = new DataView(buf.buffer);
    const type = h.getUint16(4, true);
    if (type === NLMSG_ERROR) {
      const err = -h.getInt32(16, true);
      if (err) throw new Errno("RTM_GETNSID", err);
      return undefined;
    }
    if (type !== RTM_NEWNSID) return undefined;
    const id = diagAttributes(buf.subarray(16, h.getUint32(0, true)), 4).get(NETNSA_NSID);
    if (!id || id.length < 4) return undefined;
    const nsid = new DataView(id.buffer, id.byteOffset).getInt32(0, true);
    return nsid < 0 ? undefined : nsid;
  } finally {
    close(fd);
    close(target);
  }
}
