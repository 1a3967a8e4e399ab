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
import { type NamespaceSockets, netSocket, netSocketPair, withSocketsIn } from "./ns_sockets.ts";
import {
  accept,
  bindUnix,
  connectUnix,
  listen,
  MSG,
  peekMessage,
  sendAll,
  sendWithFds,
  setsockopt,
  shutdown,
  SO,
  unixAddr,
} from "../syscalls/socket.ts";
import { close, withTaskFd } from "../syscalls/mod.ts";
import type { UnixSocketInfo } from "./unix_diag.ts";
import { TCP_STATE } from "./tcp_state.ts";
import { applyCommonOptions, type CommonSocketOptions, readCommonOptions } from "./sk_opts.ts";
import { dirname } from "../util/path.ts";
import { exists } from "../util/exists.ts";

export { MSG };

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

/** The file of a socket bound to a path: its permissions, or that it is gone. */
export interface UnixSocketFile {
  mode: number;
  uid: number;
  gid: number;
  /** For a name relative to the binder's working directory: that directory. */
  dir?: string;
  /** The file was removed (or replaced) after bind. */
  deleted: boolean;
}

/** What a dump records of one unix socket besides sock_diag's view. */
export interface UnixSocketState {
  info: UnixSocketInfo;
  opts: CommonSocketOptions;
  /** Messages (or stream bytes) queued to be received, in order. */
  queue: QueuedMessage[];
  /** A socket bound to a path: its file. */
  file?: UnixSocketFile;
}

/**
 * The file of path-bound socket `info` of task `pid`: found at its name (a relative name
 * under the task's working directory) when the inode sock_diag gives is there.
 */
function socketFile(
  pid: number,
  info: UnixSocketInfo,
  root: string,
): UnixSocketFile | undefined {
  if (!info.name.length || info.name[0] === 0) return undefined;
  const name = new TextDecoder().decode(info.name).replace(/\0+$/, "");
  const dir = name.startsWith("/") ? undefined : Deno.readLinkSync(`/proc/${pid}/cwd`);
  const path = dir === undefined ? name : `${dir}/${name}`;
  try {
    const st = Deno.lstatSync(root + path);
    if (st.isSocket && st.ino === info.vfsIno) {
      return {
        mode: st.mode ?? 0o140000, // with its type bits, as criu writes it
        uid: st.uid ?? 0,
        gid: st.gid ?? 0,
        dir,
        deleted: false,
      };
    }
  } catch {
    // gone
  }
  // Not there: deleted, unless another file system now shows at its directory (a mount over
  // it). Bound again at that place it would be on that other file system, holding it busy.
  const parent = path.slice(0, path.lastIndexOf("/")) || "/";
  let shown: number | undefined;
  try {
    shown = Deno.statSync(root + parent).dev;
  } catch {
    // its directory went too
  }
  if (shown !== undefined && info.vfsDev && shown !== info.vfsDev) {
    throw new UnixSocketError(
      `Cannot dump the unix socket bound at ${path}: another mount now hides its name ` +
        `(the directory shows another file system); not supported`,
    );
  }
  return { mode: 0o755, uid: 0, gid: 0, dir, deleted: true };
}

/**
 * A message (or stream bytes) in a socket's receive queue, with the descriptors in flight with
 * it: at dump, copies in this process (`fds`) and their file ids (`ids`); at restore, the
 * descriptors here to send with it (`fds`).
 */
export interface QueuedMessage {
  data: Uint8Array;
  fds?: number[];
  ids?: number[];
}

/** A socket that cannot be dumped; the message says why. */
export class UnixSocketError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnixSocketError";
  }
}

