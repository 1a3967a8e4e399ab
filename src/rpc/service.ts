/**
 * `criu service`: criu's RPC as a daemon on a unix SOCK_SEQPACKET socket (`--address`,
 * default ./criu_service.socket, open to anyone as criu makes it). Each connection is served
 * by a `criu swrk` of its own, started with the accepted socket, as criu forks a worker per
 * connection (Deno must not fork). A worker of the service refuses what only `swrk` allows:
 * rst_sibling and inherit_fd (the caller is not its parent and shares no descriptors).
 *
 * `-d` runs it in the background, in a session of its own: the command returns once the socket
 * listens (or with the reason it could not). `--pidfile` takes the serving process's PID,
 * `--status-fd` a zero byte once it listens.
 *
 * @module
 */
import { statusReady } from "../util/status_fd.ts";
import { type CriuOpts, UsageError } from "../cli/options.ts";
import { Logger } from "../log.ts";
import {
  accept,
  AF_UNIX,
  bindUnix,
  listen,
  readable,
  SOCK_CLOEXEC,
  SOCK_SEQPACKET,
  socket,
} from "../syscalls/socket.ts";
import { close, setCloseOnExec, writeAll } from "../syscalls/mod.ts";
import { startInBackground } from "../cli/background.ts";
import { selfCommand } from "../util/self.ts";

/** Where criu's service listens unless told (relative to its working directory). */
export const DEFAULT_SERVICE_ADDRESS = "./criu_service.socket";

/** Set in the environment of the service started again in the background (`-d`). */
const DAEMON_ENV = "DENO_CRIU_SERVICE_DAEMON";

/** Set in a worker's environment: it serves a connection of the service, not its parent. */
export const SERVICE_WORKER_ENV = "DENO_CRIU_SERVICE_WORKER";

/** `criu service` with options `o` (and `argv`, the command line, for `-d`). */
export async function serveService(o: CriuOpts, argv: readonly string[]): Promise<number> {
  if (o.restoreDetached) return await daemonize(argv);
  const log = new Logger(
    Math.min(o.logLevel, 4),
    o.logFile && o.logFile !== "-" ? o.logFile : undefined,
  );
  const address = o.address ?? DEFAULT_SERVICE_ADDRESS;
  if (!o.address) log.warn("Binding to local dir address!");
  let fd: number;
  try {
    fd = listening(address);
    if (o.pidfile) Deno.writeTextFileSync(o.pidfile, `${Deno.pid}`);
  } catch (e) {
    // A daemon's stderr is /dev/null: the command that started it says why instead.
    if (o.statusFd !== undefined && Deno.env.get(DAEMON_ENV)) {
      writeAll(o.statusFd, new TextEncoder().encode((e as Error).message), "status fd");
    }
    throw e;
  }
  log.info(`The service socket is bound to ${address}`);
  statusReady(o.statusFd);
  for (;;) {
    if (!await readable(fd)) throw new Error("The service socket is gone");
    let conn: number;
    try {
      conn = accept(fd, "criu service");
    } catch (e) {
      log.warn((e as Error).message);
      continue;
    }
    log.info("Connected.");
    try {
      // The worker inherits the connection (its close-on-exec cleared for it alone).
      setCloseOnExec(conn, false);
      const [cmd, ...args] = selfCommand();
      const worker = new Deno.Command(cmd, {
        args: [...args, ...workerArgs(o), "swrk", `${conn}`],
        env: { [SERVICE_WORKER_ENV]: "1" },
        stdin: "null",
        stdout: "null",
        stderr: "inherit",
      }).spawn();
      worker.status.then((s) => log.info(`Worker ${worker.pid} exited with ${s.code}`));
    } catch (e) {
      log.error(`Cannot start a worker: ${(e as Error).message}`);
    } finally {
      close(conn);
    }
  }
}

/** The options a worker takes from the service: its log level and configuration. */
function workerArgs(o: CriuOpts): string[] {
  const out = [`--verbosity=${o.logLevel}`];
  if (o.noDefaultConfig) out.push("--no-default-config");
  if (o.config) out.push("--config", o.config);
  return out;
}

/** A unix SOCK_SEQPACKET socket listening at `address` (anyone may connect, as criu's). */
function listening(address: string): number {
  const path = new TextEncoder().encode(address);
  if (path.length > 107) throw new UsageError(`The service address is too long: ${address}`);
  try {
    Deno.removeSync(address);
  } catch {
    // none there
  }
  const fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC);
  try {
    bindUnix(fd, path, `the service socket ${address}`);
    Deno.chmodSync(address, 0o666);
    listen(fd, 16);
  } catch (e) {
    close(fd);
    throw e;
  }
  return fd;
}

/**
 * `-d`: the service (or a page server) started again in a session of its own, stdio on
 * /dev/null; returns once it listens (0), or throws with the reason it could not.
 */
export async function daemonize(argv: readonly string[]): Promise<number> {
  await startInBackground(argv.filter((a) => a !== "-d" && a !== "--daemon"), {
    env: { [DAEMON_ENV]: "1" },
    setsid: true,
    what: "The daemon",
  });
  return 0;
}
