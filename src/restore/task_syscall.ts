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

/** The syscalls of restored task `rs` (an Errno "in restored task PID" on failure). */
export function taskSyscall(rs: RemoteSyscalls): TaskSyscall {
  const pid = rs.task.pid;
  return (nr, name, ...args) => {
    const ret = rs.call(nr, ...args);
    if (ret < 0n) throw new Errno(name, Number(-ret), `in restored task ${pid}`);
    return Number(ret);
  };
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
 * {@link taskSyscall} throws it.
 */
export function taskBatch(rs: RemoteSyscalls): TaskBatch {
  const pid = rs.task.pid;
  return (calls) =>
    rs.batch(calls).map((ret, i) => {
      if (ret < 0n) throw new Errno(calls[i].name, Number(-ret), `in restored task ${pid}`);
      return Number(ret);
    });
}
