/**
 * System V shared memory for a restore: each segment the tasks map must exist, with its IPC
 * id, before their memory is rebuilt (the restorer blob attaches it with shmat). A segment that
 * still exists with its key and size is reused; otherwise it is made again with that id
 * (kernel.shm_next_id picks the id of the next shmget). Its contents are written back, and a
 * segment that was marked for removal is marked again once attached.
 *
 * @module
 */
import type { ipc_shm_entry } from "../../proto/gen/misc_pb.ts";
import { parseSysvShm } from "../dump/sysv.ts";
import { NR, syscall } from "../syscalls/mod.ts";
import { RestoreError } from "./files.ts";

const IPC_CREAT = 0o1000, IPC_EXCL = 0o2000, IPC_RMID = 0, SHM_DEST = 0o1000;

/** Makes (or finds) segment `id` and writes its dumped contents. */
export function ensureSysvSegment(entry: ipc_shm_entry, data: Uint8Array): void {
  const d = entry.desc!;
  const size = Number(entry.size);
  const live = parseSysvShm(Deno.readTextFileSync("/proc/sysvipc/shm")).find((s) => s.id === d.id);
  if (live && (live.key >>> 0 !== d.key || live.size !== size)) {
    throw new RestoreError(
      `Cannot restore System V segment ${d.id}: the id is taken by another segment (key ${live.key})`,
    );
  }
  if (!live) {
    // The next shmget takes this id; the kernel forgets it (back to -1) once used.
    Deno.writeTextFileSync("/proc/sys/kernel/shm_next_id", `${d.id}`);
    const got = Number(
      syscall(
        NR.shmget,
        "shmget",
        `System V segment ${d.id}`,
        d.key,
        size,
        IPC_CREAT | IPC_EXCL | (d.mode & 0o777) | (entry.hugetlbFlag ?? 0),
      ),
    );
    if (got !== d.id) throw new RestoreError(`System V segment ${d.id} came back as ${got}`);
  }
  const addr = syscall(NR.shmat, "shmat", `System V segment ${d.id}`, d.id, 0, 0);
  try {
    const view = new Uint8Array(
      Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(addr)!, size),
    );
    view.set(data.subarray(0, size));
  } finally {
    syscall(NR.shmdt, "shmdt", `System V segment ${d.id}`, addr);
  }
}

/** Marks again for removal the segments that were (once the tasks have them attached). */
export function markSysvRemoved(entries: Iterable<ipc_shm_entry>): void {
  for (const e of entries) {
    if (e.desc!.mode & SHM_DEST) {
      syscall(
        NR.shmctl,
        "shmctl(IPC_RMID)",
        `System V segment ${e.desc!.id}`,
        e.desc!.id,
        IPC_RMID,
        0,
      );
    }
  }
}
