/**
 * VMAs: mappings from /proc/PID/smaps classified the way CRIU's images describe them.
 *
 * @module
 */
import type { ProcMap } from "../tree/proc.ts";

/** CRIU's `vma_entry.status` bits. */
export const VMA = {
  AREA_REGULAR: 1 << 0,
  AREA_STACK: 1 << 1,
  AREA_VSYSCALL: 1 << 2,
  AREA_VDSO: 1 << 3,
  AREA_HEAP: 1 << 5,
  FILE_PRIVATE: 1 << 6,
  FILE_SHARED: 1 << 7,
  ANON_SHARED: 1 << 8,
  ANON_PRIVATE: 1 << 9,
  AREA_SYSVIPC: 1 << 10,
  AREA_SOCKET: 1 << 11,
  AREA_VVAR: 1 << 12,
  AREA_AIORING: 1 << 13,
  AREA_MEMFD: 1 << 14,
  /** A guard region (MADV_GUARD_INSTALL): an entry of its own, inside a mapping. */
  AREA_GUARD: 1 << 16,
  /** Ours (criu has none): an io_uring instance's rings, mapped through the instance. */
  AREA_IO_URING: 1 << 24,
  AREA_UNSUPP: 1 << 31,
} as const;

/** mmap prot and flags bits used in `vma_entry`. */
export const PROT = { READ: 1, WRITE: 2, EXEC: 4 } as const;
/** mmap flags. */
export const MAP = {
  SHARED: 1,
  PRIVATE: 2,
  /** A mapping type of its own: its pages may be dropped under memory pressure. */
  DROPPABLE: 8,
  TYPE: 0xf,
  ANONYMOUS: 0x20,
  GROWSDOWN: 0x100,
  LOCKED: 0x2000,
  NORESERVE: 0x4000,
  HUGETLB: 0x40000,
} as const;

/** MAP_HUGE_SHIFT: a hugetlb mapping's page size, as log2, in the flags' top bits. */
const MAP_HUGE_SHIFT = 26;

/** The default huge page size, as log2 (Hugepagesize in /proc/meminfo). */
function hugePageShift(): number {
  const kb = Number(/Hugepagesize:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/meminfo"))?.[1]);
  return Math.log2((kb || 2048) * 1024);
}

/** madvise advice numbers recorded in `vma_entry.madv` as `1 << advice`. */
const MADV_BY_VMFLAG: Record<string, number> = {
  rr: 1, // VM_RAND_READ ⇐ MADV_RANDOM
  sr: 2, // VM_SEQ_READ ⇐ MADV_SEQUENTIAL
  dc: 10, // VM_DONTCOPY ⇐ MADV_DONTFORK
  mg: 12, // VM_MERGEABLE ⇐ MADV_MERGEABLE
  hg: 14, // VM_HUGEPAGE ⇐ MADV_HUGEPAGE
  nh: 15, // VM_NOHUGEPAGE ⇐ MADV_NOHUGEPAGE
  dd: 16, // VM_DONTDUMP ⇐ MADV_DONTDUMP
  wf: 18, // VM_WIPEONFORK ⇐ MADV_WIPEONFORK
};

/** A mapping, classified. */
export interface Vma {
  start: bigint;
  end: bigint;
  /** File offset in bytes (CRIU stores bytes, not pages). */
  pgoff: bigint;
  prot: number;
  flags: number;
  status: number;
  madv: bigint;
  /** Backing file path for file mappings, "" otherwise. */
  path: string;
  /** Inode of the shmem object of a shared anonymous mapping, 0 otherwise. */
  shmid: bigint;
  /** The raw maps line it came from. */
  map: ProcMap;
  /** Why it cannot be dumped, when it cannot. */
  unsupported?: string;
}

/** Number of pages in a VMA. */
export function vmaPages(v: Vma): number {
  return Number((v.end - v.start) / 4096n);
}

/**
 * The mapping of `vmas` that holds `addr`, or undefined. `vmas` in address order (as the kernel
 * lists them, as images hold them) are searched by halves; others one by one.
 */
export function vmaAt<T extends { start: bigint; end: bigint }>(
  vmas: readonly T[],
  addr: bigint,
): T | undefined {
  let lo = 0, hi = vmas.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (vmas[mid].end <= addr) lo = mid + 1;
    else hi = mid;
  }
  const v = vmas[lo];
  if (v && v.start <= addr && addr < v.end) return v;
  return vmas.find((x) => x.start <= addr && addr < x.end);
}

