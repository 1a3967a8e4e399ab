/**
 * System V shared memory mapped by the tree: each segment once, with its IPC description from
 * /proc/sysvipc/shm and its contents inline (ipcns-shm-0.img: ipc_shm_entry, then `size` bytes
 * padded to 4), as crit reads it.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  ipc_desc_entrySchema,
  type ipc_shm_entry,
  ipc_shm_entrySchema,
} from "../../proto/gen/misc_pb.ts";
import { close, fileSystemOf, HUGETLBFS_MAGIC, O, open, SHM } from "../syscalls/mod.ts";
import { isWholeAttachment, sysvAttachments, VMA, type Vma } from "../pagemap/vma.ts";
import type { DumpContext } from "./context.ts";
import { UnsupportedError } from "./file_types.ts";

/** One row of /proc/sysvipc/shm. */
export interface SysvSegment {
  key: number;
  id: number;
  mode: number;
  size: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
}

/** Parses /proc/sysvipc/shm. */
export function parseSysvShm(text: string): SysvSegment[] {
  return text.split("\n").slice(1).filter((l) => l.trim()).map((l) => {
    const f = l.trim().split(/\s+/).map(Number);
    return {
      key: f[0],
      id: f[1],
      mode: f[2],
      size: f[3],
      uid: f[7],
      gid: f[8],
      cuid: f[9],
      cgid: f[10],
    };
  });
}

/**
 * Refuses a System V attachment of task `pid` that no longer maps its whole segment (a part
 * unmapped since): shmat makes the whole. One split by mprotect is whole.
 */
export function checkSysvAttachments(pid: number, vmas: Vma[]): void {
  for (const a of sysvAttachments(vmas)) {
    const v = a.pieces[0];
    const range = `${v.start.toString(16)}-${v.end.toString(16)}`;
    const size = BigInt(Deno.statSync(`/proc/${pid}/map_files/${range}`).size);
    if (!isWholeAttachment(a, size)) {
      throw new UnsupportedError(
        `Cannot dump mapping ${range} of task ${pid}: System V segment ${a.shmid} is mapped ` +
          `there in part (unmapped since it was attached); only whole attachments are supported`,
      );
    }
  }
}

/** Records the System V segments task `pid` maps that no earlier task recorded. */
export function dumpSysvShm(ctx: DumpContext, pid: number, vmas: Vma[]): void {
  for (const v of vmas) {
    if (!(v.status & VMA.AREA_SYSVIPC) || ctx.sysvShm.has(Number(v.shmid))) continue;
    const seg = parseSysvShm(Deno.readTextFileSync("/proc/sysvipc/shm")).find((s) =>
      s.id === Number(v.shmid)
    );
    const what = `mapping ${v.start.toString(16)}-${v.end.toString(16)} of task ${pid}`;
    if (!seg) {
      throw new UnsupportedError(`Cannot dump ${what}: System V segment ${v.shmid} is gone`);
    }
    const path = `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
    const data = Deno.readFileSync(path).subarray(0, seg.size);
    const fd = open(path, O.RDONLY | O.CLOEXEC);
    let hugetlbFlag: number | undefined;
    try {
      hugetlbFlag = shmHugetlbFlag(fd, what);
    } finally {
      close(fd);
    }
    const entry: ipc_shm_entry = create(ipc_shm_entrySchema, {
      desc: create(ipc_desc_entrySchema, {
        key: seg.key >>> 0,
        uid: ctx.uid(seg.uid, what),
        gid: ctx.gid(seg.gid, what),
        cuid: ctx.uid(seg.cuid, what),
        cgid: ctx.gid(seg.cgid, what),
        mode: seg.mode,
        id: seg.id,
      }),
      size: BigInt(seg.size),
      hugetlbFlag,
    });
    ctx.sysvShm.set(seg.id, { entry, data });
  }
}

/**
 * criu's hugetlb_flag of the System V segment mapped by `fd` (a descriptor of its mapping):
 * shmget's flags for a segment of huge pages and their size (SHM_HUGETLB, the log2 of the page
 * size); undefined for one of ordinary pages.
 */
export function shmHugetlbFlag(fd: number, what: string): number | undefined {
  const fs = fileSystemOf(fd, what);
  if (fs.type !== HUGETLBFS_MAGIC) return undefined;
  return SHM.HUGETLB | (Math.log2(Number(fs.blockSize)) << SHM.HUGE_SHIFT);
}

/** ipcns-shm-0.img. */
export function writeSysvShm(ctx: DumpContext): void {
  if (!ctx.sysvShm.size) return;
  const img = ctx.image("ipcns-shm-0.img", "IPCNS_SHM");
  for (const { entry, data } of ctx.sysvShm.values()) {
    img.entry(ipc_shm_entrySchema, entry);
    img.raw(data);
    const pad = (4 - (data.length % 4)) % 4;
    if (pad) img.raw(new Uint8Array(pad));
  }
}
