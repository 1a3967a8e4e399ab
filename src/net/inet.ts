/**
 * IPv4 and IPv6 sockets: `collectInetSocket` reads one through a duplicate of the task's
 * descriptor; `makeInetSocket` builds it again in the restorer.
 *
 * Supported: TCP sockets that are listening (connections waiting to be accepted are refused,
 * or dropped with `--skip-in-flight`), bound or not yet bound; established and half-closed TCP
 * connections with `--tcp-established` (net/tcp_repair.ts; refused by name without it, or
 * recorded to come back closed with `--tcp-close`); UDP sockets, bound or connected; raw
 * sockets of any protocol, bound or connected, with their header-include, no-fragment and ICMP
 * filter settings (packets waiting in them are dropped, as for UDP).
 *
 * @module
 */
import { netSocket } from "./ns_sockets.ts";
import {
  AF_INET,
  AF_INET6,
  bindRaw,
  connectRaw,
  getsockopt,
  inetSockaddr,
  IP_OPT,
  IPV6_V6ONLY,
  listen,
  parseInetAddr,
  peekMessage,
  peerName,
  setsockopt,
  shutdownQuiet,
  SO,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_RAW,
  SOCK_STREAM,
  sockName,
  SOL,
  TCP_OPT,
  tcpInfo,
  UDP_CORK,
} from "../syscalls/socket.ts";
import { close, Errno, inputQueued, pollNow, POLLRDHUP, withTaskFd } from "../syscalls/mod.ts";
import { type Connection, endpointText } from "./addr.ts";
import { applyCommonOptions, type CommonSocketOptions, readCommonOptions } from "./sk_opts.ts";
import { stateName, TCP_STATE } from "./tcp_state.ts";
import type { RepairedConnections } from "./tcp_conns.ts";
import {
  closeAfterConnection,
  REPAIRABLE_STATES,
  repairOff,
  repairOn,
  restoreTcpStream,
  type TcpStream,
} from "./tcp_repair.ts";

const EADDRINUSE = 98;

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_UDPLITE = 136;
const IPPROTO_ICMP = 1;
const IPPROTO_ICMPV6 = 58;

/** Datagram protocols kept as UDP is: UDP, UDP-Lite, and ping sockets (ICMP, ICMPv6). */
const DATAGRAM_PROTOS = new Set([IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_ICMP, IPPROTO_ICMPV6]);

/** Whether socket state `s` is a datagram socket (UDP-like). */
function isDatagram(s: { type: number; proto: number }): boolean {
  return s.type === SOCK_DGRAM && DATAGRAM_PROTOS.has(s.proto);
}

/** What a dump records of one inet socket. */
export interface InetSocketState {
  family: number;
  type: number;
  proto: number;
  state: number;
  srcPort: number;
  dstPort: number;
  srcAddr: number[];
  dstAddr: number[];
  backlog: number;
  v6only: boolean;
  /** An established or half-closed TCP connection read in repair mode. */
  stream?: TcpStream;
  /** TCP listener: connections waiting to be accepted, dropped (`--skip-in-flight`). */
  inFlight?: number;
  /** UDP: datagrams were waiting to be read (they are not carried, as CRIU does not). */
  queued?: boolean;
  /** Generic socket options and TCP keepalive options. */
  opts: CommonSocketOptions & {
    keepcnt: number;
    keepidle: number;
    keepintvl: number;
  };
  /** IP-level options (IPv6: freebind and pktinfo), and a raw socket's. */
  ip: { freebind: boolean; pktinfo: boolean; tos: number; ttl: number; raw?: RawOptions };
  /** TCP sockets: TCP_CORK and TCP_NODELAY. */
  tcp?: { cork: boolean; nodelay: boolean };
  /** Shutdown bits (1 receive, 2 send), as sock_diag reports them. */
  shutdown: number;
}

/** A raw socket's own options. */
export interface RawOptions {
  hdrincl: boolean;
  nodefrag: boolean;
  /** ICMP_FILTER (1 word) or ICMPV6_FILTER (8 words), for a raw ICMP socket. */
  icmpFilter: number[];
}