/**
 * Whether the VMA's private pages belong in the dump (anonymous or COW'd file pages; not those
 * of a droppable mapping).
 */
export function vmaHasPrivatePages(v: Vma): boolean {
  // An AIO ring's pages: its header and events (criu dumps them as a private mapping's).
  if (v.status & VMA.AREA_AIORING) return true;
  if (!(v.status & VMA.AREA_REGULAR)) return false;
  if (v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR)) return false;
  // The kernel may drop a MAP_DROPPABLE mapping's pages at any time: not carried (as criu).
  if ((v.flags & MAP.TYPE) === MAP.DROPPABLE) return false;
  return (v.status & (VMA.ANON_PRIVATE | VMA.FILE_PRIVATE)) !== 0 || isPrivateShmem(v);
}

/** A private mapping of a shared memory object: its own pages are those it copied on write. */
export function isPrivateShmem(v: Pick<Vma, "status" | "flags">): boolean {
  return (v.status & VMA.ANON_SHARED) !== 0 && (v.flags & MAP.TYPE) === MAP.PRIVATE;
}

/**
 * The mappings as criu lists them: the vvar pages in one VMA, however many the kernel shows
 * (since 6.13 it splits off [vvar_vclock]).
 */
export function mergeVvar(vmas: Vma[]): Vma[] {
  const out: Vma[] = [];
  for (const v of vmas) {
    const last = out.at(-1);
    if (last && last.status & VMA.AREA_VVAR && v.status & VMA.AREA_VVAR && last.end === v.start) {
      out[out.length - 1] = { ...last, end: v.end };
    } else {
      out.push(v);
    }
  }
  return out;
}

