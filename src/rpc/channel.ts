/**
 * One end of criu's RPC: requests (`criu_req`) and responses (`criu_resp`), one message per
 * packet of a SOCK_SEQPACKET socket, and the NOTIFY round trip through which the caller hears
 * of each action point and answers whether its own action for it succeeded.
 *
 * @module
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "../images/protobuf.ts";
import {
  type criu_req,
  criu_req_type,
  criu_reqSchema,
  type criu_resp,
  criu_respSchema,
} from "../../proto/gen/rpc_pb.ts";
import { ActionScriptError, type ScriptAction } from "../action_scripts.ts";
import { peerCredentials, readable, recvPacket, sendAll, sendWithFds } from "../syscalls/socket.ts";

/** A response, as its fields are given. */
export type Response = MessageInitShape<typeof criu_respSchema>;

/** The action points whose notification carries the root task's PID (as criu sends them). */
const WITH_PID: ReadonlySet<ScriptAction> = new Set(["setup-namespaces", "post-restore"]);

/** A malformed message or a closed connection. */
export class RpcError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RpcError";
  }
}

/** The server's end of an RPC connection: criu's side. */
export class RpcChannel {
  /** The socket. */
  readonly fd: number;
  /** The process at the other end (SO_PEERCRED), whose descriptors requests may name. */
  readonly peer: { pid: number; uid: number; gid: number };

  constructor(fd: number) {
    this.fd = fd;
    this.peer = peerCredentials(fd);
  }

  /** The next request, waited for off the event loop; null once the caller has closed. */
  async request(): Promise<criu_req | null> {
    await readable(this.fd);
    const packet = recvPacket(this.fd, "criu RPC request");
    if (packet === null) return null;
    try {
      return fromBinary(criu_reqSchema, packet);
    } catch (e) {
      throw new RpcError(`Cannot decode an RPC request: ${(e as Error).message}`);
    }
  }

  /** Sends `resp`, with descriptor `fd` in flight when given. */
  respond(resp: Response, fd?: number): void {
    const bytes = toBinary(criu_respSchema, create(criu_respSchema, resp));
    if (fd === undefined) sendAll(this.fd, bytes);
    else sendWithFds(this.fd, bytes, [fd], "criu RPC response");
  }

  /**
   * Tells the caller that `action` is reached (with the root task's PID where criu gives it)
   * and waits for its answer; throws when it reports failure or goes away.
   */
  async notify(action: ScriptAction, pid?: number, fd?: number): Promise<void> {
    await this.#notified(action, WITH_PID.has(action) ? pid : undefined, fd);
  }

  /**
   * Asks the caller which more resources are external (criu's query-ext-files notification);
   * returns the `external` entries of its answer.
   */
  async queryExternal(): Promise<string[]> {
    return (await this.#notified("query-ext-files")).opts?.external ?? [];
  }

  /** One NOTIFY round trip: the caller's answer, which must say its action succeeded. */
  async #notified(script: string, pid?: number, fd?: number): Promise<criu_req> {
    this.respond({ type: criu_req_type.NOTIFY, success: true, notify: { script, pid } }, fd);
    const answer = await this.request();
    if (answer === null) {
      throw new ActionScriptError(`The RPC caller went away before answering ${script}`);
    }
    if (answer.type !== criu_req_type.NOTIFY || !answer.notifySuccess) {
      throw new ActionScriptError(`The RPC caller reported that its ${script} action failed`);
    }
    return answer;
  }
}

/** The message of a response type, for logs and errors. */
export function requestName(type: criu_req_type): string {
  return criu_req_type[type] ?? `request type ${type}`;
}

export type { criu_req, criu_resp };