/** What a dump does with TCP connections (`--tcp-established`, `--tcp-close`). */
export interface TcpDumpPolicy {
  /** Checkpoint them in repair mode, held here. */
  repair?: RepairedConnections;
  /** Record them without their stream, to be restored closed. */
  close?: boolean;
  /** Drop connections waiting in a listener's accept queue instead of refusing. */
  skipInFlight?: boolean;
  /** Their network namespace is locked whole (a nested one's): none gets a lock of its own. */
  lockedWhole?: boolean;
}

/** A socket that is not an inet socket we know, or one that cannot be dumped. */
export class InetSocketError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InetSocketError";
  }
}

function int(fd: number, name: number, level: number = SOL.SOCKET): number {
  const v = new Int32Array(1);
  getsockopt(fd, name, new Uint8Array(v.buffer), level);
  return v[0];
}

/**
 * The remote end /proc/PID/net/tcp{,6} (or raw{,6}) shows for the socket of inode `ino`, held
 * by task `pid`, and whether it is connected (a raw socket has no peer name to get).
 */
function procNetPeer(
  pid: number,
  family: number,
  ino: number,
  table_ = "tcp",
): { port: number; addr: number[]; connected?: boolean } {
  // The table of the task's network namespace (criu's own /proc/net is criu's).
  const table = Deno.readTextFileSync(
    `/proc/${pid}/net/${table_}${family === AF_INET6 ? "6" : ""}`,
  );
  for (const line of table.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (Number(f[9]) !== ino) continue;
    const [addr, port] = f[2].split(":");
    const words = addr.match(/.{8}/g)!.map((w) => parseInt(w, 16));
    return { port: parseInt(port, 16), addr: words, connected: f[3] === "01" };
  }
  // Not there: a socket of another network namespace than its holder's.
  throw new InetSocketError(
    `Cannot dump socket ${ino}: /proc/${pid}/net/${table_} does not show it (a socket of ` +
      `another network namespace than task ${pid}'s), and its peer is known only there`,
  );
}

/** The image's shutdown value for both directions (criu's SK_SHUTDOWN__BOTH). */
const SHUTDOWN_BOTH = 3;

/**
 * Reads inet socket `fd` of frozen task `pid`, or returns null when the socket is not an
 * IPv4/IPv6 socket. Throws InetSocketError for what cannot be dumped (the message names the
 * socket and, for a connection, both of its ends).
 */
