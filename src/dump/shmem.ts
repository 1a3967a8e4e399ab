/**
 * Shared anonymous memory (MAP_SHARED | MAP_ANONYMOUS) and memfds: each shmem object is dumped
 * once, by inode, whichever processes map or hold it: pagemap-shmem-INODE.img lists its
 * allocated pages by offset in the object, their contents go to a pages-N.img of their own (or
 * to the page server), once every process is collected, as criu dumps them.
 *
 * The object is read through /proc/PID/map_files or /proc/PID/fd (the object itself, not one
 * process's view of it), and SEEK_DATA/SEEK_HOLE find the pages it holds: pages never touched
 * are not stored.
 *
 * @module
 */
import { close, O, open } from "../syscalls/mod.ts";
import { tryLseek } from "../syscalls/socket.ts";
import { VMA, type Vma } from "../pagemap/vma.ts";
import type { DumpContext } from "./context.ts";
import { pagemapEntry, type PageRun } from "../pagemap/pagemap.ts";
import { FilePages } from "../pagemap/file_pages.ts";

const SEEK_DATA = 3, SEEK_HOLE = 4;
const PAGE = 4096n;

/** Notes the shmem objects mapped by task `pid`, to dump (writeShmem). */
export function dumpShmem(ctx: DumpContext, pid: number, vmas: Vma[]): void {
  for (const v of vmas) {
    if (!(v.status & VMA.ANON_SHARED)) continue;
    const path = `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
    dumpShmemObject(ctx, v.shmid, path);
  }
}

/**
 * Notes the shmem-backed file at `path` (a shared mapping's map_files entry, a memfd's
 * descriptor: there as long as the tree is frozen) as object `shmid`, to dump once.
 */
export function dumpShmemObject(ctx: DumpContext, shmid: bigint, path: string): void {
  if (!ctx.shmemObjects.has(shmid)) ctx.shmemObjects.set(shmid, path);
}

/** Dumps the pages of every shmem object noted, where the dump's pages go. */
export async function writeShmem(ctx: DumpContext): Promise<void> {
  for (const [shmid, path] of ctx.shmemObjects) {
    const fd = open(path, O.RDONLY | O.CLOEXEC);
    try {
      const size = BigInt(Deno.statSync(path).size);
      const runs: PageRun[] = [];
      for (let off = 0n; off < size;) {
        const data = tryLseek(fd, off, SEEK_DATA);
        if (data < 0n) break; // ENXIO: no data past off
        const hole = tryLseek(fd, data, SEEK_HOLE);
        const end = hole < 0n ? size : hole;
        // Whole pages: a file that ends inside a page is padded with zeros.
        runs.push({ vaddr: data, nrPages: Number((end - data + PAGE - 1n) / PAGE) });
        off = end;
      }
      ctx.pageXfer.open({ kind: "shmem", id: shmid });
      const entries = runs.map((r) => pagemapEntry(r.vaddr, r.nrPages));
      const xferred = await ctx.pageXfer.write(entries, new FilePages(fd, path));
      ctx.stats.shpagesWritten += xferred.pages;
      ctx.log.info(`shared memory ${shmid}: ${xferred.pages} pages of ${size / PAGE}`);
    } finally {
      close(fd);
    }
  }
}
