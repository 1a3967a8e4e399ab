/**
 * Unix sockets: `collectUnixSocket` reads one (options and queued data, without taking the
 * data) through a duplicate of the task's descriptor; `makeUnixSockets` builds them again in
 * the restorer.
 *
 * Supported: connected pairs whose both ends are in the dump (socketpair, of any type), named
 * listening sockets without connections waiting, bound or unbound unconnected datagram sockets.
 * Queued data is put back by sending it from the peer, message by message, so datagram and
 * seqpacket boundaries hold.
 *
 * @module
 */
import {
  bindUnix,
  getsockopt,
  listen,
  MSG,
  peekMessage,
  sendAll,
  setsockopt,
  shutdown,
  SO,
  socket,
  socketpair,
  unixAddr,
} from "../syscalls/socket.ts";
import { close, pidfdGetfd, pidfdOpen } from "../syscalls/mod.ts";
import type { UnixSocketInfo } from "./unix_diag.ts";

export { MSG };

/** sock_diag state of a listening socket. */
export const TCP_LISTEN = 10;
const AF_UNIX = 1;
const SOCK_CLOEXEC = 0o2000000;

/** What a dump records of one unix socket besides sock_diag's view. */
export interface UnixSocketState {
  info: UnixSocketInfo;
  sndbuf: number;
  rcvbuf: number;
  sndTimeo: [bigint, bigint];
  rcvTimeo: [bigint, bigint];
  /** Messages (or stream bytes) queued to be received, in order. */
  queue: Uint8Array[];
}

/** A socket that cannot be dumped; the message says why. */
export class UnixSocketError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnixSocketError";
  }
}

/** Reads options and queued data of unix socket `fd` of frozen task `pid`. */
export function collectUnixSocket(pid: number, fd: number, info: UnixSocketInfo): UnixSocketState {
  const pidfd = pidfdOpen(pid);
  let copy = -1;
  try {
    copy = pidfdGetfd(pidfd, fd, pid);
    const int = new Int32Array(1);
    const tv = new BigInt64Array(2);
    getsockopt(copy, SO.SNDBUF, new Uint8Array(int.buffer));
    const sndbuf = int[0];
    getsockopt(copy, SO.RCVBUF, new Uint8Array(int.buffer));
    const rcvbuf = int[0];
    getsockopt(copy, SO.SNDTIMEO, new Uint8Array(tv.buffer));
    const sndTimeo: [bigint, bigint] = [tv[0], tv[1]];
    getsockopt(copy, SO.RCVTIMEO, new Uint8Array(tv.buffer));
    const rcvTimeo: [bigint, bigint] = [tv[0], tv[1]];
    const queue: Uint8Array[] = [];
    if (info.state !== TCP_LISTEN && info.rqueue > 0) {
      // Walk the queue with a peek offset (restored to "off" after), taking nothing.
      setsockopt(copy, SO.PEEK_OFF, new Uint8Array(new Int32Array([0]).buffer));
      try {
        for (;;) {
          const m = peekMessage(copy, 1 << 20);
          if (!m || (m.data.length === 0 && info.type === 1)) break;
          if (m.control) {
            throw new UnixSocketError(
              `Cannot dump fd ${fd} of task ${pid} (socket:[${info.ino}]): descriptors or ` +
                `credentials are in flight in its queue; not supported yet`,
            );
          }
          queue.push(m.data);
        }
      } finally {
        setsockopt(copy, SO.PEEK_OFF, new Uint8Array(new Int32Array([-1]).buffer));
      }
    }
    return { info, sndbuf, rcvbuf, sndTimeo, rcvTimeo, queue };
  } finally {
    if (copy >= 0) close(copy);
    close(pidfd);
  }
}

/** A dumped unix socket, as the restorer needs it. */
export interface UnixSocketImage {
  ino: number;
  type: number;
  state: number;
  peer: number;
  name: Uint8Array;
  backlog: number;
  /** 1 receive, 2 send, 3 both. */
  shutdown: number;
  sndbuf: number;
  rcvbuf: number;
  /** Its receive queue. */
  queue: Uint8Array[];
}

function applyOptions(fd: number, s: UnixSocketImage): void {
  // The kernel doubles what it is given: hand it half of what it reported.
  const half = (v: number) => new Uint8Array(new Int32Array([Math.max(1, v >> 1)]).buffer);
  if (s.sndbuf) setsockopt(fd, SO.SNDBUFFORCE, half(s.sndbuf));
  if (s.rcvbuf) setsockopt(fd, SO.RCVBUFFORCE, half(s.rcvbuf));
}

function applyShutdown(fd: number, how: number): void {
  if (how === 3) shutdown(fd, 2);
  else if (how === 1) shutdown(fd, 0);
  else if (how === 2) shutdown(fd, 1);
}

/**
 * Makes `s` (and its peer `p` for a connected pair) in this process; returns descriptors by
 * inode. Queues are refilled by sending from the other end; shutdowns are applied last.
 */
export function makeUnixSockets(s: UnixSocketImage, p?: UnixSocketImage): Map<number, number> {
  const out = new Map<number, number>();
  if (s.peer) {
    if (!p) {
      throw new Error(`The peer socket:[${s.peer}] of socket:[${s.ino}] is not in the images`);
    }
    const [a, b] = socketpair(AF_UNIX, s.type | SOCK_CLOEXEC);
    out.set(s.ino, a);
    out.set(p.ino, b);
    applyOptions(a, s);
    applyOptions(b, p);
    for (const m of s.queue) sendAll(b, m);
    for (const m of p.queue) sendAll(a, m);
    applyShutdown(a, s.shutdown);
    applyShutdown(b, p.shutdown);
    return out;
  }
  const fd = socket(AF_UNIX, s.type | SOCK_CLOEXEC);
  out.set(s.ino, fd);
  applyOptions(fd, s);
  if (s.name.length) {
    if (s.name[0] !== 0) {
      // A path: the dumped socket left its file behind; a new bind needs the name free.
      const path = new TextDecoder().decode(s.name).replace(/\0+$/, "");
      try {
        if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
      } catch {
        // not there
      }
    }
    bindUnix(fd, s.name, `unix socket ${new TextDecoder().decode(s.name)}`);
    if (s.state === TCP_LISTEN) listen(fd, s.backlog);
    if (s.queue.length) {
      const tmp = socket(AF_UNIX, s.type | SOCK_CLOEXEC);
      try {
        for (const m of s.queue) sendAll(tmp, m, unixAddr(s.name));
      } finally {
        close(tmp);
      }
    }
  }
  applyShutdown(fd, s.shutdown);
  return out;
}
