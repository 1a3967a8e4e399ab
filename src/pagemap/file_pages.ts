/**
 * The pages of a shmem object, read for a dump (a PageReader of page_xfer.ts) through a
 * descriptor of the object itself: runs are offsets in it. A last page the file ends inside is
 * padded with zeros.
 *
 * @module
 */
import { pread } from "../syscalls/mod.ts";
import type { PageRun } from "./pagemap.ts";
import { fillPagesFile } from "./pages_file.ts";
import type { PageReader, XferStats } from "./page_xfer.ts";

const PAGE = 4096;
const CHUNK = 8 << 20;

/** The pages of the file open as `fd` (`what`), by offset. */
export class FilePages implements PageReader {
  readonly #fd: number;
  readonly #what: string;

  constructor(fd: number, what: string) {
    this.#fd = fd;
    this.#what = what;
  }

  toFile(runs: PageRun[], path: string): Promise<XferStats> {
    const total = runs.reduce((n, r) => n + r.nrPages, 0) * PAGE;
    return Promise.resolve(fillPagesFile(path, total, (file) => {
      let at = 0;
      // Read straight into the file; what lies past the object's end stays zero.
      this.#copy(runs, (len, read) => read(file.subarray(at, at += len)));
    }));
  }

  toSink(runs: PageRun[], sink: (bytes: Uint8Array) => void): Promise<XferStats> {
    const stats: XferStats = { pages: 0, readUs: 0, writeUs: 0 };
    const buf = new Uint8Array(CHUNK);
    this.#copy(runs, (len, read) => {
      let t = performance.now();
      const chunk = buf.subarray(0, len);
      chunk.fill(0, read(chunk));
      stats.readUs += (performance.now() - t) * 1000;
      t = performance.now();
      sink(chunk);
      stats.writeUs += (performance.now() - t) * 1000;
      stats.pages += len / PAGE;
    });
    return Promise.resolve(stats);
  }

  /**
   * Walks `runs` in chunks of at most CHUNK bytes: `step` gets each chunk's length and a
   * function that reads it into a buffer of that length (returning the bytes the file had).
   */
  #copy(runs: PageRun[], step: (len: number, read: (into: Uint8Array) => number) => void): void {
    for (const r of runs) {
      const end = r.vaddr + BigInt(r.nrPages * PAGE);
      for (let off = r.vaddr; off < end;) {
        const len = Number(end - off < BigInt(CHUNK) ? end - off : BigInt(CHUNK));
        const at = off;
        step(len, (into) => {
          let got = 0;
          while (got < len) {
            const n = pread(this.#fd, into.subarray(got), at + BigInt(got), this.#what);
            if (n <= 0) break; // past the end of the file
            got += n;
          }
          return got;
        });
        off += BigInt(len);
      }
    }
  }
}
