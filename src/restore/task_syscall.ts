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
