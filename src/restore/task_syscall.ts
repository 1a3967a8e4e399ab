/**
 * Syscalls a restore runs in a task it is making (through its RemoteSyscalls), failing as one
 * error that names the call and the task.
 *
 * @module
 */
import { Errno } from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";

/** Runs syscall `nr` (called `name` in errors) in the task; its result. */
export type TaskSyscall = (nr: number, name: string, ...args: (bigint | number)[]) => number;

/**
 * The syscalls of restored task `rs`: an Errno on failure, naming the call and `context` ("in
 * restored task PID" unless given).
 */
export function taskSyscall(
  rs: RemoteSyscalls,
  context = `in restored task ${rs.task.pid}`,
): TaskSyscall {
  return (nr, name, ...args) => resultOf(rs.call(nr, ...args), name, context);
}

/** One syscall of a {@link TaskBatch}: `name` is what an error calls it. */
export interface TaskCall {
  nr: number;
  name: string;
  args: (bigint | number)[];
}

/** Runs syscalls in the task in one go (RemoteSyscalls.batch); their results, in order. */
export type TaskBatch = (calls: readonly TaskCall[]) => number[];

/**
 * Batches of restored task `rs`: once all have run, the first failure is thrown as
 * {@link taskSyscall} throws it. (The calls go to RemoteSyscalls.batch without their names,
 * which would have it throw its own error first.)
 */
export function taskBatch(
  rs: RemoteSyscalls,
  context = `in restored task ${rs.task.pid}`,
): TaskBatch {
  return (calls) =>
    rs.batch(calls.map(({ nr, args }) => ({ nr, args })))
      .map((ret, i) => resultOf(ret, calls[i].name, context));
}

function resultOf(ret: bigint, name: string, context: string): number {
  if (ret < 0n) throw new Errno(name, Number(-ret), context);
  return Number(ret);
}
