/**
 * Batches of syscalls in a task being restored, run by its restorer blob (parasite/restorer.c,
 * op CALLS) in one go: an injected syscall costs two ptrace stops, some 0.15 ms, and a process
 * has dozens of alike ones (64 signal actions, 16 resource limits, a pair of calls per
 * descriptor received).
 *
 * The blob runs in the restorer area, which lives as long as the task's scope of remote
 * syscalls: the scope forgets the runner when it releases its scratch memory.
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
  const pid = rs.task.pid;
  const callsAt = remoteAdd(room.ops, OP_SIZE);
  const image = new Uint8Array(OP_SIZE + calls.length * CALL_SIZE);
  image.set(
    encodeOps([{ code: OP.CALLS, args: [BigInt(callsAt), BigInt(calls.length)], what: "calls" }]),
  );
  encodeCalls(calls, image, OP_SIZE);
  writeRemote(pid, room.ops, image);
  // struct args: nops, ops, done, failed, result, compared, kept.
  const args = new BigUint64Array([1n, BigInt(room.ops), 0n, 0n, 0n, 0n, 0n]);
  writeRemote(pid, room.args, new Uint8Array(args.buffer));
  rs.run(room.code, room.args, room.stackTop);
  try {
    rs.waitFlag(remoteAdd(room.args, 16), room.timeoutMs);
  } finally {
    rs.interrupt();
  }
  const failed = new BigInt64Array(1);
  readRemote(pid, remoteAdd(room.args, 24), new Uint8Array(failed.buffer));
  if (failed[0] !== -1n) throw new Error(`The restorer's calls in task ${pid} did not run`);
  return readCallResults(pid, callsAt, calls.length);
}
