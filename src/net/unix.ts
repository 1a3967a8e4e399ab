/**
 * Unix sockets: `collectUnixSocket` reads one (options and queued data, without taking the
 * data) through a duplicate of the task's descriptor; `makeUnixSockets` builds them again in
 * the restorer.
 *
 * Supported: connected pairs whose both ends are in the dump (socketpair, of any type), named
 * listening sockets with their accepted and pending connections (clients in the dump), bound
 * or unbound unconnected datagram sockets.
 * Queued data is put back by sending it from the peer, message by message, so datagram and
 * seqpacket boundaries hold.
 *
 * @module
 */
import {
  accept,
  bindUnix,
  connectUnix,
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
import { TCP_STATE } from "./tcp_state.ts";
import { applyCommonOptions, type CommonSocketOptions, readCommonOptions } from "./sk_opts.ts";

export { MSG };

const AF_UNIX = 1;
const SOCK_CLOEXEC = 0o2000000;

/** What a dump records of one unix socket besides sock_diag's view. */
export interface UnixSocketState {
  info: UnixSocketInfo;
  opts: CommonSocketOptions;
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
    const opts = readCommonOptions(copy);
    const queue: Uint8Array[] = [];
    if (info.state !== TCP_STATE.LISTEN && info.rqueue > 0) {
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
    return { info, opts, queue };
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
  opts: CommonSocketOptions;
  /** Its receive queue. */
  queue: Uint8Array[];
  /** A connection not yet accepted: it stays in its listener's queue. */
  pending: boolean;
}

function applyShutdown(fd: number, how: number): void {
  if (how === 3) shutdown(fd, 2);
  else if (how === 1) shutdown(fd, 0);
  else if (how === 2) shutdown(fd, 1);
}

const same = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((x, i) => x === b[i]);
const nameOf = (n: Uint8Array) => new TextDecoder().decode(n).replace(/\0/g, "@");

/**
 * Makes every unix socket of a dump in this process; returns descriptors by inode (connections
 * still waiting to be accepted have none: they sit in their listener's queue).
 *
 * 1. Listeners: bound (a stale socket file at the path is removed) and listening.
 * 2. Connections to a listener, in the order they were made: a client connects to the
 *    listener's name; an accepted server side is accepted at once, a pending one (`pending`)
 *    stays queued, as it was.
 * 3. Unnamed pairs: socketpair. 4. The rest: made, and bound when they had a name.
 * Queued data is sent from the other end; shutdowns come last.
 */
export function makeUnixSockets(socks: UnixSocketImage[]): Map<number, number> {
  const out = new Map<number, number>();
  const byIno = new Map(socks.map((s) => [s.ino, s]));
  const listeners = socks.filter((s) => s.state === TCP_STATE.LISTEN && s.name.length);
  const listenerOf = (s: UnixSocketImage) =>
    s.state !== TCP_STATE.LISTEN && s.peer && s.name.length
      ? listeners.find((l) => same(l.name, s.name))
      : undefined;
  const done = new Set<number>();
  const fill = (s: UnixSocketImage, via: number) => {
    for (const m of s.queue) sendAll(via, m);
  };
  const create = (s: UnixSocketImage) => {
    const fd = socket(AF_UNIX, s.type | SOCK_CLOEXEC);
    applyCommonOptions(fd, s.opts);
    return fd;
  };

  for (const l of listeners) {
    const fd = create(l);
    freeName(l.name);
    bindUnix(fd, l.name, `unix socket ${nameOf(l.name)}`);
    listen(fd, l.backlog);
    out.set(l.ino, fd);
    done.add(l.ino);
  }
  for (const x of socks) {
    const l = listenerOf(x);
    if (!l || done.has(x.ino)) continue;
    const c = byIno.get(x.peer);
    if (!c) {
      throw new Error(`The client socket:[${x.peer}] of socket:[${x.ino}] is not in the images`);
    }
    const client = create(c);
    if (c.name.length) bindUnix(client, c.name, `unix socket ${nameOf(c.name)}`);
    connectUnix(client, l.name, `unix socket ${nameOf(l.name)}`);
    out.set(c.ino, client);
    done.add(c.ino);
    done.add(x.ino);
    if (x.pending) continue;
    const server = accept(out.get(l.ino)!, `unix socket ${nameOf(l.name)}`);
    applyCommonOptions(server, x.opts);
    out.set(x.ino, server);
    fill(x, client);
    fill(c, server);
  }
  for (const s of socks) {
    if (done.has(s.ino) || !s.peer) continue;
    const p = byIno.get(s.peer);
    if (!p) {
      throw new Error(`The peer socket:[${s.peer}] of socket:[${s.ino}] is not in the images`);
    }
    const [a, b] = socketpair(AF_UNIX, s.type | SOCK_CLOEXEC);
    applyCommonOptions(a, s.opts);
    applyCommonOptions(b, p.opts);
    out.set(s.ino, a);
    out.set(p.ino, b);
    done.add(s.ino);
    done.add(p.ino);
    fill(s, b);
    fill(p, a);
  }
  for (const s of socks) {
    if (done.has(s.ino)) continue;
    const fd = create(s);
    out.set(s.ino, fd);
    if (s.name.length) {
      freeName(s.name);
      bindUnix(fd, s.name, `unix socket ${nameOf(s.name)}`);
      if (s.queue.length) {
        const tmp = socket(AF_UNIX, s.type | SOCK_CLOEXEC);
        try {
          for (const m of s.queue) sendAll(tmp, m, unixAddr(s.name));
        } finally {
          close(tmp);
        }
      }
    }
  }
  for (const s of socks) {
    const fd = out.get(s.ino);
    if (fd !== undefined) applyShutdown(fd, s.shutdown);
  }
  return out;
}

/** A path name left by the dumped socket must be free again for bind. */
function freeName(name: Uint8Array): void {
  if (!name.length || name[0] === 0) return;
  const path = new TextDecoder().decode(name).replace(/\0+$/, "");
  try {
    if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
  } catch {
    // not there
  }
}
