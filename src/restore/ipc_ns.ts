/**
 * The tree's own IPC namespace, made by the restore helper (CLONE_NEWIPC) and filled from
 * inside the root task before any other task is made in it (their memory may attach its
 * segments): its sysctls, then each System V object with its id (the namespace's next-id
 * sysctl set just before the get call), owner, group and permissions, created under its
 * creator's ids (the root takes that effective uid and gid for the call), then its contents:
 * a segment's bytes, a queue's messages, a set's values. Last, the next ids as they were.
 *
 * @module
 */
import type { IpcNamespace } from "../dump/ipc_ns.ts";
import { IPC_SYSCTLS, readSysctlIn } from "../dump/ipc_ns.ts";
import {
  encodeIpcSet,
  errnoName,
  IPC,
  MSGBUF_HEAD,
  NR,
  O,
  remoteAdd,
  SEM,
  SHM,
  writeRemote,
} from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { isFieldSet } from "../images/protobuf.ts";
import { type ipc_desc_entry, ipc_var_entrySchema } from "../../proto/gen/misc_pb.ts";
import { RestoreError } from "./files.ts";

type Scratch = ReturnType<RemoteSyscalls["scratch"]>;

/** Writes `value` into /proc/sys/`path` inside the task of `rs`, unless it reads so already. */
function writeSysctlIn(rs: RemoteSyscalls, buf: Scratch, path: string, value: string): void {
  if (readSysctlIn(rs, buf, path).join(" ") === value) return;
  const bytes = new TextEncoder().encode(value);
  writeRemote(rs.task.pid, buf, bytes);
  const fd = rs.openFile(`/proc/sys/${path}`, O.WRONLY, remoteAdd(buf, 1024));
  try {
    const n = rs.call(NR.write, fd, buf, bytes.length);
    if (n < 0n) {
      throw new RestoreError(
        `Cannot restore sysctl ${path} = ${value} of the IPC namespace: ${errnoName(Number(-n))}`,
      );
    }
  } finally {
    rs.closeFd(fd);
  }
}

/**
 * Runs `fn` in the root with effective ids `uid` and `gid` (an object's creator's), keeping its
 * capabilities meanwhile (SECBIT_NO_SETUID_FIXUP): the next-id sysctls are only obeyed for a
 * caller with CAP_CHECKPOINT_RESTORE.
 */
function asCreator<T>(rs: RemoteSyscalls, uid: number, gid: number, fn: () => T): T {
  if (uid === 0 && gid === 0) return fn();
  const keep = -1, PR_GET_SECUREBITS = 27, PR_SET_SECUREBITS = 28, NO_SETUID_FIXUP = 1 << 2;
  const bits = rs.check(NR.prctl, "prctl(PR_GET_SECUREBITS)", PR_GET_SECUREBITS);
  rs.check(NR.prctl, "prctl(PR_SET_SECUREBITS)", PR_SET_SECUREBITS, bits | BigInt(NO_SETUID_FIXUP));
  try {
    rs.check(NR.setresgid, "setresgid", keep, gid, keep);
    rs.check(NR.setresuid, "setresuid", keep, uid, keep);
    try {
      return fn();
    } finally {
      rs.check(NR.setresuid, "setresuid", keep, 0, keep);
      rs.check(NR.setresgid, "setresgid", keep, 0, keep);
    }
  } finally {
    rs.check(NR.prctl, "prctl(PR_SET_SECUREBITS)", PR_SET_SECUREBITS, bits);
  }
}

