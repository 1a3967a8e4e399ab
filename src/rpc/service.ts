/**
 * `criu service`: criu's RPC as a daemon on a unix SOCK_SEQPACKET socket (`--address`,
 * default ./criu_service.socket, open to anyone as criu makes it). Each connection is served
 * by a `criu swrk` of its own, as criu forks a worker per connection (Deno must not fork). The
 * next worker is started before the connection comes, and waits for it on a socket of its own
 * (SCM_RIGHTS): a caller does not wait for a command line to start. A worker of the service
 * refuses what only `swrk` allows: rst_sibling and inherit_fd (the caller is not its parent
 * and shares no descriptors).
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
  sendWithFds,
  SOCK_CLOEXEC,
  SOCK_SEQPACKET,
  socket,
  socketpair,
} from "../syscalls/socket.ts";
import { close, setCloseOnExec, setNice, writeAll } from "../syscalls/mod.ts";
import { startInBackground } from "../cli/background.ts";
import { selfCommand } from "../util/self.ts";

/** Where criu's service listens unless told (relative to its working directory). */
export const DEFAULT_SERVICE_ADDRESS = "./criu_service.socket";

/** Set in the environment of the service started again in the background (`-d`). */
const DAEMON_ENV = "DENO_CRIU_SERVICE_DAEMON";

/** Set in a worker's environment: it serves a connection of the service, not its parent. */
export const SERVICE_WORKER_ENV = "DENO_CRIU_SERVICE_WORKER";

/**
 * Set in a worker started ahead: its `swrk FD` is a socket the connection comes on (a message
 * holding its descriptor), or its end (the service gone).
 */
export const SERVICE_HANDOFF_ENV = "DENO_CRIU_SERVICE_HANDOFF";

/** A worker started ahead of its connection, and the socket that hands it over. */
interface Spare {
  pid: number;
  sock: number;
}

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
  let spare = startSpare(o, log);
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
      if (!handOver(spare, conn, log)) startWorker(o, log, conn, []);
    } catch (e) {
      log.error(`Cannot start a worker: ${(e as Error).message}`);
    } finally {
      close(conn);
      if (spare) close(spare.sock);
      spare = startSpare(o, log);
    }
  }
}

/** Gives connection `conn` to the worker started ahead; false when there is none alive. */
function handOver(spare: Spare | undefined, conn: number, log: Logger): boolean {
  if (!spare) return false;
  // Its threads run as the service's again (setpriority names one thread at a time).
  const nice = ownNice();
  try {
    for (const t of Deno.readDirSync(`/proc/${spare.pid}/task`)) setNice(Number(t.name), nice);
  } catch (e) {
    log.warn(`Worker ${spare.pid} started ahead keeps its low priority: ${(e as Error).message}`);
  }
  try {
    sendWithFds(spare.sock, new Uint8Array([1]), [conn], `a connection to worker ${spare.pid}`);
  } catch (e) {
    log.warn(`Worker ${spare.pid} started ahead is gone: ${(e as Error).message}`);
    return false;
  }
  log.info(`Worker ${spare.pid} (started ahead) took the connection`);
  return true;
}

/** The next connection's worker, started now; undefined when it cannot be. */
function startSpare(o: CriuOpts, log: Logger): Spare | undefined {
  let pair: [number, number];
  try {
    pair = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC);
  } catch (e) {
    log.warn(`Cannot start a worker ahead: ${(e as Error).message}`);
    return undefined;
  }
  const [sock, theirs] = pair;
  try {
    const worker = startWorker(o, log, theirs, [[SERVICE_HANDOFF_ENV, "1"]]);
    // It starts while a connection may be served: at the lowest priority, its threads made
    // from its first (which inherit it) until it gets its connection.
    try {
      setNice(worker.pid, 19);
    } catch {
      // gone already: the connection goes to a worker started then
    }
    return { pid: worker.pid, sock };
  } catch (e) {
    log.warn(`Cannot start a worker ahead: ${(e as Error).message}`);
    close(sock);
    return undefined;
  } finally {
    close(theirs);
  }
}

/** The service's own nice value (/proc/self/stat, field 19). */
function ownNice(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
}

/** A `criu swrk` on socket `fd`, which it inherits (its close-on-exec cleared for it alone). */
function startWorker(
  o: CriuOpts,
  log: Logger,
  fd: number,
  env: [string, string][],
): Deno.ChildProcess {
  setCloseOnExec(fd, false);
  try {
    const [cmd, ...args] = selfCommand();
    const worker = new Deno.Command(cmd, {
      args: [...args, ...workerArgs(o), "swrk", `${fd}`],
      env: Object.fromEntries([[SERVICE_WORKER_ENV, "1"], ...env]),
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    worker.status.then((s) => log.info(`Worker ${worker.pid} exited with ${s.code}`));
    return worker;
  } finally {
    setCloseOnExec(fd, true);
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