export function collectInetSocket(
  pid: number,
  fd: number,
  ino: number,
  policy: TcpDumpPolicy = {},
  shutdown = 0,
): InetSocketState | null {
  return withTaskFd(pid, fd, (copy) => {
    const family = int(copy, SO.DOMAIN);
    if (family !== AF_INET && family !== AF_INET6) return null;
    const type = int(copy, SO.TYPE);
    const proto = int(copy, SO.PROTOCOL);
    const what = `fd ${fd} of task ${pid} (socket:[${ino}])`;
    const tcp = type === SOCK_STREAM && proto === IPPROTO_TCP;
    const raw = type === SOCK_RAW;
    const udp = isDatagram({ type, proto });
    if (!tcp && !udp && !raw) {
      throw new InetSocketError(
        `Cannot dump ${what}: only TCP, UDP, UDP-Lite, ping and raw inet sockets are ` +
          `supported (type ${type}, protocol ${proto})`,
      );
    }
    // Data held back by UDP_CORK sits in the socket's write queue: no way to put it back.
    if (
      udp && (proto === IPPROTO_UDP || proto === IPPROTO_UDPLITE) &&
      int(copy, UDP_CORK, SOL.UDP) !== 0
    ) {
      throw new InetSocketError(`Cannot dump ${what}: it is a corked UDP socket (UDP_CORK)`);
    }
    // IPv4 header options are in no image (criu's neither); a connection is given none again
    // when restored (tcp_repair.ts restoreTcpStream).
    if (family === AF_INET && getsockopt(copy, IP_OPT.OPTIONS, new Uint8Array(40), SOL.IP) > 0) {
      throw new InetSocketError(
        `Cannot dump ${what}: it sets IPv4 header options (IP_OPTIONS), which no image holds`,
      );
    }
    const src = parseInetAddr(sockName(copy)!);
    let peerRaw = sockName(copy, true);
    let dst = peerRaw ? parseInetAddr(peerRaw) : { family, port: 0, addr: src.addr.map(() => 0) };
    if (raw) {
      // A raw socket answers no getpeername(): its peer is in its holder's /proc/PID/net/raw.
      const peer = procNetPeer(pid, family, ino, "raw");
      if (peer.connected) {
        dst = { family, port: 0, addr: peer.addr };
        peerRaw = new Uint8Array(0);
      }
    }
    let state: number = peerRaw ? TCP_STATE.ESTABLISHED : TCP_STATE.CLOSE;
    let backlog = 0;
    let connection: Connection | undefined;
    let inFlight = 0;
    if (tcp) {
      const info = tcpInfo(copy);
      state = info.state;
      // A connection waiting for its SYN's answer has no peer name yet (ENOTCONN): /proc says.
      if (state === TCP_STATE.SYN_SENT && !peerRaw) {
        Object.assign(dst, procNetPeer(pid, family, ino));
      }
      const conn = `${endpointText(family, src.port, src.addr)} -> ` +
        endpointText(family, dst.port, dst.addr);
      if (state === TCP_STATE.LISTEN) {
        backlog = info.sacked;
        if (info.unacked > 0 && !policy.skipInFlight) {
          throw new InetSocketError(
            `Cannot dump ${what}: listening on ${endpointText(family, src.port, src.addr)} with ` +
              `${info.unacked} connection(s) waiting to be accepted; dump with ` +
              `--skip-in-flight to drop them`,
          );
        }
        inFlight = info.unacked;
      } else if (REPAIRABLE_STATES.has(state)) {
        if (policy.repair) {
          connection = {
            family,
            srcAddr: src.addr,
            srcPort: src.port,
            dstAddr: dst.addr,
            dstPort: dst.port,
          };
        } else if (!policy.close) {
          throw new InetSocketError(
            `Cannot dump ${what}: TCP connection ${conn} (${stateName(state)}); dump ` +
              `established connections with --tcp-established (or --tcp-close to restore ` +
              `them closed)`,
          );
        }
      } else if (state !== TCP_STATE.CLOSE) {
        throw new InetSocketError(
          `Cannot dump ${what}: TCP connection ${conn} is in state ${stateName(state)}, ` +
            `which cannot be dumped`,
        );
      } else {
        const p = pollNow(copy, POLLRDHUP);
        if (p.error) {
          // Its next call would fail with it (a reset, a refused connection): a socket made
          // again has none.
          throw new InetSocketError(
            `Cannot dump ${what}: closed TCP socket ${conn} has an error waiting to be read ` +
              `(a reset, or a refused connection), which a restore cannot set again`,
          );
        }
        if (p.rdhup) {
          // A closed connection (sock_diag lists no closed socket): its reads see the end of
          // the stream, not ENOTCONN. The kernel shut it both ways when it closed.
          const unread = inputQueued(copy, what);
          if (unread > 0) {
            throw new InetSocketError(
              `Cannot dump ${what}: closed TCP socket ${conn} holds ${unread} bytes unread, ` +
                `which a restore cannot queue again`,
            );
          }
          shutdown |= SHUTDOWN_BOTH;
          // It still names its peer (SO_PEERNAME, not getpeername()): as criu, kept.
          const closedPeer = peerName(copy, family);
          if (closedPeer) {
            dst = parseInetAddr(closedPeer);
            peerRaw = closedPeer;
          }
        }
      }
    }
    const found: InetSocketState = {
      family,
      type,
      proto,
      state,
      queued: (udp || raw) && peekMessage(copy, 1, `the queue of ${what}`) !== null,
      srcPort: src.port,
      dstPort: peerRaw || connection ? dst.port : 0,
      srcAddr: src.addr,
      dstAddr: dst.addr,
      backlog,
      inFlight,
      v6only: family === AF_INET6 && int(copy, IPV6_V6ONLY, SOL.IPV6) !== 0,
      ip: {
        ...readIpOptions(copy, family),
        raw: raw ? readRawOptions(copy, family, what) : undefined,
      },
      tcp: tcp
        ? {
          cork: int(copy, TCP_OPT.CORK, SOL.TCP) !== 0,
          nodelay: int(copy, TCP_OPT.NODELAY, SOL.TCP) !== 0,
        }
        : undefined,
      shutdown,
      opts: {
        ...readCommonOptions(copy, family),
        keepcnt: tcp ? int(copy, TCP_OPT.KEEPCNT, SOL.TCP) : 0,
        keepidle: tcp ? int(copy, TCP_OPT.KEEPIDLE, SOL.TCP) : 0,
        keepintvl: tcp ? int(copy, TCP_OPT.KEEPINTVL, SOL.TCP) : 0,
      },
    };
    // A closed connection has no stream left; criu's images have one all the same (empty),
    // which criu's restore reads for a socket with a peer.
    if (isClosedConnection(found)) found.stream = closedStream();
    // Its stream is read once the connections of the whole process are locked.
    if (connection) {
      policy.repair!.add(copy, ino, connection, what, (stream) => (found.stream = stream), {
        pid,
        fd,
        reuseaddr: found.opts.reuseaddr,
      }, policy.lockedWhole);
    }
    return found;
  });
}