/** Fills the IPC namespace the root task of `rs` was made in. */
export function restoreIpcNamespace(rs: RemoteSyscalls, ns: IpcNamespace): void {
  const pid = rs.task.pid;
  const buf = rs.scratch(4096);
  // A field absent from the image reads as its default (0): isFieldSet tells.
  const v = (field: (typeof IPC_SYSCTLS)[number][0]) =>
    isFieldSet(ns.vars, ipc_var_entrySchema.field[field])
      ? (ns.vars[field] as number | bigint)
      : undefined;
  writeSysctlIn(rs, buf, "kernel/sem", ns.vars.semCtls.join(" "));
  for (const [field, path] of IPC_SYSCTLS) {
    const value = v(field);
    if (field.endsWith("NextId") || value === undefined) continue;
    // auto_msgmni only reads 0 on kernels that dropped it.
    if (field === "autoMsgmni" && value === 0) continue;
    writeSysctlIn(rs, buf, path, `${value}`);
  }
  const ds = remoteAdd(buf, 2048);
  const made = (what: string, id: number, got: bigint) => {
    if (got < 0n) {
      throw new RestoreError(
        `Cannot restore ${what} ${id} of task ${pid}'s IPC namespace: ${errnoName(Number(-got))}`,
      );
    }
    if (Number(got) !== id) {
      throw new RestoreError(`${what} ${id} of task ${pid}'s IPC namespace came back as ${got}`);
    }
  };
  const set = (nr: number, what: string, id: number, bytes: Uint8Array, sem = false) => {
    writeRemote(pid, ds, bytes);
    if (sem) rs.check(nr, `${what} IPC_SET`, id, 0, IPC.SET, ds);
    else rs.check(nr, `${what} IPC_SET`, id, IPC.SET, ds);
  };

  // An object with its id (the next-id sysctl `next`), made by `get` under its creator's ids.
  const make = (next: string, what: string, d: ipc_desc_entry, get: (flags: number) => bigint) => {
    writeSysctlIn(rs, buf, `kernel/${next}`, `${d.id}`);
    const flags = (d.mode & 0o777) | IPC.CREAT | IPC.EXCL;
    made(what, d.id, asCreator(rs, d.cuid, d.cgid, () => get(flags)));
  };

  for (const { entry, data } of ns.shm) {
    const d = entry.desc!;
    // A segment of huge pages with its page size (criu's hugetlb_flag: shmget's flags).
    const huge = entry.hugetlbFlag ?? 0;
    make(
      "shm_next_id",
      "System V segment",
      d,
      (f) => rs.call(NR.shmget, d.key, entry.size, f | huge),
    );
    set(NR.shmctl, "shmctl", d.id, encodeIpcSet(d));
    if (data.length) {
      const page = huge & SHM.HUGETLB ? 2 ** ((huge >>> SHM.HUGE_SHIFT) & 0x3f) : 4096;
      const at = rs.attachShm(d.id, data.length, true, page);
      writeRemote(pid, at, data);
      rs.unmapScratch(at);
    }
    if (d.mode & SHM.LOCKED) rs.check(NR.shmctl, "shmctl(SHM_LOCK)", d.id, SHM.LOCK, 0);
  }
  for (const { entry, messages } of ns.msg) {
    const d = entry.desc!;
    make("msg_next_id", "System V message queue", d, (f) => rs.call(NR.msgget, d.key, f));
    // Its byte limit first: the messages must fit under it.
    set(NR.msgctl, "msgctl", d.id, encodeIpcSet(d, entry.qbytes));
    const longest = Math.max(0, ...messages.map((m) => m.text.length));
    const msgBuf = rs.scratch(MSGBUF_HEAD + longest);
    try {
      for (const m of messages) {
        writeRemote(pid, msgBuf, new Uint8Array(new BigUint64Array([m.mtype]).buffer));
        writeRemote(pid, remoteAdd(msgBuf, MSGBUF_HEAD), m.text);
        rs.check(NR.msgsnd, "msgsnd", d.id, msgBuf, m.text.length, IPC.NOWAIT);
      }
    } finally {
      rs.unmapScratch(msgBuf);
    }
  }
  for (const { entry, values } of ns.sem) {
    const d = entry.desc!;
    make(
      "sem_next_id",
      "System V semaphore set",
      d,
      (f) => rs.call(NR.semget, d.key, entry.nsems, f),
    );
    set(NR.semctl, "semctl", d.id, encodeIpcSet(d), true);
    const at = rs.scratch(values.byteLength);
    writeRemote(pid, at, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    rs.check(NR.semctl, "semctl(SETALL)", d.id, 0, SEM.SETALL, at);
    rs.unmapScratch(at);
  }
  // The next ids as the dump found them (each get above used one up: back to -1).
  for (const [field, path] of IPC_SYSCTLS) {
    if (!field.endsWith("NextId")) continue;
    writeSysctlIn(rs, buf, path, `${v(field) ?? -1}`);
  }
}

/** The segments marked for removal are marked again, once the tasks have them attached. */
export function removeMarkedSegments(rs: RemoteSyscalls, ns: IpcNamespace): void {
  for (const { entry } of ns.shm) {
    if (entry.desc!.mode & SHM.DEST) {
      rs.check(NR.shmctl, "shmctl(IPC_RMID)", entry.desc!.id, IPC.RMID, 0);
    }
  }
}
