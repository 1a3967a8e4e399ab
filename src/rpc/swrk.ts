/**
 * `criu swrk FD`: criu's RPC served on a socket the caller made (runc, podman, go-criu,
 * pycriu and libcriu start criu so). One request is served, or several while each asks to keep
 * the connection open (only those criu allows it for); then criu exits, 0 when the last
 * request succeeded.
 *
 * Dump and restore run as the command line's do, with the request's options; action points
 * reach the caller as NOTIFY round trips when it asks for them (`notify_scripts`). A failure is
 * answered with `success` false, the reason in `cr_errmsg` (one line, as criu's first error)
 * and, where criu gives one, `cr_errno`.
 *
 * @module
 */
import { criu_req_type } from "../../proto/gen/rpc_pb.ts";
import { checkExternal, type CriuOpts, UsageError } from "../cli/options.ts";
import type { Caller } from "../cli/run.ts";
import { CRIU_VERSION, VERSION } from "../version.ts";
import { close, libc, setCloseOnExec } from "../syscalls/mod.ts";
import { readable, receiveMessage } from "../syscalls/socket.ts";
import { type criu_req, requestName, type Response, RpcChannel, RpcError } from "./channel.ts";
import { optsFromRequest } from "./request_opts.ts";
import { load } from "../util/load.ts";
import { SERVICE_HANDOFF_ENV, SERVICE_WORKER_ENV } from "./service.ts";

const ESRCH = 3, EEXIST = 17, EBADRQC = 56, EOPNOTSUPP = 95;

/** Requests criu serves on a connection kept open (the others end it). */
const KEEP_OPEN: ReadonlySet<criu_req_type> = new Set([
  criu_req_type.VERSION,
  criu_req_type.FEATURE_CHECK,
  criu_req_type.PAGE_SERVER,
  criu_req_type.PAGE_SERVER_CHLD,
  criu_req_type.CPUINFO_DUMP,
  criu_req_type.CPUINFO_CHECK,
]);

/** Requests deno-criu does not serve yet, and why. */
const NOT_SERVED: Partial<Record<criu_req_type, string>> = {
  [criu_req_type.SINGLE_PRE_DUMP]: "single pre-dumps (without a tracked parent) come with " +
    "live migration",
  [criu_req_type.PAGE_SERVER_CHLD]: "page servers come with live migration",
  [criu_req_type.CPUINFO_DUMP]: "CPU information images are not supported yet",
  [criu_req_type.CPUINFO_CHECK]: "CPU information images are not supported yet",
};

/** `criu swrk FD`, with `base` the options it was started with. Returns the exit code. */
export async function serveSwrk(base: CriuOpts): Promise<number> {
  let fd = Number(base.args[0]);
  if (!/^\d+$/.test(base.args[0] ?? "")) throw new UsageError("swrk needs the socket: swrk FD");
  // A service's worker started ahead: the connection comes on this socket (none: the service
  // ended first).
  if (Deno.env.get(SERVICE_HANDOFF_ENV)) {
    const handed = await readable(fd) ? receiveMessage(fd, 1) : null;
    close(fd);
    if (!handed?.fds.length) return 0;
    for (const extra of handed.fds.slice(1)) close(extra);
    fd = handed.fds[0];
  }
  // No task or helper criu starts may inherit it.
  setCloseOnExec(fd, true);
  const channel = new RpcChannel(fd);
  for (;;) {
    const req = await channel.request();
    if (req === null) throw new RpcError("The RPC caller closed the connection without a request");
    if (req.keepOpen && !KEEP_OPEN.has(req.type)) {
      channel.respond(failure(
        req.type,
        new UsageError(`keep_open is not allowed with a ${requestName(req.type)} request`),
      ));
      return 1;
    }
    const ok = await serve(channel, base, req);
    if (!ok || !req.keepOpen) return ok ? 0 : 1;
  }
}

/** Serves one request and sends its response; whether it succeeded. */
async function serve(channel: RpcChannel, base: CriuOpts, req: criu_req): Promise<boolean> {
  let resp: Response;
  try {
    resp = await answer(channel, base, req);
  } catch (e) {
    resp = failure(req.type, e);
  }
  channel.respond(resp);
  return resp.success === true;
}