/** Classifies one smaps mapping. */
export function classifyVma(m: ProcMap): Vma {
  const prot = (m.perms[0] === "r" ? PROT.READ : 0) | (m.perms[1] === "w" ? PROT.WRITE : 0) |
    (m.perms[2] === "x" ? PROT.EXEC : 0);
  const shared = m.perms[3] === "s";
  let flags: number = shared ? MAP.SHARED : MAP.PRIVATE;
  // mmap flags the mapping shows in VmFlags, as criu reads them.
  if (m.vmFlags.has("gd")) flags |= MAP.GROWSDOWN;
  if (m.vmFlags.has("lo")) flags |= MAP.LOCKED;
  if (m.vmFlags.has("nr")) flags |= MAP.NORESERVE;
  if (m.vmFlags.has("dp")) flags = (flags & ~MAP.TYPE) | MAP.DROPPABLE;
  let madv = 0n;
  for (const f of m.vmFlags) {
    const advice = MADV_BY_VMFLAG[f];
    if (advice !== undefined) madv |= 1n << BigInt(advice);
  }
  const v: Vma = {
    shmid: 0n,
    start: m.start,
    end: m.end,
    pgoff: m.offset,
    prot,
    flags,
    status: 0,
    madv,
    path: "",
    map: m,
  };
  const anon = () => {
    v.flags |= MAP.ANONYMOUS;
    v.pgoff = 0n;
    v.status = VMA.AREA_REGULAR | (shared ? VMA.ANON_SHARED : VMA.ANON_PRIVATE);
  };
  switch (m.path) {
    // The kernel's special mappings, flagged as criu flags them (anonymous private).
    case "[vsyscall]":
      anon();
      v.status = VMA.AREA_VSYSCALL | VMA.ANON_PRIVATE;
      return v;
    case "[vdso]":
      anon();
      v.status = VMA.AREA_REGULAR | VMA.AREA_VDSO | VMA.ANON_PRIVATE;
      return v;
    case "[vvar]":
    case "[vvar_vclock]":
      anon();
      v.status = VMA.AREA_REGULAR | VMA.AREA_VVAR | VMA.ANON_PRIVATE;
      return v;
    case "[heap]":
      anon();
      v.status |= VMA.AREA_HEAP;
      return v;
    case "[stack]":
      anon();
      v.status |= VMA.AREA_STACK;
      return v;
  }
  if (m.vmFlags.has("io") || m.vmFlags.has("pf")) {
    v.status = VMA.AREA_UNSUPP;
    v.unsupported = "device (VM_IO/VM_PFNMAP) mapping";
    return v;
  }
  if (m.vmFlags.has("lf")) {
    v.status = VMA.AREA_UNSUPP;
    v.unsupported = "mapping locked on fault (mlock2 MLOCK_ONFAULT)";
    return v;
  }
  if (m.vmFlags.has("ht")) {
    // Anonymous hugetlb memory: private, or a hugetlbfs object of its own when shared (dumped
    // and made again as shared memory is, by inode); a hugetlb memfd, mapped as a memfd is; a
    // file on a hugetlbfs mount, mapped again from it as any file is (its contents stay in
    // it; a private mapping's copied pages are dumped); a System V segment of them. A deleted
    // hugetlbfs file is refused.
    if (m.path.startsWith("/memfd:") && m.path.endsWith(" (deleted)")) {
      v.flags |= MAP.HUGETLB | (hugePageShift() << MAP_HUGE_SHIFT);
      v.path = m.path;
      v.status = VMA.AREA_REGULAR | VMA.AREA_MEMFD |
        (shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE);
      return v;
    }
    if (m.path.startsWith("/") && !m.path.endsWith(" (deleted)")) {
      v.flags |= MAP.HUGETLB | (hugePageShift() << MAP_HUGE_SHIFT);
      v.path = m.path;
      v.status = VMA.AREA_REGULAR | (shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE);
      return v;
    }
    if (shared && m.path.startsWith("/SYSV")) {
      // A System V segment of huge pages: attached again as any segment (its contents and
      // page size are its IPC namespace's; the inode column is its IPC id).
      v.flags |= MAP.HUGETLB | (hugePageShift() << MAP_HUGE_SHIFT);
      v.status = VMA.AREA_REGULAR | VMA.AREA_SYSVIPC;
      v.shmid = BigInt(m.inode);
      return v;
    }
    if (m.path !== "/anon_hugepage (deleted)") {
      v.status = VMA.AREA_UNSUPP;
      v.unsupported = `hugetlb mapping of ${m.path}`;
      return v;
    }
    v.flags |= MAP.HUGETLB | (hugePageShift() << MAP_HUGE_SHIFT);
    v.flags |= MAP.ANONYMOUS;
    v.status = VMA.AREA_REGULAR | (shared ? VMA.ANON_SHARED : VMA.ANON_PRIVATE);
    if (shared) v.shmid = BigInt(m.inode);
    else v.pgoff = 0n;
    return v;
  }
  if (m.path === "") {
    anon();
    return v;
  }
  if (shared && (m.path === "/dev/zero (deleted)" || m.path.startsWith("[anon_shmem:"))) {
    // MAP_SHARED | MAP_ANONYMOUS: a shmem object, dumped once by inode (dumpShmem).
    v.flags |= MAP.ANONYMOUS;
    v.status = VMA.AREA_REGULAR | VMA.ANON_SHARED;
    v.shmid = BigInt(m.inode);
  } else if (m.path.startsWith("[anon:")) {
    anon();
  } else if (m.inode === 0 && m.path.startsWith("[")) {
    v.status = VMA.AREA_UNSUPP;
    v.unsupported = `special mapping ${m.path}`;
  } else if (shared && m.path.startsWith("/SYSV")) {
    // A System V segment: the inode column is its IPC id.
    v.status = VMA.AREA_REGULAR | VMA.AREA_SYSVIPC;
    v.shmid = BigInt(m.inode);
  } else if (m.path.startsWith("/memfd:") && m.path.endsWith(" (deleted)")) {
    // A memfd: mapped like a file, the file being the memfd (dumped with its inode).
    v.path = m.path;
    v.status = VMA.AREA_REGULAR | VMA.AREA_MEMFD | (shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE);
  } else if (m.path === "/dev/zero (deleted)") {
    // A private mapping of a shmem object (mapped through /proc/PID/map_files): the object is
    // dumped as for a shared one, the pages the mapping copied on write as its own.
    v.flags |= MAP.ANONYMOUS;
    v.status = VMA.AREA_REGULAR | VMA.ANON_SHARED;
    v.shmid = BigInt(m.inode);
  } else if (m.path === "/[aio] (deleted)" && m.dev.startsWith("00:")) {
    // An AIO context's ring (io_setup): carried with its pages when the context is idle
    // (dump/aio.ts), made again by io_setup and moved here.
    v.status = VMA.AREA_AIORING;
  } else if (m.path.startsWith("/")) {
    // A deleted file keeps " (deleted)" in its path: the dump carries it (ghost, link remap).
    v.path = m.path;
    v.status = VMA.AREA_REGULAR | (shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE);
  } else if (m.path === "anon_inode:[io_uring]") {
    // An io_uring instance's rings: the dump finds the instance (mm.ts, ringMappings).
    v.path = m.path;
    v.status = VMA.AREA_REGULAR | VMA.AREA_IO_URING;
  } else if (m.path === `socket:[${m.inode}]`) {
    // A packet socket's rings (the only sockets that map): the dump finds the socket.
    v.path = m.path;
    v.status = VMA.AREA_REGULAR | VMA.AREA_SOCKET;
  } else {
    v.status = VMA.AREA_UNSUPP;
    v.unsupported = `mapping of ${m.path}`;
  }
  return v;
}

