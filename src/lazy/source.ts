/**
 * Where a lazy restore's pages come from: the images on this machine (their pages files
 * mapped here, so that a copy into the task reads them straight from the page cache), or a
 * page server that serves them (criu's PS_IOV_GET: the dumped task's own memory, or images
 * elsewhere).
 *
 * @module
 */
import type { LazyTaskImages } from "../restore/images.ts";
import { PE_PRESENT } from "../pagemap/pagemap.ts";
import type { PageServerClient } from "../pagemap/page_server.ts";
import { addressOf, mapFileReadOnly, unmapHere } from "../syscalls/mod.ts";

/** Pages at hand: where they are in this process, and how many. */
export interface FetchedPages {
  at: bigint;
  pages: number;
}

/** A source of the pages of the images' processes. */
export interface PageSource {
  /**
   * Up to `pages` pages of process `pid` (its id in the images) from `img` (its address when
   * dumped) on, at least one: valid until the next fetch.
   */
  fetch(pid: number, img: bigint, pages: number): FetchedPages;
  /** Lets go of what it holds. */
  close(): void;
}

const PAGE = 4096n;

/** One process's present runs, in address order: where each one's pages are mapped here. */
interface Run {
  vaddr: bigint;
  end: bigint;
  at: bigint;
}

/** The pages of the images in this directory (and its parents), mapped read-only. */
export class LocalPages implements PageSource {
  readonly #maps: { addr: bigint; len: bigint }[] = [];
  readonly #runs = new Map<number, Run[]>();

  constructor(tasks: LazyTaskImages[]) {
    const mapped = new Map<string, bigint>();
    const mapFile = (path: string): bigint => {
      const had = mapped.get(path);
      if (had !== undefined) return had;
      const m = mapFileReadOnly(path);
      this.#maps.push(m);
      mapped.set(path, m.addr);
      return m.addr;
    };
    try {
      for (const t of tasks) {
        const runs: Run[] = [];
        t.pagemap.forEach((e, i) => {
          if (!(e.flags & PE_PRESENT)) return;
          const base = mapFile(t.pagesPaths[t.pageFile[i] ?? 0]);
          runs.push({
            vaddr: e.vaddr,
            end: e.vaddr + BigInt(e.nrPages) * PAGE,
            at: base + BigInt(t.pageOffsets[i]),
          });
        });
        runs.sort((a, b) => (a.vaddr < b.vaddr ? -1 : 1));
        this.#runs.set(t.pid, runs);
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  fetch(pid: number, img: bigint, pages: number): FetchedPages {
    const runs = this.#runs.get(pid) ?? [];
    let lo = 0, hi = runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (runs[mid].end <= img) lo = mid + 1;
      else hi = mid;
    }
    const r = runs[lo];
    if (!r || r.vaddr > img) {
      throw new Error(`The images hold no page of task ${pid} at 0x${img.toString(16)}`);
    }
    const left = Number((r.end - img) / PAGE);
    return { at: r.at + (img - r.vaddr), pages: Math.min(pages, left) };
  }

  close(): void {
    for (const m of this.#maps.splice(0)) unmapHere(m.addr, m.len);
  }
}

/** The pages a page server serves (PS_IOV_GET), received through one buffer. */
export class RemotePages implements PageSource {
  readonly #client: PageServerClient;
  readonly #buf: Uint8Array;

  /** Pages from `client`, at most `maxPages` a request. */
  constructor(client: PageServerClient, maxPages: number) {
    this.#client = client;
    this.#buf = new Uint8Array(maxPages * 4096);
  }

  fetch(pid: number, img: bigint, pages: number): FetchedPages {
    const n = Math.min(pages, this.#buf.length / 4096);
    const got = this.#client.get(pid, img, n, this.#buf);
    return { at: addressOf(this.#buf), pages: got };
  }

  close(): void {
    this.#client.close();
  }
}
