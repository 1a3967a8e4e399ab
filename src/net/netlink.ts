/**
 * Netlink sockets: `collectNetlinkSocket` reads one (protocol, port id, groups, destination,
 * options), `makeNetlinkSocket` makes it again. A socket with messages waiting is refused: the
 * kernel's replies and notifications cannot be queued again.
 *
 * @module
 */
import { netSocket } from "./ns_sockets.ts";
import { close, withTaskFd } from "../syscalls/mod.ts";
import {
  bindRaw,
  connectRaw,
  getsockopt,
  peekMessage,
  setsockopt,
  SO,
  SOCK_CLOEXEC,
  sockName,
} from "../syscalls/socket.ts";
import { applyCommonOptions, type CommonSocketOptions, readCommonOptions } from "./sk_opts.ts";

/** AF_NETLINK. */
export const AF_NETLINK = 16;
const SOL_NETLINK = 270, NETLINK_ADD_MEMBERSHIP = 1, NETLINK_LIST_MEMBERSHIPS = 9;
const SOCK_RAW = 3;

/** A netlink socket as the images keep it. */
export interface NetlinkSocketState {
  protocol: number;
  /** Its port id (0: not bound yet). */
  portid: number;
  /** The multicast groups it is a member of (1-based numbers). */
  groups: number[];
  dstPortid: number;
  dstGroup: number;
  opts: CommonSocketOptions;
}

/** A socket that cannot be dumped; the message says why. */
export class NetlinkSocketError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NetlinkSocketError";
  }
}

/** sockaddr_nl: family, pad, port id, groups. */
function nlAddr(portid: number, groups: number): Uint8Array {
  const a = new Uint8Array(12);
  const v = new DataView(a.buffer);
  v.setUint16(0, AF_NETLINK, true);
  v.setUint32(4, portid, true);
  v.setUint32(8, groups, true);
  return a;
}

function parseNl(raw: Uint8Array | null): { portid: number; groups: number } {
  if (!raw || raw.length < 12) return { portid: 0, groups: 0 };
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return { portid: v.getUint32(4, true), groups: v.getUint32(8, true) };
}

/** Reads netlink socket `fd` of frozen task `pid`; null when it is not a netlink socket. */
export function collectNetlinkSocket(
  pid: number,
  fd: number,
  what: string,
): NetlinkSocketState | null {
  return withTaskFd(pid, fd, (copy) => {
    const int = (name: number, level = 1) => {
      const b = new Int32Array(1);
      getsockopt(copy, name, new Uint8Array(b.buffer), level);
      return b[0];
    };
    if (int(SO.DOMAIN) !== AF_NETLINK) return null;
    if (int(SO.TYPE) !== SOCK_RAW) {
      throw new NetlinkSocketError(
        `Cannot dump ${what}: only SOCK_RAW netlink sockets are supported`,
      );
    }
    // A peek (netlink sockets answer no FIONREAD): anything waiting to be read?
    if (peekMessage(copy, 1, `the queue of ${what}`) !== null) {
      throw new NetlinkSocketError(
        `Cannot dump ${what}: netlink messages are waiting in it, which cannot be queued again`,
      );
    }
    const me = parseNl(sockName(copy));
    const peer = parseNl(sockName(copy, true));
    // Every group it is a member of (bind's bitmask holds the first 32 only).
    const list = new Uint32Array(32);
    getsockopt(copy, NETLINK_LIST_MEMBERSHIPS, new Uint8Array(list.buffer), SOL_NETLINK);
    const groups: number[] = [];
    for (let w = 0; w < list.length; w++) {
      for (let b = 0; b < 32; b++) if (list[w] & (1 << b)) groups.push(w * 32 + b + 1);
    }
    return {
      protocol: int(SO.PROTOCOL),
      portid: me.portid,
      groups,
      dstPortid: peer.portid,
      dstGroup: peer.groups,
      opts: readCommonOptions(copy, AF_NETLINK),
    };
  });
}

/** Makes a netlink socket like `s` (close-on-exec): options, bind to its port id, groups, connect. */
export function makeNetlinkSocket(s: NetlinkSocketState, what: string): number {
  const fd = netSocket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, s.protocol);
  try {
    applyCommonOptions(fd, s.opts);
    if (s.portid) bindRaw(fd, nlAddr(s.portid, 0), what);
    for (const g of s.groups) {
      setsockopt(
        fd,
        NETLINK_ADD_MEMBERSHIP,
        new Uint8Array(new Uint32Array([g]).buffer),
        SOL_NETLINK,
      );
    }
    if (s.dstPortid || s.dstGroup) connectRaw(fd, nlAddr(s.dstPortid, s.dstGroup), what);
    return fd;
  } catch (e) {
    close(fd);
    throw e;
  }
}