/** Reads options and queued data of unix socket `fd` of frozen task `pid`. */
export function collectUnixSocket(
  pid: number,
  fd: number,
  info: UnixSocketInfo,
  root = "",
): UnixSocketState {
  return withTaskFd(pid, fd, (copy) => {
    const opts = readCommonOptions(copy, AF_UNIX);
    const queue: QueuedMessage[] = [];
    if (info.state !== TCP_STATE.LISTEN && info.rqueue > 0) {
      // Walk the queue with a peek offset (restored to "off" after), taking nothing.
      setsockopt(copy, SO.PEEK_OFF, new Uint8Array(new Int32Array([0]).buffer));
      try {
        // Stream and seqpacket: sock_diag counts the queued bytes (past them, a socket whose
        // peer closed reads end-of-file for ever). Datagrams: until nothing is left.
        const bytes = info.type === SOCK_DGRAM ? Infinity : info.rqueue;
        const queueName = `the queue of fd ${fd} of task ${pid} (socket:[${info.ino}])`;
        for (let got = 0; got < bytes;) {
          const m = peekMessage(copy, 1 << 20, queueName);
          if (!m || (m.data.length === 0 && info.type === 1)) break;
          got += m.data.length;
          if (m.other) {
            for (const x of m.fds) close(x);
            for (const q of queue) for (const x of q.fds ?? []) close(x);
            throw new UnixSocketError(
              `Cannot dump fd ${fd} of task ${pid} (socket:[${info.ino}]): credentials are in ` +
                `flight in its queue; not supported yet`,
            );
          }
          queue.push(m.fds.length ? { data: m.data, fds: m.fds } : { data: m.data });
        }
      } finally {
        setsockopt(copy, SO.PEEK_OFF, new Uint8Array(new Int32Array([-1]).buffer));
      }
    }
    return { info, opts, queue, file: socketFile(pid, info, root) };
  });
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
  /**
   * Its receive queue; a unix socket in flight there is named by its inode (one of those made
   * with it), any other descriptor is given.
   */
  queue: { data: Uint8Array; fds?: (number | { unix: number })[] }[];
  /** A connection not yet accepted: it stays in its listener's queue. */
  pending: boolean;
  /** A socket outside the tree (--ext-unix-sk): not made; its own are connected to its name. */
  external?: boolean;
  /** A path-bound socket's file: permissions, the directory of a relative name, deleted. */
  file?: { mode?: number; uid?: number; gid?: number; dir?: string; deleted: boolean };
  /** The helper of its network namespace, when it is one nested in the tree's. */
  ns?: NamespaceSockets;
}

function applyShutdown(fd: number, how: number): void {
  if (how === 3) shutdown(fd, 2);
  else if (how === 1) shutdown(fd, 0);
  else if (how === 2) shutdown(fd, 1);
}

/** `fn` with sockets made in the network namespace of `s`. */
const within = <T>(s: UnixSocketImage, fn: () => T): T => s.ns ? withSocketsIn(s.ns, fn) : fn();

const same = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((x, i) => x === b[i]);
const nameOf = (n: Uint8Array) => new TextDecoder().decode(n).replace(/\0/g, "@");

/** Runs `fn` with the working directory `dir` (a relative socket name resolves there). */
function inDir<T>(dir: string | undefined, fn: () => T): T {
  if (!dir) return fn();
  const back = Deno.cwd();
  Deno.chdir(dir);
  try {
    return fn();
  } finally {
    Deno.chdir(back);
  }
}

/** The path a socket's name is at (relative names under their directory). */
function pathOf(s: UnixSocketImage): string {
  const name = new TextDecoder().decode(s.name).replace(/\0+$/, "");
  return s.file?.dir && !name.startsWith("/") ? `${s.file.dir}/${name}` : name;
}

/**
 * Makes every unix socket of a dump in this process; returns descriptors by inode (connections
 * still waiting to be accepted have none: they sit in their listener's queue).
 *
 * 1. Listeners: bound (a stale socket file at the path is removed) and listening.
 * 2. Connections to a listener, in the order they were made: a client connects to the
 *    listener's name; an accepted server side is accepted at once, a pending one (`pending`)
 *    stays queued, as it was.
 * 3. Named datagram sockets connected to themselves. Connections whose listener is gone,
 *    accepted from a listener made for a moment at their name. Named datagram sockets, each
 *    bound with the datagram sockets connected to it (a later one may be bound at the same
 *    deleted name).
 * 4. Unnamed pairs: socketpair. A connected socket whose peer was closed: a socketpair whose
 *    other end sends its queue and is closed.
 * 5. The rest: made, and bound when they had a name.
 * Queued data is sent from the other end; shutdowns come last; then the files of sockets whose
 * file had been deleted are removed again.
 */
export function makeUnixSockets(socks: UnixSocketImage[]): Map<number, number> {
  const parked: { path: string; aside?: string }[] = [];
  const madeDirs: string[] = [];
  try {
    return makeAll(socks, parked, madeDirs);
  } finally {
    // The files of deleted sockets go again, and the directories made for them.
    for (const { path, aside } of parked) {
      try {
        Deno.removeSync(path);
      } catch {
        // never bound (a failed restore)
      }
      if (aside) Deno.renameSync(aside, path);
    }
    for (const dir of madeDirs.reverse()) Deno.removeSync(dir);
  }
}

