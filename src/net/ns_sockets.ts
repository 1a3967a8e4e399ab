/**
 * Where sockets are made: criu's own network namespace, or the tree's. A socket belongs to the
 * namespace of whoever made it; criu cannot enter another (Deno), so while a dump or a restore
 * works on a tree with a network namespace of its own, every socket it makes (sock_diag
 * queries, rebuilt sockets, raw sockets for forged segments) comes from a small helper that
 * entered that namespace (parasite/helpers/ns_sockets.c) and is taken from it with
 * pidfd_getfd.
 *
 * The net modules call {@link netSocket} and {@link netSocketPair}; {@link useNamespaceOf}
 * points them at the namespace of a task for the time of a dump or a restore.
 *
 * @module
 */
import {
  close,
  Errno,
  errnoName,
  F,
  fcntl,
  O,
  open,
  pidfdGetfd,
  pidfdOpen,
  pipe2,
  tryRead,
  withTaskFd,
  writeAll,
} from "../syscalls/mod.ts";
import { socket, socketNetns, socketpair } from "../syscalls/socket.ts";
import { helperExecutable } from "../util/helper_exe.ts";

/** The helper of one namespace: requests and replies over two pipes, sockets by pidfd_getfd. */
export class NamespaceSockets implements Disposable {
  readonly #req: number;
  readonly #rep: number;
  readonly #pidfd: number;
  readonly #child: Deno.ChildProcess;
  readonly #pid: number;

  private constructor(req: number, rep: number, child: Deno.ChildProcess, pid: number) {
    this.#req = req;
    this.#rep = rep;
    this.#child = child;
    this.#pid = pid;
    this.#pidfd = pidfdOpen(child.pid);
  }

