/**
 * Where a dump's pages go, one object after another (criu's page_xfer): each object (a
 * process's memory, a shmem object) is opened, then its pagemap entries are written with the
 * pages of the present ones, read from a PageReader (task_pages.ts: a task's memory;
 * file_pages.ts: a shmem object).
 *
 * ```
 *            PageReader                 PageXfer
 *  TaskPages  (readv, copiers)   --->  ImagesXfer   pagemap-ID.img + pages-N.img
 *  FilePages  (shmem object)     --->  ServerXfer   a page server (criu's protocol)
 * ```
 * Images land in the images directory; the page server writes them into its own. Either end
 * says whether the parent images hold the object, so that entries may name them (PE_PARENT).
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  type pagemap_entry,
  pagemap_entrySchema,
  pagemap_headSchema,
} from "../../proto/gen/mm_pb.ts";
import type { ImageWriter, MagicName } from "../images/image.ts";
import type { ImagesDir } from "../images/images_dir.ts";
import { entryPages, pagemapName, type PageObject, type PageRun, PE_PRESENT } from "./pagemap.ts";
import { destination, type PageServerClient, PS_TYPE } from "./page_server.ts";

/** Timings and counts of one page copy. */
export interface XferStats {
  /** Pages written. */
  pages: number;
  /** Microseconds spent reading the pages. */
  readUs: number;
  /** Microseconds spent writing them. */
  writeUs: number;
}

/** The pages of one object, read on demand, by address (or offset) runs. */
export interface PageReader {
  /**
   * The pages of `runs`, in order, into a new file at `path` (back to back), unsynced (the
   * images directory's files are synced together once all are written); given up
   * when `signal` aborts (by a reader that writes beside the caller: detached).
   */
  toFile(runs: PageRun[], path: string, signal?: AbortSignal): Promise<XferStats>;
  /** The pages of `runs`, in order, handed to `sink` batch by batch. */
  toSink(runs: PageRun[], sink: (bytes: Uint8Array) => void): Promise<XferStats>;
}

/** Where a dump's pages go. */
export interface PageXfer {
  /** Whether pages go into files (PageReader.toFile), else to a stream (toSink). */
  readonly toFiles: boolean;
  /** Opens `obj`; whether the parent images hold it (entries may then say PE_PARENT). */
  open(obj: PageObject): boolean;
  /** The open object's pagemap `entries`, the pages of present ones read from `reader`. */
  write(entries: pagemap_entry[], reader: PageReader): Promise<XferStats>;
  /** Ends the dump's pages: every one durable where it went. */
  close(): void;
  /** Gives up after a failure. */
  abort(): void;
}

/** What the images end writes through: the dump's images directory and its image writers. */
export interface ImagesTarget {
  /** The images directory. */
  readonly dir: ImagesDir;
  /** The id of the next pages-N.img. */
  pagesId(): number;
  /** Opens an image, written with the dump's others. */
  image(file: string, type: MagicName): ImageWriter;
  /** Images written, by file name. */
  readonly written: string[];
}

/** The pages of present `entries`, as runs. */
export function presentRuns(entries: pagemap_entry[]): PageRun[] {
  return entries.filter((e) => e.flags & PE_PRESENT).map((e) => ({
    vaddr: e.vaddr,
    nrPages: entryPages(e),
  }));
}

/** Whether `a` and `b` take the same pages in the same order (however they are cut in runs). */
function samePages(a: PageRun[], b: PageRun[]): boolean {
  const merged = (runs: PageRun[]) => {
    const out: { start: bigint; pages: number }[] = [];
    for (const r of runs) {
      const last = out.at(-1);
      if (last && last.start + BigInt(last.pages) * 4096n === r.vaddr) last.pages += r.nrPages;
      else out.push({ start: r.vaddr, pages: r.nrPages });
    }
    return out;
  };
  const ma = merged(a), mb = merged(b);
  return ma.length === mb.length &&
    ma.every((r, i) => r.start === mb[i].start && r.pages === mb[i].pages);
}

/** Pages into the images directory: per object a pagemap image and a pages file of its own. */
export class ImagesXfer implements PageXfer {
  readonly toFiles = true;
  readonly #target: ImagesTarget;
  #name = "";

  constructor(target: ImagesTarget) {
    this.#target = target;
  }

  open(obj: PageObject): boolean {
    this.#name = pagemapName(obj);
    return this.#target.dir.parent?.has(this.#name) ?? false;
  }

  write(entries: pagemap_entry[], reader: PageReader): Promise<XferStats> {
    return this.writeAhead(presentRuns(entries), reader, Promise.resolve(entries));
  }

  /**
   * Writes the pages of `runs` of the open object into its pages file now; its pagemap
   * `entries`, which must take exactly those pages, once they come. When `signal` aborts
   * first, the pages file is removed and the write fails.
   */
  async writeAhead(
    runs: PageRun[],
    reader: PageReader,
    entries: Promise<pagemap_entry[]>,
    signal?: AbortSignal,
  ): Promise<XferStats> {
    // Taken now: the next object may be opened before the pages of this one are in.
    const name = this.#name, pagesId = this.#target.pagesId();
    const pagesFile = `pages-${pagesId}.img`;
    const path = this.#target.dir.file(pagesFile);
    let stats: XferStats, all: pagemap_entry[];
    try {
      stats = await reader.toFile(runs, path, signal);
      all = await entries;
    } catch (e) {
      if (signal?.aborted) Deno.removeSync(path);
      throw e;
    }
    if (!samePages(presentRuns(all), runs)) {
      throw new Error(`The pagemap entries of ${name} do not take the pages of ${pagesFile}`);
    }
    this.#target.written.push(pagesFile);
    const img = this.#target.image(name, "PAGEMAP");
    img.entry(pagemap_headSchema, create(pagemap_headSchema, { pagesId }));
    for (const e of all) img.entry(pagemap_entrySchema, e);
    return stats;
  }

  close(): void {}

  abort(): void {}
}

/** Pages to a page server: each entry, the pages of a present one after it. */
export class ServerXfer implements PageXfer {
  readonly toFiles = false;
  readonly #client: PageServerClient;
  #dst = 0n;

  constructor(client: PageServerClient) {
    this.#client = client;
  }

  open(obj: PageObject): boolean {
    this.#dst = destination(obj.kind === "pid" ? PS_TYPE.PID : PS_TYPE.SHMEM, obj.id);
    return this.#client.open(this.#dst);
  }

  async write(entries: pagemap_entry[], reader: PageReader): Promise<XferStats> {
    const stats: XferStats = { pages: 0, readUs: 0, writeUs: 0 };
    for (const e of entries) {
      const pages = entryPages(e);
      this.#client.add(this.#dst, e.vaddr, pages, e.flags);
      if (!(e.flags & PE_PRESENT)) continue;
      const x = await reader.toSink(
        [{ vaddr: e.vaddr, nrPages: pages }],
        (b) => this.#client.data(b),
      );
      stats.pages += x.pages;
      stats.readUs += x.readUs;
      stats.writeUs += x.writeUs;
    }
    return stats;
  }

  close(): void {
    this.#client.close();
  }

  abort(): void {
    this.#client.abort();
  }
}
