/**
 * A process's smaps read before the freeze, and taken once the tree is frozen only if nothing
 * changed its mappings meanwhile.
 *
 * smaps is what gives each mapping its VmFlags, and it walks every page to count them (about
 * 25 ms per GiB here): read once the tree is frozen, that walk fell inside the frozen time of
 * a dump after pre-dumps. The kernel counts the writers of a process's mmap lock (its memory
 * map's `mm_lock_seq`, two more after each), and no mapping is made, moved, split, removed or
 * has its protections or flags changed but under that lock. So:
 *
 * ```
 *  before the freeze   version v (even)   smaps read   version v again   -> kept
 *  frozen              version v still, and the same memory map           -> taken
 * ```
 * What smaps shows besides VmFlags may change without that lock: a mapped file's name (renamed,
 * deleted) and the counts of pages. The mappings taken are those /proc/PID/maps shows once the
 * tree is frozen, with the VmFlags read ahead, when both list the same mappings. Mappings whose
 * copied-on-write pages count (a packet socket's or io_uring's rings: mm.ts) are read afresh.
 *
 * @module
 */
import type { KernelBtf } from "../syscalls/btf.ts";
import { type MapsVersion, mapsVersion } from "../syscalls/bpf.ts";
import { listChildren, listThreads, type ProcMap, readProcText } from "../tree/proc.ts";
import { classifyVma, VMA } from "../pagemap/vma.ts";

/** A process's smaps read ahead, with its memory map's version then. */
export interface SmapsAhead {
  version: MapsVersion;
  text: string;
}

/**
 * Process `pid`'s smaps, read while it runs, when its memory map did not change while it was
 * read (the same version before and after, no writer inside); else undefined.
 */
export function readSmapsAhead(btf: KernelBtf, pid: number): SmapsAhead | undefined {
  try {
    const before = mapsVersion(btf, pid);
    if (!before || before.seq % 2) return undefined;
    const text = readProcText(pid, "smaps");
    const after = mapsVersion(btf, pid);
    if (!after || !sameVersion(before, after)) return undefined;
    return { version: before, text };
  } catch {
    // Gone, or the kernel cannot be read: smaps is read once frozen.
    return undefined;
  }
}

/** The text of `ahead` if process `pid`'s memory map is still the one it was read from. */
export function smapsStill(btf: KernelBtf, pid: number, ahead: SmapsAhead): string | undefined {
  try {
    const now = mapsVersion(btf, pid);
    return now && sameVersion(now, ahead.version) ? ahead.text : undefined;
  } catch {
    return undefined;
  }
}

function sameVersion(a: MapsVersion, b: MapsVersion): boolean {
  return a.mm === b.mm && a.seq === b.seq;
}

/**
 * `maps` (read once frozen) with each mapping's VmFlags from `smaps` (read ahead), if both list
 * the same mappings, none of them a mapping whose copied pages count; else undefined.
 */
export function withFlagsOf(maps: ProcMap[], smaps: ProcMap[]): ProcMap[] | undefined {
  if (maps.length !== smaps.length) return undefined;
  const out: ProcMap[] = [];
  for (let i = 0; i < maps.length; i++) {
    const m = maps[i], s = smaps[i];
    if (
      m.start !== s.start || m.end !== s.end || m.perms !== s.perms || m.offset !== s.offset ||
      m.dev !== s.dev || m.inode !== s.inode || countsCopies(m)
    ) {
      return undefined;
    }
    out.push({ ...m, vmFlags: s.vmFlags });
  }
  return out;
}

/** Whether a mapping's pages copied on write matter to its dump (mm.ts: socket and ring maps). */
function countsCopies(m: ProcMap): boolean {
  return (classifyVma(m).status & (VMA.AREA_SOCKET | VMA.AREA_IO_URING)) !== 0;
}

/**
 * Process `pid` and the processes below it as they are now (the tree a dump is about to
 * freeze; whatever it forks meanwhile is read once frozen).
 */
export function processesBelow(pid: number): number[] {
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.shift()!;
    out.push(p);
    try {
      for (const tid of listThreads(p)) todo.push(...listChildren(p, tid));
    } catch {
      // gone
    }
  }
  return out;
}