  /**
   * A helper in the network namespace of task `pid`, making its sockets as `owner` (ids as
   * criu sees them; root's without) when given.
   */
  static enter(pid: number, owner?: { uid: number; gid: number }): NamespaceSockets {
    const [reqR, reqW] = pipe2(O.CLOEXEC);
    const [repR, repW] = pipe2(O.CLOEXEC);
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(helperExecutable("ns_sockets"), {
        args: [
          `${pid}`,
          `/proc/${Deno.pid}/fd/${reqR}`,
          `/proc/${Deno.pid}/fd/${repW}`,
          ...(owner ? [`${owner.uid}:${owner.gid}`] : []),
        ],
        stdin: "null",
        stdout: "null",
        stderr: "inherit",
      }).spawn();
    } catch (e) {
      for (const fd of [reqR, reqW, repR, repW]) close(fd);
      throw e;
    }
    const ns = new NamespaceSockets(reqW, repR, child, pid);
    try {
      const [r] = ns.#reply();
      if (r < 0) {
        throw new Errno("setns(CLONE_NEWNET)", -r, `into the network namespace of task ${pid}`);
      }
    } catch (e) {
      ns[Symbol.dispose]();
      throw e;
    } finally {
      close(reqR);
      close(repW);
    }
    return ns;
  }

  /** The helper's PID (a process in the namespace). */
  get pid(): number {
    return this.#child.pid;
  }

  #reply(): [number, number] {
    const w = new Int32Array(2);
    const bytes = new Uint8Array(w.buffer);
    for (let got = 0; got < bytes.length;) {
      const n = tryRead(this.#rep, bytes.subarray(got));
      if (n === -4) continue;
      if (n <= 0) {
        throw new Error(`The socket helper of task ${this.#pid}'s network namespace is gone`);
      }
      got += n;
    }
    return [w[0], w[1]];
  }

  #ask(op: number, a: number, b = 0, c = 0): [number, number] {
    writeAll(this.#req, new Uint8Array(new Int32Array([op, a, b, c]).buffer), "socket helper");
    return this.#reply();
  }

  /** Its descriptor `fd`, here (close-on-exec, numbered 3 or above); closed there. */
  #take(fd: number): number {
    try {
      const got = pidfdGetfd(this.#pidfd, fd, this.#child.pid);
      const high = got < 3 ? fcntl(got, F.DUPFD_CLOEXEC, 3) : got;
      if (high !== got) close(got);
      return high;
    } finally {
      this.#ask(3, fd);
    }
  }

  /** socket(2) in the namespace. */
  socket(domain: number, type: number, protocol: number): number {
    const [fd] = this.#ask(1, domain, type & ~O.CLOEXEC, protocol);
    if (fd < 0) throw new Errno("socket", -fd, `in task ${this.#pid}'s network namespace`);
    return this.#take(fd);
  }

  /** socketpair(2) in the namespace. */
  socketPair(domain: number, type: number, protocol: number): [number, number] {
    const [a, b] = this.#ask(2, domain, type & ~O.CLOEXEC, protocol);
    if (a < 0) {
      throw new Errno(
        "socketpair",
        -a,
        `in task ${this.#pid}'s network namespace: ${errnoName(-a)}`,
      );
    }
    const x = this.#take(a);
    try {
      return [x, this.#take(b)];
    } catch (e) {
      close(x);
      throw e;
    }
  }

  /** /dev/net/tun opened read-write in the namespace. */
  tunFile(): number {
    const [fd] = this.#ask(4, 0);
    if (fd < 0) {
      throw new Errno("open /dev/net/tun", -fd, `in task ${this.#pid}'s network namespace`);
    }
    return this.#take(fd);
  }

  /** The helper exits (end of its requests). */
  [Symbol.dispose](): void {
    close(this.#req);
    close(this.#rep);
    close(this.#pidfd);
    this.#child.status.catch(() => {});
  }
}

/** The namespace sockets are made in now: undefined for criu's own. */
let current: NamespaceSockets | undefined;

/**
 * Until the returned handle is disposed, sockets are made in the network namespace of task
 * `pid` (its helper started now), as `owner` when given (the root of the tree's user
 * namespace: a socket belongs to whoever made it, and a ping socket wants a group of the
 * namespace's ping_group_range).
 */
export function useNamespaceOf(pid: number, owner?: { uid: number; gid: number }): Disposable {
  const ns = NamespaceSockets.enter(pid, owner);
  const before = current;
  current = ns;
  return {
    [Symbol.dispose]() {
      current = before;
      ns[Symbol.dispose]();
    },
  };
}

/**
 * Runs `fn` with sockets made in the namespace of `ns` (a network namespace nested in the
 * tree's), then where they were made before (once its promise settles, for an async `fn`).
 */
export function withSocketsIn<T>(ns: NamespaceSockets, fn: () => T): T {
  const before = current;
  current = ns;
  let pending = false;
  try {
    const out = fn();
    if (out instanceof Promise) {
      pending = true;
      return out.finally(() => (current = before)) as T;
    }
    return out;
  } finally {
    if (!pending) current = before;
  }
}

/** The network namespace descriptor `fd` of task `pid` (a socket) belongs to: "net:[INO]". */
export function netnsOfSocket(pid: number, fd: number): string {
  return withTaskFd(pid, fd, (copy) => {
    const ns = socketNetns(copy, `fd ${fd} of task ${pid}`);
    try {
      return Deno.readLinkSync(`/proc/self/fd/${ns}`);
    } finally {
      close(ns);
    }
  });
}

/** socket(2) where the tree's sockets belong (close-on-exec always). */
export function netSocket(domain: number, type: number, protocol = 0): number {
  return current ? current.socket(domain, type, protocol) : socket(domain, type, protocol);
}

/** /dev/net/tun opened read-write where the tree's devices belong (close-on-exec). */
export function netTunFile(): number {
  return current ? current.tunFile() : open("/dev/net/tun", O.RDWR | O.CLOEXEC);
}

/** socketpair(2) where the tree's sockets belong (close-on-exec always). */
export function netSocketPair(domain: number, type: number, protocol = 0): [number, number] {
  return current ? current.socketPair(domain, type, protocol) : socketpair(domain, type);
}
