/**
 * An IPC namespace of the tree's own (the root made it): its sysctls and every System V object
 * in it (shared memory segments with their contents, message queues with their messages,
 * semaphore sets with their values), read inside the root task, whose namespace the calls and
 * the /proc/sys files answer for. Written as criu writes them: ipcns-var-ID.img,
 * ipcns-shm-ID.img (each segment's bytes after its entry, padded to 4), ipcns-msg-ID.img (each
 * queue's messages after it, each an ipc_msg and its text padded to 8) and ipcns-sem-ID.img
 * (each set's u16 values after it, padded to 8), ID being the namespace's id in ids-PID.img.
 *
 * POSIX message queues live in the namespace's mqueue filesystem, which nothing outside shows:
 * as criu, only their limits (fs/mqueue) are carried.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  ipc_desc_entrySchema,
  type ipc_msg_entry,
  ipc_msg_entrySchema,
  ipc_msgSchema,
  type ipc_sem_entry,
  ipc_sem_entrySchema,
  type ipc_shm_entry,
  ipc_shm_entrySchema,
  type ipc_var_entry,
  ipc_var_entrySchema,
} from "../../proto/gen/misc_pb.ts";
import {
  close,
  decodeMsgStat,
  decodeSemStat,
  decodeShmStat,
  IPC,
  IPC_DS_SIZE,
  type IpcPerm,
  MSG,
  MSGBUF_HEAD,
  NR,
  O,
  readRemote,
  remoteAdd,
  type RemotePtr,
  SEM,
  SHM,
  tryOpen,
} from "../syscalls/mod.ts";
import { InfectError, type RemoteSyscalls } from "../tree/infect.ts";
import { readProcText } from "../tree/proc.ts";
import type { DumpContext } from "./context.ts";
import { UnsupportedError } from "./file_types.ts";
import { shmHugetlbFlag } from "./sysv.ts";

/** A message of a queue: its type and text. */
export interface IpcMessage {
  mtype: bigint;
  text: Uint8Array;
}

/** Everything an IPC namespace holds, as read inside it. */
export interface IpcNamespace {
  vars: ipc_var_entry;
  shm: { entry: ipc_shm_entry; data: Uint8Array }[];
  msg: { entry: ipc_msg_entry; messages: IpcMessage[] }[];
  sem: { entry: ipc_sem_entry; values: Uint16Array }[];
}

/** The sysctls of ipc_var_entry: field, /proc/sys path, and whether it may be missing. */
export const IPC_SYSCTLS = [
  ["msgCtlmax", "kernel/msgmax"],
  ["msgCtlmnb", "kernel/msgmnb"],
  ["msgCtlmni", "kernel/msgmni"],
  ["autoMsgmni", "kernel/auto_msgmni"],
  ["shmCtlmax", "kernel/shmmax"],
  ["shmCtlall", "kernel/shmall"],
  ["shmCtlmni", "kernel/shmmni"],
  ["shmRmidForced", "kernel/shm_rmid_forced"],
  ["mqQueuesMax", "fs/mqueue/queues_max"],
  ["mqMsgMax", "fs/mqueue/msg_max"],
  ["mqMsgsizeMax", "fs/mqueue/msgsize_max"],
  ["mqMsgDefault", "fs/mqueue/msg_default"],
  ["mqMsgsizeDefault", "fs/mqueue/msgsize_default"],
  ["msgNextId", "kernel/msg_next_id"],
  ["semNextId", "kernel/sem_next_id"],
  ["shmNextId", "kernel/shm_next_id"],
] as const;

/**
 * Reads /proc/sys/`path` inside the task of `rs` (its words), through `buf` (2048 bytes: the
 * text, then the path).
 */
export function readSysctlIn(
  rs: RemoteSyscalls,
  buf: ReturnType<RemoteSyscalls["scratch"]>,
  path: string,
): string[] {
  const text = new TextDecoder().decode(rs.readFile(`/proc/sys/${path}`, 1023, buf));
  return text.trim().split(/\s+/);
}