/** A raw socket's own options; a checksum offset set by hand is refused (images lack it). */
function readRawOptions(fd: number, family: number, what: string): RawOptions {
  const proto = int(fd, SO.PROTOCOL);
  const words = (level: number, name: number, n: number) => {
    const v = new Uint32Array(n);
    getsockopt(fd, name, new Uint8Array(v.buffer), level);
    return [...v];
  };
  if (family === AF_INET6) {
    // The kernel's own offset for the protocol (ICMPv6, mobility headers) is what a new
    // socket gets; another one cannot be carried.
    const fresh = netSocket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, proto);
    let usual: number;
    try {
      usual = int(fresh, IP_OPT.IPV6_CHECKSUM, SOL.IPV6);
    } finally {
      close(fresh);
    }
    if (int(fd, IP_OPT.IPV6_CHECKSUM, SOL.IPV6) !== usual) {
      throw new InetSocketError(
        `Cannot dump ${what}: its IPV6_CHECKSUM offset is set, which the images cannot carry`,
      );
    }
    return {
      hdrincl: int(fd, IP_OPT.IPV6_HDRINCL, SOL.IPV6) !== 0,
      nodefrag: false,
      icmpFilter: proto === IPPROTO_ICMPV6 ? words(SOL.ICMPV6, IP_OPT.ICMPV6_FILTER, 8) : [],
    };
  }
  return {
    hdrincl: int(fd, IP_OPT.HDRINCL, SOL.IP) !== 0,
    nodefrag: int(fd, IP_OPT.NODEFRAG, SOL.IP) !== 0,
    icmpFilter: proto === IPPROTO_ICMP ? words(SOL.RAW, IP_OPT.ICMP_FILTER, 1) : [],
  };
}

/** IP-level options of socket `fd` (IPv6 sockets have freebind and pktinfo of their own). */
function readIpOptions(fd: number, family: number): InetSocketState["ip"] {
  if (family === AF_INET6) {
    return {
      freebind: int(fd, IP_OPT.IPV6_FREEBIND, SOL.IPV6) !== 0,
      pktinfo: int(fd, IP_OPT.IPV6_RECVPKTINFO, SOL.IPV6) !== 0,
      tos: 0,
      ttl: 0,
    };
  }
  return {
    freebind: int(fd, IP_OPT.FREEBIND, SOL.IP) !== 0,
    pktinfo: int(fd, IP_OPT.PKTINFO, SOL.IP) !== 0,
    tos: int(fd, IP_OPT.TOS, SOL.IP),
    ttl: int(fd, IP_OPT.TTL, SOL.IP),
  };
}

