/**
 * Packet sockets (AF_PACKET: SOCK_RAW, SOCK_DGRAM and the old SOCK_PACKET): `collectPacketSocket`
 * reads one (protocol, interface, version, reserve, timestamps, copy threshold, aux data, origin
 * device, vnet header, loss, multicast memberships, fanout group, options) through sock_diag and
 * getsockopt, `makePacketSocket` makes it again. Settings the images cannot carry are refused.
 * Packets waiting in it (its queue, or its rings' frames) are dropped, with a warning, as a
 * network drops them (the socket misses those that arrive while the tree is stopped anyway);
 * rings come back empty. A ring mapped into the task is carried only untouched (`ringUntouched`):
 * the kernel's place in a used ring, which the task's follows, cannot be set again.
 *
 * ```
 * packet_diag_req   family u8, protocol u8, pad u16, ino u32, show u32, cookie u32[2]
 * packet_diag_msg   family u8, type u8, num u16 (host order), ino u32, cookie u32[2]
 * PACKET_DIAG_INFO  index, version, reserve, copy_thresh, tstamp, flags (u32 each)
 * PACKET_DIAG_MCLIST  { index u32, count u32, type u16, alen u16, addr u8[32] }...
 * ```
 *
 * @module
 */
import { netSocket } from "./ns_sockets.ts";
import { close, withSharedMapping, withTaskFd } from "../syscalls/mod.ts";
import { bindRaw, getsockopt, setsockopt, SO, SOCK_CLOEXEC } from "../syscalls/socket.ts";
import { applyCommonOptions, type CommonSocketOptions, readCommonOptions } from "./sk_opts.ts";
import { diagAttributes, sockDiagDump } from "./sock_diag.ts";

/** AF_PACKET. */
export const AF_PACKET = 17;
const SOCK_PACKET = 10;
const SOL_PACKET = 263;
const PACKET = {
  ADD_MEMBERSHIP: 1,
  RX_RING: 5,
  TX_RING: 13,
  COPY_THRESH: 7,
  AUXDATA: 8,
  ORIGDEV: 9,
  VERSION: 10,
  RESERVE: 12,
  LOSS: 14,
  VNET_HDR: 15,
  TIMESTAMP: 17,
  FANOUT: 18,
  TX_HAS_OFF: 19,
  QDISC_BYPASS: 20,
  IGNORE_OUTGOING: 23,
} as const;
const SHOW = { INFO: 1, MCLIST: 2, RING_CFG: 4, FANOUT: 8, MEMINFO: 0x10 };
const DIAG = { INFO: 0, MCLIST: 1, RX_RING: 2, TX_RING: 3, FANOUT: 4, MEMINFO: 6 };
const PDI = { AUXDATA: 2, ORIGDEV: 4, VNETHDR: 8, LOSS: 0x10 };
const FANOUT_CBPF = 6, FANOUT_EBPF = 7;

/** A multicast (or promiscuous, all-multicast, unicast) membership. */
export interface PacketMembership {
  ifindex: number;
  type: number;
  addr: Uint8Array;
}

/** A packet socket as the images keep it. */
export interface PacketSocketState {
  type: number;
  /** The protocol, in network byte order (as socket(2) takes it). */
  protocol: number;
  ifindex: number;
  version: number;
  reserve: number;
  timestamp: number;
  copyThresh: number;
  auxData: boolean;
  origDev: boolean;
  vnetHdr: boolean;
  loss: boolean;
  /** Each membership as many times as it was added. */
  mclist: PacketMembership[];
  /** PACKET_RX_RING and PACKET_TX_RING as tpacket_req3 (7 words), when set. */
  rxRing?: number[];
  txRing?: number[];
  /** PACKET_FANOUT's value (group id | type << 16 | flags << 24), if in a group. */
  fanout?: number;
  opts: CommonSocketOptions;
  /** Bytes of packets waiting to be read, dropped. */
  queued: number;
}

/** A socket that cannot be dumped; the message says why. */
export class PacketSocketError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PacketSocketError";
  }
}

function htons(v: number): number {
  return ((v & 0xff) << 8) | ((v >> 8) & 0xff);
}

