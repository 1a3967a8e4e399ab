/**
 * Collecting the exits of killed tracees in the background.
 *
 * After a dump the tree is killed; the kernel then tears each process down (freeing its memory
 * takes ~80 ms a GiB). Nothing needs to wait for that: SIGKILL is final. But a tracee's exit is
 * reported to its tracer first, and its real parent cannot reap it until the tracer has, so the
 * exits are collected here, from a timer on the tracer thread (waitpid with WNOHANG), until the
 * last one is in. The timer does not keep the process alive; a process that exits first hands
 * its tracees back to the kernel anyway. A process that is about to (the command line, once its
 * dump is done) sets none: Deno loads its timers the first time one is set, about 5 ms.
 *
 * @module
 */
import { tryPtraceDetach, tryWaitPid } from "../syscalls/mod.ts";

const pending: number[] = [];
let timer: ReturnType<typeof setInterval> | undefined;
let background = true;

/**
 * Whether exits not in yet are collected in the background (the default); off for a process
 * that exits once its dump is done, the kernel handing its tracees back then.
 */
export function reapInBackground(on: boolean): void {
  background = on;
}

function poll(): void {
  for (let i = 0; i < pending.length;) {
    const tid = pending[i];
    let done = false;
    try {
      const st = tryWaitPid(tid);
      if (!st) done = false;
      else if (st.exited || st.signaled) done = true;
      else tryPtraceDetach(tid); // a stop from before the kill: let it go on to die
    } catch {
      done = true; // ECHILD: not ours any more
    }
    if (done) pending.splice(i, 1);
    else i++;
  }
  if (!pending.length && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
}

/** Collects the exits of killed tracees `tids` (other threads before their leader). */
export function reapLater(tids: number[]): void {
  pending.push(...tids);
  poll();
  if (pending.length && timer === undefined && background) {
    timer = setInterval(poll, 10);
    Deno.unrefTimer(timer as unknown as number);
  }
}