/** One shmat of a System V segment: where the segment starts, and the mappings left of it. */
export interface SysvAttachment<T> {
  shmid: bigint;
  /** The segment's first byte (a mapping's start less its offset into the segment). */
  base: bigint;
  /** Its mappings, in order (mprotect splits one attach into several). */
  pieces: T[];
}

/** The System V attachments among `vmas` (in order): mappings grouped by segment and base. */
export function sysvAttachments<
  T extends { start: bigint; end: bigint; pgoff: bigint; shmid: bigint; status: number },
>(vmas: readonly T[]): SysvAttachment<T>[] {
  const out = new Map<string, SysvAttachment<T>>();
  for (const v of vmas) {
    if (!(v.status & VMA.AREA_SYSVIPC)) continue;
    const base = v.start - v.pgoff;
    const key = `${v.shmid}@${base}`;
    const a = out.get(key) ?? { shmid: v.shmid, base, pieces: [] };
    a.pieces.push(v);
    out.set(key, a);
  }
  return [...out.values()];
}

/** Whether attachment `a` still maps its whole segment of `size` bytes, without a hole. */
export function isWholeAttachment<T extends { start: bigint; end: bigint }>(
  a: SysvAttachment<T>,
  size: bigint,
): boolean {
  let at = a.base;
  for (const v of [...a.pieces].sort((x, y) => (x.start < y.start ? -1 : 1))) {
    if (v.start !== at) return false;
    at = v.end;
  }
  return at === a.base + ((size + 4095n) & ~4095n);
}

/**
 * Whether a lazy restore can fill mapping `v` page by page on first touch: private anonymous
 * memory of its own (not a private mapping of a shared memory object, whose pages would show
 * through), neither locked nor hugetlb, nor a special mapping.
 */
export function lazyFillable(v: { status: number; flags: number }): boolean {
  const MAP_HUGETLB = 0x40000;
  return (v.status & VMA.AREA_REGULAR) !== 0 && (v.status & VMA.ANON_PRIVATE) !== 0 &&
    !(v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR | VMA.AREA_AIORING | VMA.AREA_IO_URING)) &&
    !(v.flags & (MAP.LOCKED | MAP_HUGETLB));
}
