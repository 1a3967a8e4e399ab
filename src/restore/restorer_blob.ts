/**
 * Running the restorer blob (parasite/restorer.c) in a task being restored: a list of its ops
 * (the memory plan), or a batch of syscalls (its op CALLS), which would cost two ptrace stops
 * each injected one by one, some 0.15 ms, and of which a process has dozens alike (64 signal
 * actions, 16 resource limits, a pair of calls per descriptor received).
 *
 * The blob runs in the restorer area, which lives as long as the task's scope of remote
 * syscalls: the scope forgets the batch runner when it releases its scratch memory.
 *
 * @module
 */
import { readRemote, remoteAdd, type RemotePtr, writeRemote } from "../syscalls/mod.ts";
import {
  type BatchRunner,
  CALL_SIZE,
  encodeCalls,
  readCallResults,
  type RemoteCall,
  type RemoteSyscalls,
} from "../tree/infect.ts";
import { encodeOps, OP, OP_SIZE } from "./memory.ts";

/** Where the restorer blob is in the task, and its room to work in. */
export interface RestorerRoom {
  /** Its code (the entry point is the first byte). */
  code: RemotePtr;
  /** Its struct args. */
  args: RemotePtr;
  /** Room for its ops, here one op and the list of calls after it. */
  ops: RemotePtr;
  opsBytes: number;
  /** The top of its stack. */
  stackTop: RemotePtr;
  timeoutMs: number;
}

/** Runs the batches of `rs` with the restorer blob in `room` (see the module comment). */
export function restorerCalls(rs: RemoteSyscalls, room: RestorerRoom): BatchRunner {
  const most = Math.floor((room.opsBytes - OP_SIZE) / CALL_SIZE);
  if (most < 1) throw new RangeError("No room for the restorer's calls");
  return (calls) => {
    const out: bigint[] = [];
    for (let i = 0; i < calls.length; i += most) {
      out.push(...runCalls(rs, room, calls.slice(i, i + most)));
    }
    return out;
  };
}

function runCalls(rs: RemoteSyscalls, room: RestorerRoom, calls: readonly RemoteCall[]): bigint[] {
  const callsAt = remoteAdd(room.ops, OP_SIZE);
  const image = new Uint8Array(OP_SIZE + calls.length * CALL_SIZE);
  image.set(
    encodeOps([{ code: OP.CALLS, args: [BigInt(callsAt), BigInt(calls.length)], what: "calls" }]),
  );
  encodeCalls(calls, image, OP_SIZE);
  const { failed } = runRestorer(rs, room, image, 1);
  if (failed !== -1n) throw new Error(`The restorer's calls in task ${rs.task.pid} did not run`);
  return readCallResults(rs.task.pid, callsAt, calls.length);
}

/** What a run of the restorer left in its struct args. */
export interface RestorerResult {
  /** The index of the op that failed, or -1. */
  failed: bigint;
  /** Its -errno. */
  result: bigint;
  /** Pages PREAD_CMP compared with what the task inherited, and of those, kept. */
  compared: bigint;
  kept: bigint;
}

/** Runs the restorer on `nops` ops (`ops`, encoded), until it is done; what it left. */
export function runRestorer(
  rs: RemoteSyscalls,
  room: RestorerRoom,
  ops: Uint8Array,
  nops: number,
): RestorerResult {
  startRestorer(rs, room, ops, nops);
  return endRestorer(rs, room);
}

/**
 * Starts the restorer on `nops` ops (`ops`, encoded) and returns while it runs: the task is
 * not to be asked anything before {@link endRestorer} has waited for it.
 */
export function startRestorer(
  rs: RemoteSyscalls,
  room: RestorerRoom,
  ops: Uint8Array,
  nops: number,
): void {
  const pid = rs.task.pid;
  writeRemote(pid, room.ops, ops);
  // struct args: nops, ops, done, failed, result, compared, kept.
  const args = new BigUint64Array([BigInt(nops), BigInt(room.ops), 0n, 0n, 0n, 0n, 0n]);
  writeRemote(pid, room.args, new Uint8Array(args.buffer));
  rs.run(room.code, room.args, room.stackTop);
}

/** Waits until the restorer {@link startRestorer} started is done; what it left. */
export function endRestorer(rs: RemoteSyscalls, room: RestorerRoom): RestorerResult {
  try {
    rs.waitFlag(remoteAdd(room.args, 16), room.timeoutMs);
  } finally {
    rs.interrupt();
  }
  const left = new BigInt64Array(4);
  readRemote(rs.task.pid, remoteAdd(room.args, 24), new Uint8Array(left.buffer));
  return { failed: left[0], result: left[1], compared: left[2], kept: left[3] };
}