/** Whether the task of `rs` sees /proc/sys (through `buf`, as {@link readSysctlIn}). */
function hasProcSys(rs: RemoteSyscalls, buf: ReturnType<RemoteSyscalls["scratch"]>): boolean {
  try {
    readSysctlIn(rs, buf, "kernel/sem");
    return true;
  } catch {
    return false;
  }
}

/**
 * The IPC sysctls of the IPC namespace of task `pid`, as words by path, read from criu's /proc
 * by a process that entered that namespace alone (nsenter): they answer for the reader's.
 */
export function readSysctlsOutside(pid: number): Map<string, string[]> {
  const paths = ["kernel/sem", ...IPC_SYSCTLS.map(([, path]) => path)];
  const out = new Deno.Command("nsenter", {
    args: [
      "-t",
      `${pid}`,
      "-i",
      "--",
      "sh",
      "-c",
      'for f; do printf "%s\\t" "$f"; cat "/proc/sys/$f" 2>/dev/null || echo; done',
      "sh",
      ...paths,
    ],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!out.success) {
    throw new UnsupportedError(
      `Cannot dump the IPC namespace of task ${pid}: its sysctls: ` +
        new TextDecoder().decode(out.stderr).trim(),
    );
  }
  const values = new Map<string, string[]>();
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    // The path, a tab, then the file's words (kernel/sem's are tabs apart too).
    const tab = line.indexOf("\t");
    const path = line.slice(0, tab), text = line.slice(tab + 1).trim();
    if (tab > 0 && text) values.set(path, text.split(/\s+/));
  }
  return values;
}

function desc(id: number, p: IpcPerm) {
  return create(ipc_desc_entrySchema, {
    key: p.key >>> 0,
    uid: p.uid,
    gid: p.gid,
    cuid: p.cuid,
    cgid: p.cgid,
    mode: p.mode,
    id,
  });
}

