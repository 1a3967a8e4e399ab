/**
 * `criu lazy-pages -D DIR [--page-server --address A --port N] [-d] [--status-fd FD]`: the
 * daemon of a lazy restore (lazy/daemon.ts). It listens on lazy-pages.socket in the work
 * directory for `criu restore --lazy-pages`, takes a userfaultfd from each restored process, and
 * brings their pages in from DIR's images, or from the page server at A:N, until every process
 * has all of them.
 *
 * @module
 */
import { ImagesDir } from "../images/images_dir.ts";
import { readLazyImages } from "../restore/images.ts";
import { LAZY_HELLO_PARENTS, LAZY_PAGES_SOCKET, LazyDaemon, lazyHello } from "../lazy/daemon.ts";
import { LocalPages, type PageSource, RemotePages } from "../lazy/source.ts";
import { PageServerClient } from "../pagemap/page_server.ts";
import { close, writeAll } from "../syscalls/mod.ts";
import {
  accept,
  AF_UNIX,
  bindUnix,
  listen,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  socket,
} from "../syscalls/socket.ts";
import { daemonize } from "../rpc/service.ts";
import { statusReady } from "../util/status_fd.ts";
import { DumpGuard } from "../dump/guard.ts";
import { dirsOf } from "./dirs.ts";
import type { CriuOpts } from "./options.ts";
import { openLog } from "./run.ts";

/** The most pages one request to a page server asks for. */
const REMOTE_MAX_PAGES = 1024;

/** Serves one lazy restore as `o` says (`argv`: the command line, for -d). The exit code. */
export async function runLazyPages(o: CriuOpts, argv: readonly string[]): Promise<number> {
  if (o.restoreDetached) return await daemonize(argv);
  const dirs = dirsOf(o);
  using log = openLog(o, dirs);
  // The socket by its name in the work directory, as criu's restore looks for it there (and
  // a long path would not fit a socket address).
  Deno.chdir(dirs.work);
  try {
    Deno.removeSync(LAZY_PAGES_SOCKET);
  } catch {
    // none yet
  }
  const listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC);
  let conn = -1;
  let source: PageSource | undefined;
  let guard: DumpGuard | undefined;
  try {
    bindUnix(listener, new TextEncoder().encode(LAZY_PAGES_SOCKET), LAZY_PAGES_SOCKET);
    listen(listener, 10);
    log.info(`Waiting for the restore on ${dirs.work}/${LAZY_PAGES_SOCKET}`);
    statusReady(o.statusFd);
    // Should the daemon die before every process has all its pages, they die too.
    guard = await DumpGuard.start();
    conn = accept(listener, LAZY_PAGES_SOCKET);
    // Pages of the parent images come lazily too when they are read here (a page server
    // serves what it was told).
    const parents = !o.pageServer;
    writeAll(conn, lazyHello(parents ? LAZY_HELLO_PARENTS : 0), LAZY_PAGES_SOCKET);
    // The images are read once the restore comes: the daemon may wait for them (started
    // before the dump that writes them, as a migration does).
    const images = readLazyImages(new ImagesDir(dirs.images));
    source = o.pageServer
      ? new RemotePages(PageServerClient.connect(o.address, o.port), REMOTE_MAX_PAGES)
      : new LocalPages(images.flatMap((t) => (t.task ? [t.task] : [])));
    const stats = new LazyDaemon(log, parents, guard).run(
      conn,
      new Map(images.map((t) => [t.pid, t.task])),
      source,
    );
    log.info(
      `Lazy pages done: ${stats.processes} processes (${stats.forks} forked), ` +
        `${stats.faults} faults, ${stats.pagesCopied} pages copied, ${stats.pagesZeroed} zero-filled`,
    );
    const done = source;
    source = undefined;
    done.close();
    // Pages missing: the guard kills those processes as the daemon fails.
    if (stats.errors) throw new Error(`${stats.errors} lazy pages could not be brought in`);
    // Every process has all its pages (or has gone): nothing left to guard.
    await guard.finish();
    return 0;
  } finally {
    // After a failure the first error tells; the page server's last answer does not matter.
    try {
      source?.close();
    } catch {
      // the connection went with the failure
    }
    if (conn >= 0) close(conn);
    close(listener);
  }
}
