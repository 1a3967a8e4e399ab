/**
 * Shared anonymous memory (MAP_SHARED | MAP_ANONYMOUS): each shmem object is dumped once, by
 * inode, whichever processes map it: pagemap-shmem-INODE.img lists its allocated pages by
 * offset in the object, their contents go to a pages-N.img of their own.
 *
 * The object is read through /proc/PID/map_files (the object itself, not one process's view
 * of it), and SEEK_DATA/SEEK_HOLE find the pages it holds: pages never touched are not stored.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { join } from "node:path";
import { pagemap_entrySchema, pagemap_headSchema } from "../../proto/gen/mm_pb.ts";
import { IMAGE_MODE } from "../images/image.ts";
import { close, O, open, pread } from "../syscalls/mod.ts";
import { tryLseek } from "../syscalls/socket.ts";
import { VMA, type Vma } from "../pagemap/vma.ts";
import type { DumpContext } from "./context.ts";
import { pagemapEntry, PE_PRESENT } from "../pagemap/pagemap.ts";
import { destination, PS_TYPE } from "../pagemap/page_server.ts";

const SEEK_DATA = 3, SEEK_HOLE = 4;
const PAGE = 4096;
const CHUNK = 8 << 20;

/** Dumps the shmem objects mapped by task `pid` that no earlier task of the tree mapped. */
export function dumpShmem(ctx: DumpContext, pid: number, vmas: Vma[]): void {
  for (const v of vmas) {
    if (!(v.status & VMA.ANON_SHARED)) continue;
    const path = `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
    dumpShmemObject(ctx, v.shmid, path);
  }
}

/**
 * Dumps the pages of the shmem-backed file at `path` (a shared mapping's map_files entry, a
 * memfd's descriptor) as object `shmid`, once per dump.
 */
export function dumpShmemObject(ctx: DumpContext, shmid: bigint, path: string): void {
  if (ctx.shmemDone.has(shmid)) return;
  ctx.shmemDone.add(shmid);
  const fd = open(path, O.RDONLY | O.CLOEXEC);
  try {
    const size = BigInt(Deno.statSync(path).size);
    const runs: { off: bigint; len: bigint }[] = [];
    for (let off = 0n; off < size;) {
      const data = tryLseek(fd, off, SEEK_DATA);
      if (data < 0n) break; // ENXIO: no data past off
      const hole = tryLseek(fd, data, SEEK_HOLE);
      const end = hole < 0n ? size : hole;
      // Whole pages: a file that ends inside a page is padded with zeros.
      const len = ((end - data + BigInt(PAGE) - 1n) / BigInt(PAGE)) * BigInt(PAGE);
      runs.push({ off: data, len });
      off = end;
    }
    // Each run's bytes, in order, to `sink`.
    const buf = new Uint8Array(CHUNK);
    let pages = 0;
    const copy = (r: { off: bigint; len: bigint }, sink: (b: Uint8Array) => void) => {
      for (let done = 0n; done < r.len;) {
        const n = Number(r.len - done < BigInt(CHUNK) ? r.len - done : BigInt(CHUNK));
        const got = pread(fd, buf.subarray(0, n), r.off + done, path);
        buf.fill(0, got, n); // past the end of the file
        sink(buf.subarray(0, n));
        done += BigInt(n);
      }
      pages += Number(r.len / BigInt(PAGE));
    };
    const server = ctx.pageServer;
    if (server) {
      // To the page server: each run, its pages after it.
      const dst = destination(PS_TYPE.SHMEM, shmid);
      server.open(dst);
      for (const r of runs) {
        server.add(dst, r.off, Number(r.len / BigInt(PAGE)), PE_PRESENT);
        copy(r, (b) => server.data(b));
      }
      ctx.stats.shpagesWritten += pages;
      ctx.log.info(`shared memory ${shmid}: ${pages} pages sent to the page server`);
      return;
    }
    const pagesId = ctx.pagesId();
    const pagesFile = `pages-${pagesId}.img`;
    using out = Deno.openSync(join(ctx.opts.imagesDir, pagesFile), {
      write: true,
      create: true,
      truncate: true,
      mode: IMAGE_MODE,
    });
    ctx.written.push(pagesFile);
    for (const r of runs) {
      copy(r, (b) => {
        let w = 0;
        while (w < b.length) w += out.writeSync(b.subarray(w));
      });
    }
    out.syncSync();
    ctx.stats.shpagesWritten += pages;
    const img = ctx.image(`pagemap-shmem-${shmid}.img`, "PAGEMAP");
    img.entry(pagemap_headSchema, create(pagemap_headSchema, { pagesId }));
    for (const r of runs) {
      img.entry(
        pagemap_entrySchema,
        pagemapEntry(r.off, Number(r.len / BigInt(PAGE))),
      );
    }
    ctx.log.info(`shared memory ${shmid}: ${pages} pages of ${size / BigInt(PAGE)}`);
  } finally {
    close(fd);
  }
}