/** Gives socket `fd` the IP-level options of `s`: before bind, freebind matters there. */
function applyIpOptions(fd: number, s: InetSocketState): void {
  const v6 = s.family === AF_INET6;
  const raw = s.ip.raw;
  if (raw) {
    if (raw.hdrincl) {
      setInt(fd, v6 ? IP_OPT.IPV6_HDRINCL : IP_OPT.HDRINCL, 1, v6 ? SOL.IPV6 : SOL.IP);
    }
    if (raw.nodefrag && !v6) setInt(fd, IP_OPT.NODEFRAG, 1, SOL.IP);
    if (raw.icmpFilter.length) {
      setsockopt(
        fd,
        v6 ? IP_OPT.ICMPV6_FILTER : IP_OPT.ICMP_FILTER,
        new Uint8Array(new Uint32Array(raw.icmpFilter).buffer),
        v6 ? SOL.ICMPV6 : SOL.RAW,
      );
    }
  }
  if (s.ip.freebind) {
    setInt(fd, v6 ? IP_OPT.IPV6_FREEBIND : IP_OPT.FREEBIND, 1, v6 ? SOL.IPV6 : SOL.IP);
  }
  if (s.ip.pktinfo) {
    setInt(fd, v6 ? IP_OPT.IPV6_RECVPKTINFO : IP_OPT.PKTINFO, 1, v6 ? SOL.IPV6 : SOL.IP);
  }
  if (!v6 && s.ip.tos) setInt(fd, IP_OPT.TOS, s.ip.tos, SOL.IP);
  if (!v6 && s.ip.ttl) setInt(fd, IP_OPT.TTL, s.ip.ttl, SOL.IP);
}

function setInt(fd: number, name: number, value: number, level: number = SOL.SOCKET): void {
  setsockopt(fd, name, new Uint8Array(new Int32Array([value]).buffer), level);
}

/** The stream of a TCP connection that is closed: empty, at sequence numbers of its own. */
function closedStream(): TcpStream {
  return {
    state: TCP_STATE.CLOSE,
    inqSeq: 1,
    inqLen: 0,
    outqSeq: 1,
    outqLen: 0,
    unsqLen: 0,
    optMask: 0,
    sndWscale: 0,
    rcvWscale: 0,
    mssClamp: 536,
    timestamp: 0,
    cork: false,
    nodelay: false,
    window: { sndWl1: 0, sndWnd: 0, maxWindow: 0, rcvWnd: 0, rcvWup: 0 },
    inq: new Uint8Array(0),
    outq: new Uint8Array(0),
  };
}

/** Whether `s` is a TCP socket closed after its connection (it still names its peer). */
export function isClosedConnection(s: InetSocketState): boolean {
  return s.proto === IPPROTO_TCP && s.state === TCP_STATE.CLOSE && s.dstPort > 0;
}

/** Whether `s` is a TCP connection (established or half-closed). */
export function isTcpConnection(s: InetSocketState): boolean {
  return s.proto === IPPROTO_TCP && REPAIRABLE_STATES.has(s.state);
}

/**
 * Makes a socket like `s` (close-on-exec; the caller sets the open flags): options first, then
 * bind, listen or connect. A TCP connection comes back from its stream in repair mode (the
 * caller turns it off when the tree resumes). `what` names it in errors.
 */