function makeAll(
  socks: UnixSocketImage[],
  parked: { path: string; aside?: string }[],
  madeDirs: string[],
): Map<number, number> {
  const out = new Map<number, number>();
  const byIno = new Map(socks.map((s) => [s.ino, s]));
  const listeners = socks.filter((s) => s.state === TCP_STATE.LISTEN && s.name.length);
  const listenerOf = (s: UnixSocketImage) =>
    s.state !== TCP_STATE.LISTEN && s.peer && s.name.length
      ? listeners.find((l) => same(l.name, s.name))
      : undefined;
  const done = new Set<number>();
  // Queues are filled once every socket is made: one may carry a unix socket (itself, say).
  const fills: { s: UnixSocketImage; via: number; close?: boolean }[] = [];
  const fill = (s: UnixSocketImage, via: number, close = false) => fills.push({ s, via, close });
  const fillAll = () => {
    for (const { s, via, close: closeAfter } of fills.splice(0)) {
      for (const m of s.queue) {
        const fds = (m.fds ?? []).map((x) => {
          if (typeof x === "number") return x;
          const fd = out.get(x.unix);
          if (fd === undefined) {
            throw new Error(`Socket:[${x.unix}], in flight to socket:[${s.ino}], was not made`);
          }
          return fd;
        });
        if (fds.length) sendWithFds(via, m.data, fds, `the queue of socket:[${s.ino}]`);
        else sendAll(via, m.data);
      }
      if (closeAfter) close(via);
    }
  };
  /** Two connected ends made: each kept, each given the other's queue. */
  const pairUp = (s: UnixSocketImage, sfd: number, p: UnixSocketImage, pfd: number) => {
    out.set(s.ino, sfd);
    out.set(p.ino, pfd);
    done.add(s.ino);
    done.add(p.ino);
    fill(s, pfd);
    fill(p, sfd);
  };
  const create = (s: UnixSocketImage) => {
    const fd = within(s, () => netSocket(AF_UNIX, s.type | SOCK_CLOEXEC));
    applyCommonOptions(fd, s.opts);
    return fd;
  };
  const bindNamed = (fd: number, s: UnixSocketImage) => {
    const path = pathOf(s);
    if (s.file?.deleted && s.name[0] !== 0) {
      // Its file was deleted: bound for the restore (what is at the path now is set aside),
      // removed again at the end.
      let aside: string | undefined;
      if (parked.some((p) => p.path === path)) {
        Deno.removeSync(path); // another deleted socket's, bound here a moment ago
      } else {
        try {
          Deno.lstatSync(path);
          aside = `${path}.criu-sk-parked-${s.ino}`;
          Deno.renameSync(path, aside);
        } catch {
          // nothing there
        }
        parked.push({ path, aside });
      }
      // Its directory may be gone too: made for the bind, removed again at the end.
      const missing: string[] = [];
      for (let d = dirname(path); d !== "/" && !exists(d); d = dirname(d)) missing.unshift(d);
      for (const d of missing) {
        Deno.mkdirSync(d);
        madeDirs.push(d);
      }
    } else {
      freeName(s);
    }
    inDir(s.file?.dir, () => bindUnix(fd, s.name, `unix socket ${nameOf(s.name)}`));
    const f = s.file;
    if (f && !f.deleted && f.mode !== undefined && s.name[0] !== 0) {
      Deno.chmodSync(path, f.mode & 0o7777);
      Deno.chownSync(path, f.uid ?? 0, f.gid ?? 0);
    }
  };
  const connectTo = (fd: number, to: UnixSocketImage) =>
    inDir(to.file?.dir, () => connectUnix(fd, to.name, `unix socket ${nameOf(to.name)}`));

  for (const l of listeners) {
    const fd = create(l);
    bindNamed(fd, l);
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
    if (c.name.length) bindNamed(client, c);
    connectTo(client, l);
    if (x.pending) {
      out.set(c.ino, client);
      done.add(c.ino);
      done.add(x.ino);
      continue;
    }
    const server = accept(out.get(l.ino)!, `unix socket ${nameOf(l.name)}`);
    applyCommonOptions(server, x.opts);
    pairUp(x, server, c, client);
  }
  // Datagram sockets connected to their own name.
  for (const x of socks) {
    if (done.has(x.ino) || x.peer !== x.ino || !x.name.length) continue;
    const fd = create(x);
    bindNamed(fd, x);
    connectTo(fd, x);
    fill(x, fd);
    out.set(x.ino, fd);
    done.add(x.ino);
  }
  // Connections whose listener is gone: a listener at its name for a moment, to accept them.
  for (const x of socks) {
    if (
      done.has(x.ino) || x.type === SOCK_DGRAM || x.state === TCP_STATE.LISTEN || !x.peer ||
      !x.name.length || listenerOf(x)
    ) continue;
    const c = byIno.get(x.peer);
    if (!c || c.name.length || c.peer !== x.ino) continue;
    const tmp = create(x);
    let server: number, client: number;
    try {
      bindNamed(tmp, x);
      listen(tmp, 1);
      client = create(c);
      connectTo(client, x);
      server = accept(tmp, `unix socket ${nameOf(x.name)}`);
    } finally {
      close(tmp);
    }
    applyCommonOptions(server, x.opts);
    pairUp(x, server, c, client);
  }
  // Datagram sockets others are connected to (not back): bound first, then their senders.
  const oneWay = (s: UnixSocketImage) => {
    const p = s.peer ? byIno.get(s.peer) : undefined;
    return p && p.peer !== s.ino && p.name.length ? p : undefined;
  };
  // Each target with its senders at once: a later socket may be bound at the same (deleted)
  // name.
  for (const t of socks) {
    const p = oneWay(t);
    if (!p) continue;
    if (!done.has(p.ino) && !p.external) {
      const fd = create(p);
      bindNamed(fd, p);
      out.set(p.ino, fd);
      done.add(p.ino);
    }
    for (const s of socks) {
      if (oneWay(s) !== p || done.has(s.ino) || s.external) continue;
      const fd = create(s);
      if (s.name.length) bindNamed(fd, s);
      connectTo(fd, p);
      out.set(s.ino, fd);
      done.add(s.ino);
    }
  }
  for (const s of socks) {
    if (done.has(s.ino)) continue;
    if (!s.peer && s.state === TCP_STATE.ESTABLISHED && (s.type !== SOCK_DGRAM || !s.name.length)) {
      // Its peer was closed: a pair whose other end hands over the queue and goes. (A named
      // datagram socket stays unconnected: connected, it would hear its peer only.)
      const [a, b] = within(s, () => netSocketPair(AF_UNIX, s.type | SOCK_CLOEXEC));
      applyCommonOptions(a, s.opts);
      if (s.name.length) bindNamed(a, s);
      fill(s, b, true);
      out.set(s.ino, a);
      done.add(s.ino);
      continue;
    }
    if (!s.peer) continue;
    const p = byIno.get(s.peer);
    if (!p) {
      throw new Error(`The peer socket:[${s.peer}] of socket:[${s.ino}] is not in the images`);
    }
    if (s.ns !== p.ns) {
      throw new Error(
        `Socket:[${s.ino}] and its peer socket:[${p.ino}] are of two network namespaces`,
      );
    }
    const [a, b] = within(s, () => netSocketPair(AF_UNIX, s.type | SOCK_CLOEXEC));
    applyCommonOptions(a, s.opts);
    applyCommonOptions(b, p.opts);
    // A pair bound at names after it was made (scm06's).
    if (s.name.length) bindNamed(a, s);
    if (p.name.length) bindNamed(b, p);
    pairUp(s, a, p, b);
  }
  for (const s of socks) {
    if (done.has(s.ino) || s.external) continue;
    const fd = create(s);
    out.set(s.ino, fd);
    done.add(s.ino);
    if (s.name.length) bindNamed(fd, s);
  }
  fillAll();
  // What waits in a named socket without a peer of its own (datagrams its senders addressed
  // to its name): sent again by name from a socket made for it.
  for (const s of socks) {
    if (!s.name.length || s.peer || !s.queue.length || s.state === TCP_STATE.LISTEN) continue;
    if (s.external) continue;
    if (s.type !== SOCK_DGRAM) continue;
    const tmp = within(s, () => netSocket(AF_UNIX, s.type | SOCK_CLOEXEC));
    try {
      for (const m of s.queue) {
        if (m.fds?.length) throw new Error(`Descriptors in flight to ${s.ino} by name`);
        inDir(s.file?.dir, () => sendAll(tmp, m.data, unixAddr(s.name)));
      }
    } finally {
      close(tmp);
    }
  }
  for (const s of socks) {
    const fd = out.get(s.ino);
    if (fd !== undefined) applyShutdown(fd, s.shutdown);
  }
  return out;
}

/** A path name left by the dumped socket must be free again for bind. */
function freeName(s: UnixSocketImage): void {
  if (!s.name.length || s.name[0] === 0) return;
  const path = pathOf(s);
  try {
    if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
  } catch {
    // not there
  }
}
