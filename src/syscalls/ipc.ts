/**
 * System V IPC: constants and the x86-64 layouts of the kernel's 64-bit structures
 * (ipc64_perm, shmid64_ds, msqid64_ds, semid64_ds; x86-64 always speaks IPC_64), for calls
 * made inside a task (the namespace is the caller's).
 *
 * @module
 */

/** Flags and commands shared by the three kinds. */
export const IPC = { CREAT: 0o1000, EXCL: 0o2000, NOWAIT: 0o4000, RMID: 0, SET: 1 } as const;
/** shmget/shmat/shmctl. */
export const SHM = {
  RDONLY: 0o10000,
  REMAP: 0o40000,
  LOCK: 11,
  STAT: 13,
  INFO: 14,
  /** Mode bits: marked for removal, locked in memory. */
  DEST: 0o1000,
  LOCKED: 0o2000,
  HUGETLB: 0o4000,
  /** Where shmget's flags take the log2 of a segment's huge page size. */
  HUGE_SHIFT: 26,
} as const;
/** msgrcv/msgctl. */
export const MSG = { STAT: 11, INFO: 12, COPY: 0o40000 } as const;
/** semctl. */
export const SEM = { GETALL: 13, SETALL: 17, STAT: 18, INFO: 19 } as const;

/** Room for any of the *_ds structures, and for the *info ones the INFO commands fill. */
export const IPC_DS_SIZE = 128;
/** The header of a message buffer (its mtype) before the text. */
export const MSGBUF_HEAD = 8;

/** struct ipc64_perm, as the STAT commands fill it. */
export interface IpcPerm {
  key: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  mode: number;
}

function perm(v: DataView): IpcPerm {
  return {
    key: v.getInt32(0, true),
    uid: v.getUint32(4, true),
    gid: v.getUint32(8, true),
    cuid: v.getUint32(12, true),
    cgid: v.getUint32(16, true),
    mode: v.getUint16(20, true),
  };
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** A segment's shmid64_ds. */
export function decodeShmStat(b: Uint8Array): { perm: IpcPerm; size: bigint; nattch: bigint } {
  const v = view(b);
  return { perm: perm(v), size: v.getBigUint64(48, true), nattch: v.getBigUint64(88, true) };
}

/** A queue's msqid64_ds. */
export function decodeMsgStat(b: Uint8Array): { perm: IpcPerm; qnum: number; qbytes: number } {
  const v = view(b);
  return {
    perm: perm(v),
    qnum: Number(v.getBigUint64(80, true)),
    qbytes: Number(v.getBigUint64(88, true)),
  };
}

/** A semaphore set's semid64_ds. */
export function decodeSemStat(b: Uint8Array): { perm: IpcPerm; nsems: number } {
  const v = view(b);
  return { perm: perm(v), nsems: Number(v.getBigUint64(80, true)) };
}

/**
 * The *_ds an IPC_SET reads: owner, group and permission bits (and a queue's byte limit,
 * `qbytes`, at msqid64_ds' msg_qbytes).
 */
export function encodeIpcSet(
  p: { uid: number; gid: number; mode: number },
  qbytes?: number,
): Uint8Array {
  const b = new Uint8Array(IPC_DS_SIZE);
  const v = view(b);
  v.setUint32(4, p.uid, true);
  v.setUint32(8, p.gid, true);
  v.setUint16(20, p.mode & 0o777, true);
  if (qbytes !== undefined) v.setBigUint64(88, BigInt(qbytes), true);
  return b;
}