async function answer(channel: RpcChannel, base: CriuOpts, req: criu_req): Promise<Response> {
  const type = req.type;
  const why = NOT_SERVED[type];
  if (why) {
    throw new UnsupportedRequest(
      `The ${requestName(type)} request is not supported by deno-criu: ${why}`,
    );
  }
  // Action points go to the caller when it asks for them.
  const notifying = req.opts?.notifyScripts === true;
  const caller: Caller = {
    notify: notifying ? (action, pid) => channel.notify(action, pid) : undefined,
    ptyMaster: notifying ? (fd) => channel.notify("orphan-pts-master", undefined, fd) : undefined,
    queryExternal: notifying
      ? async () => {
        const more = await channel.queryExternal();
        checkExternal(more, "dump");
        return more;
      }
      : undefined,
  };
  switch (type) {
    case criu_req_type.VERSION: {
      const [major, minor] = CRIU_VERSION.split(".").map(Number);
      return {
        type,
        success: true,
        version: { majorNumber: major, minorNumber: minor, gitid: `deno-criu-${VERSION}` },
      };
    }
    case criu_req_type.FEATURE_CHECK: {
      // Asked or not, each answer is given: memory tracking and lazy pages where the kernel
      // has them.
      const { uffdWpAsync, uffdFeatures, UFFD_FEATURES_NONCOOP } = await load<
        typeof import("../syscalls/uffd.ts")
      >("syscalls/uffd.ts");
      const noncoop = ((uffdFeatures() ?? 0) & UFFD_FEATURES_NONCOOP) === UFFD_FEATURES_NONCOOP;
      return {
        type,
        success: true,
        features: { memTrack: uffdWpAsync(), lazyPages: noncoop, pidfdStore: false },
      };
    }
    case criu_req_type.CHECK: {
      const { checkFeatures, FEATURES } = await load<typeof import("../check.ts")>(
        "check.ts",
      );
      const required = FEATURES.filter((f) => f.category === "required");
      const missing = (await checkFeatures(required)).find((r) => !r.supported);
      if (missing) {
        throw new Error(`${missing.feature.name} is missing: ${missing.feature.description}`);
      }
      return { type, success: true };
    }
    case criu_req_type.DUMP: {
      const o = optsFromRequest(base, req.opts, channel.peer.pid, "dump");
      const { runDump } = await load<typeof import("../cli/run_dump.ts")>(
        "cli/run_dump.ts",
      );
      await runDump(o, caller, () => {});
      return { type, success: true, dump: { restored: false } };
    }
    case criu_req_type.PAGE_SERVER: {
      // A page server of its own, in the background, for the request's images directory.
      const o = optsFromRequest(base, req.opts, channel.peer.pid, "page-server");
      const { startPageServer } = await load<typeof import("../cli/page_server.ts")>(
        "cli/page_server.ts",
      );
      const { pid, port } = await startPageServer(o);
      return { type, success: true, ps: { pid, port } };
    }
    case criu_req_type.PRE_DUMP: {
      const o = {
        ...optsFromRequest(base, req.opts, channel.peer.pid, "dump"),
        command: "pre-dump",
      };
      const { runDump } = await load<typeof import("../cli/run_dump.ts")>(
        "cli/run_dump.ts",
      );
      await runDump(o, caller, () => {});
      return { type, success: true };
    }
    case criu_req_type.RESTORE: {
      const o = optsFromRequest(base, req.opts, channel.peer.pid, "restore");
      if (Deno.env.get(SERVICE_WORKER_ENV)) {
        // The caller is neither this worker's parent nor sharing its descriptors.
        if (o.restoreSibling) {
          throw new UsageError("rst_sibling is not allowed in standalone service");
        }
        if (o.inheritFds.length) {
          throw new UsageError("inherit_fd is not allowed in standalone service");
        }
      }
      const { runRestore } = await load<typeof import("../cli/run_restore.ts")>(
        "cli/run_restore.ts",
      );
      const pid = await runRestore(o, caller, (r) => r.pid);
      return { type, success: true, restore: { pid } };
    }
    case criu_req_type.WAIT_PID: {
      const status = new Int32Array(1);
      if (libc.waitpid(req.pid, new Uint8Array(status.buffer), 0) !== req.pid) {
        throw new Error(`Unable to wait for ${req.pid}: it is not criu's child`);
      }
      return { type, success: true, status: status[0] };
    }
    default:
      throw new UsageError(`Invalid request type ${type}`);
  }
}

/** A request type deno-criu knows and does not serve yet. */
class UnsupportedRequest extends Error {}

/** The response to a request that failed with `e`. */
function failure(type: criu_req_type, e: unknown): Response {
  const message = e instanceof Error ? e.message : String(e);
  // By name: the modules that define them are loaded only for the requests that need them.
  const name = e instanceof Error ? e.name : "";
  const errno = name === "NoSuchTaskError"
    ? ESRCH
    : name === "PidTakenError"
    ? EEXIST
    : e instanceof UsageError
    ? EBADRQC
    : e instanceof UnsupportedRequest
    ? EOPNOTSUPP
    : undefined;
  return { type, success: false, crErrno: errno, crErrmsg: message.split("\n")[0] };
}