/** The IPC namespace task `rs` runs in, read inside it (the task frozen, nothing changed). */
export function readIpcNamespace(rs: RemoteSyscalls): IpcNamespace {
  const pid = rs.task.pid;
  // One scratch area: sysctl text, a *_ds, and a message (or semaphore values) after them.
  const buf = rs.scratch(4096);
  const ds = remoteAdd(buf, 2048);
  const dsBytes = new Uint8Array(IPC_DS_SIZE);
  const stat = (nr: number, idx: number, cmd: number, sem = false): number | undefined => {
    const ret = sem ? rs.call(nr, idx, 0, cmd, ds) : rs.call(nr, idx, cmd, ds);
    if (ret === -22n /* EINVAL: a free slot */) return undefined;
    if (ret < 0n) {
      throw new UnsupportedError(
        `Cannot dump the IPC namespace of task ${pid}: reading slot ${idx} failed with errno ` +
          `${-ret}`,
      );
    }
    readRemote(pid, ds, dsBytes);
    return Number(ret);
  };

  // The sysctls (the next ids absent when -1, "none").
  const values: Record<string, number | bigint> = {};
  // A task without /proc of its own (a mount namespace without it) is read from outside.
  const outside = hasProcSys(rs, buf) ? undefined : readSysctlsOutside(pid);
  const sysctl = (path: string) => outside?.get(path) ?? readSysctlIn(rs, buf, path);
  for (const [field, path] of IPC_SYSCTLS) {
    const v = sysctl(path)[0];
    if (field.endsWith("NextId") && v === "-1") continue;
    values[field] = field === "shmCtlmax" || field === "shmCtlall" ? BigInt(v) : Number(v);
  }
  const vars = create(ipc_var_entrySchema, {
    semCtls: sysctl("kernel/sem").map(Number),
    ...values,
  });

  // Shared memory: each segment read through an attach of it in the task.
  const shm: IpcNamespace["shm"] = [];
  const maxShm = Number(rs.check(NR.shmctl, "shmctl(SHM_INFO)", 0, SHM.INFO, ds));
  for (let i = 0; i <= maxShm; i++) {
    const id = stat(NR.shmctl, i, SHM.STAT);
    if (id === undefined) continue;
    const s = decodeShmStat(dsBytes);
    const size = Number(s.size);
    const { room, hugetlbFlag } = attachToRead(rs, id, size);
    const data = new Uint8Array(size);
    readRemote(pid, room, data);
    rs.unmapScratch(room);
    shm.push({
      entry: create(ipc_shm_entrySchema, { desc: desc(id, s.perm), size: s.size, hugetlbFlag }),
      data,
    });
  }

  // Message queues: each message copied (MSG_COPY), the queue left as it is.
  const msg: IpcNamespace["msg"] = [];
  const maxMsg = Number(rs.check(NR.msgctl, "msgctl(MSG_INFO)", 0, MSG.INFO, ds));
  const textMax = vars.msgCtlmax;
  const msgBuf = rs.scratch(MSGBUF_HEAD + textMax);
  for (let i = 0; i <= maxMsg; i++) {
    const id = stat(NR.msgctl, i, MSG.STAT);
    if (id === undefined) continue;
    const q = decodeMsgStat(dsBytes);
    const messages: IpcMessage[] = [];
    for (let n = 0; n < q.qnum; n++) {
      const len = rs.call(NR.msgrcv, id, msgBuf, textMax, n, IPC.NOWAIT | MSG.COPY);
      if (len < 0n) {
        throw new UnsupportedError(
          `Cannot dump message ${n} of System V queue ${id} of task ${pid}'s IPC namespace: ` +
            `msgrcv(MSG_COPY) failed with errno ${-len}`,
        );
      }
      const head = new BigUint64Array(1);
      readRemote(pid, msgBuf, new Uint8Array(head.buffer));
      const text = new Uint8Array(Number(len));
      readRemote(pid, remoteAdd(msgBuf, MSGBUF_HEAD), text);
      messages.push({ mtype: head[0], text });
    }
    msg.push({
      entry: create(ipc_msg_entrySchema, {
        desc: desc(id, q.perm),
        qbytes: q.qbytes,
        qnum: q.qnum,
      }),
      messages,
    });
  }

  // Semaphore sets: their values.
  const sem: IpcNamespace["sem"] = [];
  const maxSem = Number(rs.check(NR.semctl, "semctl(SEM_INFO)", 0, 0, SEM.INFO, ds));
  for (let i = 0; i <= maxSem; i++) {
    const id = stat(NR.semctl, i, SEM.STAT, true);
    if (id === undefined) continue;
    const s = decodeSemStat(dsBytes);
    const values = new Uint16Array(s.nsems);
    const at = s.nsems * 2 <= 2048 - IPC_DS_SIZE
      ? remoteAdd(ds, IPC_DS_SIZE)
      : rs.scratch(s.nsems * 2);
    rs.check(NR.semctl, "semctl(GETALL)", id, 0, SEM.GETALL, at);
    readRemote(pid, at, new Uint8Array(values.buffer));
    if (at !== remoteAdd(ds, IPC_DS_SIZE)) rs.unmapScratch(at);
    sem.push({
      entry: create(ipc_sem_entrySchema, { desc: desc(id, s.perm), nsems: s.nsems }),
      values,
    });
  }
  return { vars, shm, msg, sem };
}

/** Zero bytes that pad `n` to a multiple of `to`. */
function pad(n: number, to: number): Uint8Array {
  return new Uint8Array((to - (n % to)) % to);
}