/** Reads packet socket `fd` (inode `ino`) of frozen task `pid`; null when it is none. */
export function collectPacketSocket(
  pid: number,
  fd: number,
  ino: number,
  what: string,
): PacketSocketState | null {
  return withTaskFd(pid, fd, (copy) => {
    const int = (name: number, level = 1) => {
      const b = new Int32Array(1);
      getsockopt(copy, name, new Uint8Array(b.buffer), level);
      return b[0];
    };
    if (int(SO.DOMAIN) !== AF_PACKET) return null;
    const type = int(SO.TYPE);
    const refuse = (why: string) => new PacketSocketError(`Cannot dump ${what}: ${why}`);
    for (
      const [name, label] of [
        [PACKET.QDISC_BYPASS, "PACKET_QDISC_BYPASS"],
        [PACKET.IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING"],
        [PACKET.TX_HAS_OFF, "PACKET_TX_HAS_OFF"],
      ] as const
    ) {
      if (type !== SOCK_PACKET && int(name, SOL_PACKET)) {
        throw refuse(`${label} is set, which the images cannot carry`);
      }
    }
    const diag = packetDiag(ino);
    if (!diag) throw refuse("sock_diag does not know it");
    const attrs = diag.attrs;
    const ring = (a: number) => {
      const r = attrs.get(a);
      if (!r || r.length < 28) return undefined;
      return [...new Uint32Array(r.slice(0, 28).buffer)];
    };
    const info = attrs.get(DIAG.INFO);
    if (!info || info.length < 24) throw refuse("sock_diag gives no PACKET_DIAG_INFO");
    const iv = new DataView(info.buffer, info.byteOffset, info.byteLength);
    const u32 = (i: number) => iv.getUint32(i * 4, true);
    const flags = u32(5);
    const mclist: PacketMembership[] = [];
    const mc = attrs.get(DIAG.MCLIST);
    if (mc) {
      const mv = new DataView(mc.buffer, mc.byteOffset, mc.byteLength);
      for (let off = 0; off + 44 <= mc.length; off += 44) {
        const alen = Math.min(mv.getUint16(off + 10, true), 32);
        const m = {
          ifindex: mv.getUint32(off, true),
          type: mv.getUint16(off + 8, true),
          addr: mc.slice(off + 12, off + 12 + alen),
        };
        for (let n = mv.getUint32(off + 4, true); n > 0; n--) mclist.push(m);
      }
    }
    // getsockopt says the group's flags too (rollover, defrag), which sock_diag leaves out.
    let fanout: number | undefined;
    if (attrs.has(DIAG.FANOUT)) {
      fanout = int(PACKET.FANOUT, SOL_PACKET) >>> 0;
      const kind = (fanout >>> 16) & 0xff;
      if (kind === FANOUT_CBPF || kind === FANOUT_EBPF) {
        throw refuse("its fanout group steers by a BPF program, which is not supported yet");
      }
    }
    const mem = attrs.get(DIAG.MEMINFO);
    const queued = mem && mem.length >= 4
      ? new DataView(mem.buffer, mem.byteOffset).getUint32(0, true)
      : 0;
    return {
      type,
      protocol: htons(diag.num),
      ifindex: u32(0),
      version: u32(1),
      reserve: u32(2),
      copyThresh: u32(3),
      timestamp: u32(4),
      auxData: (flags & PDI.AUXDATA) !== 0,
      origDev: (flags & PDI.ORIGDEV) !== 0,
      vnetHdr: (flags & PDI.VNETHDR) !== 0,
      loss: (flags & PDI.LOSS) !== 0,
      mclist,
      rxRing: ring(DIAG.RX_RING),
      txRing: ring(DIAG.TX_RING),
      fanout,
      opts: readCommonOptions(copy, AF_PACKET),
      queued,
    };
  });
}

/** sock_diag's view of packet socket `ino` (this network namespace). */
function packetDiag(ino: number): { num: number; attrs: Map<number, Uint8Array> } | undefined {
  const req = new Uint8Array(20);
  const v = new DataView(req.buffer);
  req[0] = AF_PACKET;
  v.setUint32(4, ino, true);
  v.setUint32(8, SHOW.INFO | SHOW.MCLIST | SHOW.RING_CFG | SHOW.FANOUT | SHOW.MEMINFO, true);
  let found: { num: number; attrs: Map<number, Uint8Array> } | undefined;
  sockDiagDump(req, (m) => {
    const mv = new DataView(m.buffer, m.byteOffset, m.byteLength);
    if (mv.getUint32(4, true) !== ino) return;
    found = { num: mv.getUint16(2, true), attrs: diagAttributes(m, 16) };
  });
  return found;
}

/** The name of interface `ifindex` (SOCK_PACKET binds by name). */
function ifName(ifindex: number, what: string): string {
  for (const e of Deno.readDirSync("/sys/class/net")) {
    try {
      if (Number(Deno.readTextFileSync(`/sys/class/net/${e.name}/ifindex`)) === ifindex) {
        return e.name;
      }
    } catch {
      // gone meanwhile
    }
  }
  throw new PacketSocketError(`Cannot restore ${what}: no interface has index ${ifindex}`);
}

/** tpacket_req3: block size, block count, frame size, frame count, retire timeout, private size, features. */
function ring3(words: number[]): Uint8Array {
  return new Uint8Array(new Uint32Array(words.slice(0, 7)).buffer);
}

/** Makes a packet socket like `s` (close-on-exec). */
export function makePacketSocket(s: PacketSocketState, what: string): number {
  const fd = netSocket(AF_PACKET, s.type | SOCK_CLOEXEC, s.protocol);
  try {
    const i32 = (v: number) => new Uint8Array(new Int32Array([v]).buffer);
    if (s.type === SOCK_PACKET) {
      if (s.ifindex > 0) {
        const addr = new Uint8Array(16);
        addr[0] = AF_PACKET;
        addr.set(new TextEncoder().encode(ifName(s.ifindex, what)).subarray(0, 13), 2);
        bindRaw(fd, addr, what);
      }
    } else {
      // sockaddr_ll: family, protocol (0: keep the socket's), ifindex.
      const addr = new Uint8Array(20);
      const v = new DataView(addr.buffer);
      v.setUint16(0, AF_PACKET, true);
      v.setInt32(4, s.ifindex, true);
      bindRaw(fd, addr, what);
      setsockopt(fd, PACKET.VERSION, i32(s.version), SOL_PACKET);
      setsockopt(fd, PACKET.RESERVE, i32(s.reserve), SOL_PACKET);
      setsockopt(fd, PACKET.TIMESTAMP, i32(s.timestamp), SOL_PACKET);
      setsockopt(fd, PACKET.COPY_THRESH, i32(s.copyThresh), SOL_PACKET);
      if (s.auxData) setsockopt(fd, PACKET.AUXDATA, i32(1), SOL_PACKET);
      if (s.origDev) setsockopt(fd, PACKET.ORIGDEV, i32(1), SOL_PACKET);
      if (s.vnetHdr) setsockopt(fd, PACKET.VNET_HDR, i32(1), SOL_PACKET);
      if (s.loss) setsockopt(fd, PACKET.LOSS, i32(1), SOL_PACKET);
      for (const m of s.mclist) {
        // packet_mreq_max: ifindex i32, type u16, alen u16, address u8[32].
        const mreq = new Uint8Array(40);
        const mv = new DataView(mreq.buffer);
        mv.setInt32(0, m.ifindex, true);
        mv.setUint16(4, m.type, true);
        mv.setUint16(6, m.addr.length, true);
        mreq.set(m.addr, 8);
        setsockopt(fd, PACKET.ADD_MEMBERSHIP, mreq, SOL_PACKET);
      }
      if (s.rxRing) setsockopt(fd, PACKET.RX_RING, ring3(s.rxRing), SOL_PACKET);
      if (s.txRing) setsockopt(fd, PACKET.TX_RING, ring3(s.txRing), SOL_PACKET);
      if (s.fanout !== undefined) setsockopt(fd, PACKET.FANOUT, i32(s.fanout), SOL_PACKET);
    }
    applyCommonOptions(fd, s.opts);
    return fd;
  } catch (e) {
    close(fd);
    throw e;
  }
}

/** TPACKET_V3 (block-based rings). */
const TPACKET_V3 = 2;

/**
 * Why the rings of packet socket `fd` of task `pid` cannot come back as the task sees them
 * through a mapping, or undefined when they can: they are as the kernel made them, no frame
 * ever filled or queued (all zero, read through a mapping of our own), so a fresh ring (the
 * kernel starting again at its first frame) is the same ring. A TPACKET_V3 ring is refused (the
 * kernel stamps its first block when it makes it).
 */
export function ringUntouched(pid: number, fd: number, s: PacketSocketState): string | undefined {
  const size = (r?: number[]) => (r ? BigInt(r[0]) * BigInt(r[1]) : 0n);
  const total = size(s.rxRing) + size(s.txRing);
  if (total === 0n) return "it has no ring to map";
  if (s.version === TPACKET_V3) return "its TPACKET_V3 ring is mapped, which is not supported";
  const used = withTaskFd(
    pid,
    fd,
    (copy) =>
      withSharedMapping(copy, total, `the rings of fd ${fd} of task ${pid}`, (bytes) => {
        const words = new BigUint64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
        return words.some((w) => w !== 0n);
      }),
  );
  return used
    ? "its ring was used (the kernel's place in it cannot be set again), which is not supported"
    : undefined;
}
