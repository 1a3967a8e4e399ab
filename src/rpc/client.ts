/**
 * A client of criu's RPC, for Deno programs that drive a criu out of process (this one or
 * CRIU's): each request starts `criu swrk FD` on a socket pair, as libcriu, go-criu and pycriu
 * do (or connects to a `criu service`), sends the request, answers the NOTIFY round trips with the caller's handler, and returns
 * the response.
 *
 * ```ts
 * const criu = new CriuClient({ command: ["criu"] });
 * await criu.dump({ pid: 1234, imagesDir: "/tmp/ckpt" });
 * const { pid } = await criu.restore({ imagesDir: "/tmp/ckpt" });
 * ```
 *
 * @module
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "../images/protobuf.ts";
import {
  type criu_optsSchema,
  criu_req_type,
  criu_reqSchema,
  type criu_resp,
  criu_respSchema,
} from "../../proto/gen/rpc_pb.ts";
import {
  AF_UNIX,
  connectUnix,
  readable,
  recvPacket,
  sendAll,
  SOCK_CLOEXEC,
  SOCK_SEQPACKET,
  socket,
  socketpair,
} from "../syscalls/socket.ts";
import { close, setCloseOnExec } from "../syscalls/mod.ts";

/** A request's options (`criu_opts`), field by field (camelCase names of rpc.proto's). */
export type RpcOptions = MessageInitShape<typeof criu_optsSchema>;

/**
 * Called at each action point criu reports (when `notifyScripts` is set), with the root task's
 * PID where criu gives it, and the descriptor criu sends with it (orphan-pts-master: the
 * master of the restored terminal), which is then the handler's to close; false (or a throw)
 * tells criu the caller's action failed.
 */
export type NotifyHandler = (
  script: string,
  pid?: number,
  fd?: number,
) => boolean | Promise<boolean>;

/** A request criu answered with failure: its message and errno, as criu gave them. */
export class CriuRpcError extends Error {
  /** criu's errno for the failure (cr_errno), 0 when it gave none. */
  readonly errno: number;
  constructor(request: string, errno: number, message: string) {
    super(`${request} failed${message ? `: ${message}` : ""}${errno ? ` (errno ${errno})` : ""}`);
    this.name = "CriuRpcError";
    this.errno = errno;
  }
}

/** Where the client finds criu. */
export interface CriuClientOptions {
  /** The command that runs criu, `swrk FD` appended (default: `criu` on PATH). */
  command?: string[];
  /** The socket of a `criu service` to connect to instead (`--address`). */
  address?: string;
}

/** One request's connection: our socket, criu's stderr (swrk), and its end. */
interface Connection {
  fd: number;
  stderr: Promise<string>;
  done: Promise<unknown>;
}

/** What VERSION answers. */
export interface CriuVersion {
  major: number;
  minor: number;
  sublevel?: number;
  gitid?: string;
}

/** A client of criu's RPC through `criu swrk`. */
export class CriuClient {
  readonly #command: string[];
  readonly #address?: string;

  constructor(opts: CriuClientOptions = {}) {
    this.#command = opts.command ?? ["criu"];
    this.#address = opts.address;
  }

  /** criu's version (VERSION). */
  async version(): Promise<CriuVersion> {
    const r = await this.#call(criu_req_type.VERSION, {});
    const v = r.version!;
    return { major: v.majorNumber, minor: v.minorNumber, sublevel: v.sublevel, gitid: v.gitid };
  }

  /** Whether the kernel has what criu needs (CHECK); throws with criu's reason if not. */
  async check(): Promise<void> {
    await this.#call(criu_req_type.CHECK, {});
  }

  /** Dumps the tree `opts.pid` (DUMP). */
  async dump(opts: RpcOptions, onNotify?: NotifyHandler): Promise<void> {
    await this.#call(criu_req_type.DUMP, { opts: { imagesDirFd: -1, ...opts } }, onNotify);
  }

  /** Restores a tree (RESTORE); returns its root task's PID. */
  async restore(opts: RpcOptions, onNotify?: NotifyHandler): Promise<{ pid: number }> {
    const r = await this.#call(criu_req_type.RESTORE, {
      opts: { imagesDirFd: -1, ...opts },
    }, onNotify);
    return { pid: r.restore!.pid };
  }

  /** Sends one request to a new `criu swrk` and returns its response, NOTIFYs answered. */
  async #call(
    type: criu_req_type,
    fields: { opts?: RpcOptions },
    onNotify?: NotifyHandler,
  ): Promise<criu_resp> {
    const name = criu_req_type[type];
    const conn = this.#address === undefined ? this.#spawn() : this.#connect(this.#address);
    try {
      send(conn.fd, create(criu_reqSchema, { type, ...fields }));
      for (;;) {
        await readable(conn.fd);
        const fds: number[] = [];
        const packet = recvPacket(conn.fd, `criu ${name} response`, fds);
        if (packet === null) {
          const why = (await conn.stderr).trim().split("\n").at(-1) ?? "";
          throw new CriuRpcError(
            name,
            0,
            `criu went away without answering${why ? `: ${why}` : ""}`,
          );
        }
        const resp = fromBinary(criu_respSchema, packet);
        // A descriptor goes to the handler of the notification it came with; others are closed.
        const handed = resp.type === criu_req_type.NOTIFY && onNotify ? fds.shift() : undefined;
        for (const fd of fds) close(fd);
        if (resp.type === criu_req_type.NOTIFY && resp.notify) {
          let ok = false;
          try {
            ok = onNotify
              ? await onNotify(resp.notify.script, resp.notify.pid || undefined, handed)
              : true;
          } catch {
            ok = false;
          }
          send(conn.fd, create(criu_reqSchema, { type: criu_req_type.NOTIFY, notifySuccess: ok }));
          continue;
        }
        if (!resp.success) throw new CriuRpcError(name, resp.crErrno, resp.crErrmsg);
        return resp;
      }
    } finally {
      close(conn.fd);
      await conn.done;
    }
  }

  /** A new `criu swrk` on a socket pair: our end, its stderr once it ends, and its end. */
  #spawn(): Connection {
    // criu's end is inherited (its close-on-exec cleared); ours is not.
    const [mine, theirs] = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC);
    let child: Deno.ChildProcess;
    try {
      setCloseOnExec(theirs, false);
      child = new Deno.Command(this.#command[0], {
        args: [...this.#command.slice(1), "swrk", `${theirs}`],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      close(mine);
      throw e;
    } finally {
      close(theirs);
    }
    const stderr = new Response(child.stderr).text();
    return { fd: mine, stderr, done: Promise.all([child.status, stderr]) };
  }

  /** A connection to a `criu service` listening at `address`. */
  #connect(address: string): Connection {
    const fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC);
    try {
      connectUnix(fd, new TextEncoder().encode(address), `criu service at ${address}`);
    } catch (e) {
      close(fd);
      throw e;
    }
    return { fd, stderr: Promise.resolve(""), done: Promise.resolve() };
  }
}

function send(fd: number, req: Parameters<typeof toBinary<typeof criu_reqSchema>>[1]): void {
  sendAll(fd, toBinary(criu_reqSchema, req));
}