export function makeInetSocket(s: InetSocketState, what: string, sharedPort = false): number {
  const conn = isTcpConnection(s);
  if (conn && !s.stream) throw new InetSocketError(`Cannot restore ${what}: no stream image`);
  const fd = netSocket(s.family, s.type | SOCK_CLOEXEC, s.proto);
  try {
    const o = s.opts;
    applyCommonOptions(fd, o, { lock: !conn });
    if (s.proto === IPPROTO_TCP) {
      if (o.keepcnt) setInt(fd, TCP_OPT.KEEPCNT, o.keepcnt, SOL.TCP);
      if (o.keepidle) setInt(fd, TCP_OPT.KEEPIDLE, o.keepidle, SOL.TCP);
      if (o.keepintvl) setInt(fd, TCP_OPT.KEEPINTVL, o.keepintvl, SOL.TCP);
    }
    // (A raw socket has its protocol for a port: the kernel takes no IPV6_V6ONLY there.)
    if (s.family === AF_INET6 && s.type !== SOCK_RAW) {
      setInt(fd, IPV6_V6ONLY, s.v6only ? 1 : 0, SOL.IPV6);
    }
    applyIpOptions(fd, s);
    // A connection's are in its stream image, given back with it.
    if (s.tcp && !conn) {
      if (s.tcp.cork) setInt(fd, TCP_OPT.CORK, 1, SOL.TCP);
      if (s.tcp.nodelay) setInt(fd, TCP_OPT.NODELAY, 1, SOL.TCP);
    }
    if (s.srcPort) {
      // Rebinding a port that connections of the dumped process left in TIME_WAIT needs
      // SO_REUSEADDR; the socket's own setting is put back after.
      setInt(fd, SO.REUSEADDR, 1);
      // A connection shares its port with its listener: repair mode lets it bind there. It
      // comes after SO_REUSEADDR, which would undo it.
      if (conn) repairOn(fd);
      // An address may be bound that is not (yet) local: freebind for the bind, then the
      // socket's own setting.
      const v6 = s.family === AF_INET6;
      const [fbLevel, fbName] = v6 ? [SOL.IPV6, IP_OPT.IPV6_FREEBIND] : [SOL.IP, IP_OPT.FREEBIND];
      setInt(fd, fbName, 1, fbLevel);
      // A port other sockets of the dump bind too (SO_REUSEPORT groups whose members turned
      // it off since): they all bind with SO_REUSEPORT; the caller gives each its own setting
      // back once all are bound (a member without it would shut the others out).
      if (sharedPort) setInt(fd, SO.REUSEPORT, 1);
      const addr = inetSockaddr({ family: s.family, port: s.srcPort, addr: s.srcAddr });
      try {
        bindRaw(fd, addr, what);
      } catch (e) {
        // A closed TCP socket still names the port its connection left in TIME_WAIT (one
        // without SO_REUSEADDR, which nothing but repair mode binds over).
        if (
          !(e instanceof Errno) || e.errno !== EADDRINUSE || conn ||
          s.proto !== IPPROTO_TCP || s.state !== TCP_STATE.CLOSE
        ) throw e;
        repairOn(fd);
        try {
          bindRaw(fd, addr, what);
        } finally {
          repairOff(fd);
        }
      }
      setInt(fd, fbName, s.ip.freebind ? 1 : 0, fbLevel);
    }
    setInt(fd, SO.REUSEADDR, o.reuseaddr ? 1 : 0);
    if (s.state === TCP_STATE.LISTEN) {
      try {
        listen(fd, s.backlog);
      } catch (e) {
        if (e instanceof Errno && e.errno === EADDRINUSE) {
          throw new InetSocketError(
            `Cannot listen again on ${endpointText(s.family, s.srcPort, s.srcAddr)} for ${what}: ` +
              `the port is in use${
                o.reuseaddr
                  ? ""
                  : " (connections it closed may linger in TIME_WAIT for up to 60 s; the " +
                    "socket had SO_REUSEADDR off)"
              }`,
          );
        }
        throw e;
      }
    } else if (conn) {
      restoreTcpStream(fd, s, s.stream!, o.rcvbuf, what);
    } else if (isClosedConnection(s)) {
      closeAfterConnection(fd, s, what);
    } else if (
      (isDatagram(s) && s.dstPort) || (s.type === SOCK_RAW && s.state === TCP_STATE.ESTABLISHED)
    ) {
      connectRaw(fd, inetSockaddr({ family: s.family, port: s.dstPort, addr: s.dstAddr }), what);
    }
    // A UDP socket shut down, or a TCP connection restored closed: the kernel records it even
    // unconnected (then saying ENOTCONN). A TCP connection's FINs come with its stream.
    if (s.shutdown && (isDatagram(s) || s.state === TCP_STATE.CLOSE)) {
      shutdownQuiet(fd, s.shutdown - 1);
    }
    return fd;
  } catch (e) {
    close(fd);
    throw e;
  }
}
