/**
 * `criu dump --lazy-pages --port N` (criu's lazy migration): the lazy pages of the tree are
 * left out of the images (pagemap entries PE_LAZY, no data) and stay in the frozen tree, whose
 * memory this dump then hands out to `criu lazy-pages --page-server` on request (PS_IOV_GET),
 * read straight from the tasks, until that closes the session. Only then does the tree go (or
 * run on, with -R).
 *
 * @module
 */
import type { ImagesDir } from "../images/images_dir.ts";
import type { Logger } from "../log.ts";
import { type PagesToServe, servePages } from "../pagemap/page_server.ts";
import { readRemote, remotePtr } from "../syscalls/mod.ts";
import { statusReady } from "../util/status_fd.ts";

/** Where a lazy dump serves its pages. */
export interface LazyServe {
  /** `--address`: any if unset. */
  address?: string;
  /** `--port`: any free one if 0. */
  port: number;
  /** `--status-fd`: a zero byte once it listens. */
  statusFd?: number;
}

/** The lazy pages left in the frozen tree, by the tasks' ids in the images. */
export class TreePages implements PagesToServe {
  readonly #tasks = new Map<number, { pid: number; runs: { start: bigint; end: bigint }[] }>();

  /** `nrPages` pages at `vaddr` of task `pid` (`vpid` in the images) stay in it. */
  add(vpid: number, pid: number, vaddr: bigint, nrPages: number): void {
    let t = this.#tasks.get(vpid);
    if (!t) this.#tasks.set(vpid, t = { pid, runs: [] });
    t.runs.push({ start: vaddr, end: vaddr + BigInt(nrPages) * 4096n });
  }

  /** Pages held. */
  get pages(): number {
    let n = 0n;
    for (const t of this.#tasks.values()) for (const r of t.runs) n += r.end - r.start;
    return Number(n / 4096n);
  }

  get(vpid: number, vaddr: bigint, nrPages: number): Uint8Array | undefined {
    const t = this.#tasks.get(vpid);
    const r = t?.runs.find((x) => x.start <= vaddr && vaddr < x.end);
    if (!t || !r) return undefined;
    const left = Number((r.end - vaddr) / 4096n);
    const buf = new Uint8Array(Math.min(nrPages, left) * 4096);
    if (readRemote(t.pid, remotePtr(vaddr), buf) !== buf.length) return undefined;
    return buf;
  }
}

/**
 * Serves `pages` on `where` to one `criu lazy-pages` until it closes the session (an error if
 * it goes without).
 */
export async function serveTreePages(
  pages: TreePages,
  where: LazyServe,
  dir: ImagesDir,
  log: Logger,
): Promise<void> {
  const listener = Deno.listen({ hostname: where.address ?? "0.0.0.0", port: where.port });
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    log.info(`Serving ${pages.pages} lazy pages on port ${port}`);
    statusReady(where.statusFd);
    const conn = await listener.accept();
    conn.setNoDelay(true);
    listener.close();
    log.info(
      `Lazy pages: criu lazy-pages connected from ${(conn.remoteAddr as Deno.NetAddr).hostname}`,
    );
    await servePages(dir, conn, log, pages);
  } finally {
    try {
      listener.close();
    } catch {
      // closed once the client came
    }
  }
}
