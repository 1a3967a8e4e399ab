/**
 * The vDSO of the images against this kernel's: criu's images (and ours) carry the vDSO's
 * pages, so a restore can tell whether the code the task's libc points into is the same.
 *
 * @module
 */
import { PE_PRESENT } from "../pagemap/pagemap.ts";
import { VMA } from "../pagemap/vma.ts";
import { parseMaps } from "../tree/proc.ts";
import type { TaskImages } from "./images.ts";
import { VdsoMismatchError } from "./memory.ts";

/**
 * Refuses images whose vDSO code differs from this kernel's (the dump carries its pages, as
 * criu's do): the task's libc keeps pointers into it, so another build cannot stand in for it.
 */
export function checkVdsoCode(task: TaskImages): void {
  const v = task.mm.vmas.find((x) => x.status & VMA.AREA_VDSO);
  if (!v) return;
  const i = task.pagemap.findIndex((e) => e.vaddr === v.start && e.flags & PE_PRESENT);
  if (i < 0) return; // images without its pages: the layout check alone
  const len = Number(v.end - v.start);
  if (task.pagemap[i].nrPages * 4096 < len) return;
  const live = ourVdso();
  if (!live || live.length !== len) return; // pairSpecials says why
  const dumped = new Uint8Array(len);
  using pages = Deno.openSync(task.pagesPaths[task.pageFile[i]] ?? task.pagesPath);
  pages.seekSync(task.pageOffsets[i], Deno.SeekMode.Start);
  readFull(pages, dumped);
  if (!dumped.every((b, k) => b === live[k])) {
    throw new VdsoMismatchError("its code differs from this kernel's vDSO");
  }
}

let vdso: Uint8Array | null | undefined;

/** criu's own vDSO (this kernel's), read once; null without one. */
function ourVdso(): Uint8Array | null {
  if (vdso !== undefined) return vdso;
  const here = parseMaps(Deno.readTextFileSync("/proc/self/maps")).find((m) => m.path === "[vdso]");
  if (!here) return vdso = null;
  vdso = new Uint8Array(Number(here.end - here.start));
  using mem = Deno.openSync("/proc/self/mem");
  mem.seekSync(here.start, Deno.SeekMode.Start);
  readFull(mem, vdso);
  return vdso;
}

function readFull(f: Deno.FsFile, buf: Uint8Array): void {
  for (let off = 0; off < buf.length;) {
    const n = f.readSync(buf.subarray(off));
    if (!n) throw new Error("short read");
    off += n;
  }
}