/** ipcns-var-ID.img, and ipcns-shm/msg/sem-ID.img for the objects there are. */
export function writeIpcNs(ctx: DumpContext, id: number, ns: IpcNamespace): void {
  ctx.image(`ipcns-var-${id}.img`, "IPC_VAR").entry(ipc_var_entrySchema, ns.vars);
  if (ns.shm.length) {
    const img = ctx.image(`ipcns-shm-${id}.img`, "IPCNS_SHM");
    for (const { entry, data } of ns.shm) {
      img.entry(ipc_shm_entrySchema, entry);
      img.raw(data);
      img.raw(pad(data.length, 4));
    }
  }
  if (ns.msg.length) {
    const img = ctx.image(`ipcns-msg-${id}.img`, "IPCNS_MSG");
    for (const { entry, messages } of ns.msg) {
      img.entry(ipc_msg_entrySchema, entry);
      for (const m of messages) {
        img.entry(ipc_msgSchema, create(ipc_msgSchema, { mtype: m.mtype, msize: m.text.length }));
        img.raw(m.text);
        img.raw(pad(m.text.length, 8));
      }
    }
  }
  if (ns.sem.length) {
    const img = ctx.image(`ipcns-sem-${id}.img`, "IPCNS_SEM");
    for (const { entry, values } of ns.sem) {
      img.entry(ipc_sem_entrySchema, entry);
      const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      img.raw(bytes);
      img.raw(pad(bytes.length, 8));
    }
  }
}

/**
 * The largest page a segment may be of here: the largest huge page size the kernel has pages
 * of (or may make), else 4096. Attached at an address aligned to it, with room for a whole one,
 * a segment of huge pages (whose flag is not in its mode) neither fails nor reaches past its
 * room.
 */
function largestPage(): number {
  let largest = 4096;
  try {
    for (const e of Deno.readDirSync("/sys/kernel/mm/hugepages")) {
      const kb = Number(/^hugepages-(\d+)kB$/.exec(e.name)?.[1] ?? 0);
      const dir = `/sys/kernel/mm/hugepages/${e.name}`;
      const some = ["nr_hugepages", "nr_overcommit_hugepages"].some((f) =>
        Number(Deno.readTextFileSync(`${dir}/${f}`).trim()) > 0
      );
      if (some && kb * 1024 > largest) largest = kb * 1024;
    }
  } catch {
    // no huge pages here
  }
  return largest;
}

/**
 * System V segment `id` (`size` bytes) attached read-only in the task of `rs` (at an address
 * aligned to {@link largestPage}), and its huge-page flags for shmget as criu writes them
 * (SHM_HUGETLB and the log2 of its page size), if it is of them.
 */
function attachToRead(
  rs: RemoteSyscalls,
  id: number,
  size: number,
): { room: RemotePtr; hugetlbFlag?: number } {
  const pid = rs.task.pid;
  let room: RemotePtr;
  try {
    room = rs.attachShm(id, size, false, largestPage());
  } catch (e) {
    if (!(e instanceof InfectError)) throw e;
    throw new UnsupportedError(
      `Cannot dump the IPC namespace of task ${pid}: System V segment ${id} cannot be ` +
        `attached to be read (${e.message})`,
    );
  }
  try {
    // Its mapping, whole (a segment of huge pages takes whole ones); maps pads addresses to
    // eight digits, map_files does not.
    const range = readProcText(pid, "maps").split("\n").map((l) => l.split(" ")[0].split("-"))
      .find(([from, to]) => to && BigInt(`0x${from}`) === room);
    const fd = range
      ? tryOpen(
        `/proc/${pid}/map_files/${BigInt(`0x${range[0]}`).toString(16)}-` +
          BigInt(`0x${range[1]}`).toString(16),
        O.RDONLY | O.CLOEXEC,
      )
      : -2;
    if (fd < 0) {
      throw new UnsupportedError(
        `Cannot dump System V segment ${id} of task ${pid}'s IPC namespace: its mapping cannot ` +
          `be opened (errno ${-fd})`,
      );
    }
    try {
      return { room, hugetlbFlag: shmHugetlbFlag(fd, `System V segment ${id}`) };
    } finally {
      close(fd);
    }
  } catch (e) {
    rs.unmapScratch(room);
    throw e;
  }
}
