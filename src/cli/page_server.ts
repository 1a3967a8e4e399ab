/**
 * `criu page-server -D DIR --port N [--address A] [-d] [--status-fd FD] [--prev-images-dir P]`:
 * takes one dump's pages over TCP (pagemap/page_server.ts) into DIR, then exits. With
 * `--lazy-pages` it hands DIR's pages out instead, as `criu lazy-pages --page-server` asks. With -d it
 * goes to the background once it listens; the status descriptor gets a zero byte then.
 *
 * @module
 */
import { ImagesDir } from "../images/images_dir.ts";
import { type PagesToServe, servePages } from "../pagemap/page_server.ts";
import { LocalPages } from "../lazy/source.ts";
import { readLazyImages } from "../restore/images.ts";
import { bytesAt, writeAll } from "../syscalls/mod.ts";
import { statusReady } from "../util/status_fd.ts";
import { startInBackground } from "./background.ts";
import { daemonize } from "../rpc/service.ts";
import { dirsOf } from "./dirs.ts";
import type { CriuOpts } from "./options.ts";
import { openLog } from "./run.ts";

/** Serves one session as `o` says (`argv`: the command line, for -d). Returns the exit code. */
export async function runPageServer(o: CriuOpts, argv: readonly string[]): Promise<number> {
  if (o.restoreDetached) return await daemonize(argv);
  const dirs = dirsOf(o);
  using log = openLog(o, dirs);
  const images = new ImagesDir(dirs.images);
  // Its own parent images, to answer whether it has some (--prev-images-dir).
  if (o.prevImagesDir) images.linkParent(o.prevImagesDir);
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: o.address ?? "0.0.0.0", port: o.port, transport: "tcp" });
  } catch (e) {
    const why = `Cannot listen on port ${o.port}: ${(e as Error).message}`;
    if (o.statusFd !== undefined) writeAll(o.statusFd, new TextEncoder().encode(why), "status fd");
    throw new Error(why);
  }
  log.info(`Starting page server on port ${(listener.addr as Deno.NetAddr).port}`);
  // Started for an RPC request: its port too (it may have taken any free one).
  const port = (listener.addr as Deno.NetAddr).port;
  statusReady(o.statusFd, Deno.env.get(PS_PORT_ENV) ? `${port}\n` : undefined);
  const conn = await listener.accept();
  listener.close();
  log.info(`Page server: a dump connected from ${(conn.remoteAddr as Deno.NetAddr).hostname}`);
  let lazy: LocalPages | undefined;
  if (o.lazyPages) {
    // Each answer goes out at once: the restored task waits for it.
    (conn as Deno.TcpConn).setNoDelay(true);
    lazy = new LocalPages(readLazyImages(images).flatMap((t) => (t.task ? [t.task] : [])));
  }
  const written = await servePages(images, conn, log, lazy && pagesOf(lazy)).finally(() =>
    lazy?.close()
  );
  await images.sync();
  log.info(`Page server: ${written.length} images written; session over`);
  return 0;
}

/** What `lazy` holds, handed out as a page server does (copied out of the mapped images). */
function pagesOf(lazy: LocalPages): PagesToServe {
  return {
    get(pid, vaddr, nrPages) {
      try {
        const { at, pages } = lazy.fetch(pid, vaddr, nrPages);
        return bytesAt(at, pages * 4096);
      } catch {
        return undefined;
      }
    },
  };
}

/** Set for a page server started for an RPC request: it tells its port on its status fd. */
const PS_PORT_ENV = "DENO_CRIU_PAGE_SERVER_PORT";

/**
 * A page server started in the background as `o` says (an RPC PAGE_SERVER request's options):
 * once it listens, its PID and port.
 */
export async function startPageServer(o: CriuOpts): Promise<{ pid: number; port: number }> {
  const { pid, line } = await startInBackground([
    "page-server",
    "-D",
    o.imagesDir,
    ...(o.port ? ["--port", `${o.port}`] : []),
    ...(o.address ? ["--address", o.address] : []),
    ...(o.prevImagesDir ? ["--prev-images-dir", o.prevImagesDir] : []),
    ...(o.logFile ? ["-o", o.logFile] : []),
    ...(o.workDir ? ["-W", o.workDir] : []),
    `--verbosity=${o.logLevel}`,
  ], { env: { [PS_PORT_ENV]: "1" }, line: true, what: "The page server" });
  return { pid, port: Number(line) };
}
