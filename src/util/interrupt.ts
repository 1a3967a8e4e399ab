/**
 * SIGINT, SIGTERM and SIGHUP sent to criu (Ctrl-C, a service manager, a closed terminal) roll a
 * dump or restore back like any other failure, instead of ending criu in the middle.
 *
 * Deno delivers a signal to its listeners from the event loop, so a long synchronous stretch
 * only learns of it at the next {@link checkInterrupt}, which lets the loop turn. A quick turn
 * (a message to itself, tens of microseconds) may need a few turns to see a signal; a thorough
 * one (a sleep of a millisecond, taken at the last check before a dump's or restore's point of
 * no return) sees any signal sent before it. (Should criu die anyway, the tasks it works in heal
 * on their own: tree/parasite.ts.)
 *
 * @module
 */

import { sleep } from "../syscalls/process.ts";

const SIGNALS: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** Aborts `signal` when one of the signals arrives; disposing of it removes the listeners. */
export function interruptOnSignals(): { signal: AbortSignal } & Disposable {
  const controller = new AbortController();
  const listeners = SIGNALS.map((sig) => {
    const fn = () => controller.abort(new InterruptedError(sig));
    Deno.addSignalListener(sig, fn);
    return [sig, fn] as const;
  });
  return {
    signal: controller.signal,
    [Symbol.dispose]() {
      for (const [sig, fn] of listeners) Deno.removeSignalListener(sig, fn);
    },
  };
}

/** criu was asked to stop. */
export class InterruptedError extends Error {
  constructor(sig: Deno.Signal) {
    super(`Interrupted by ${sig}`);
    this.name = "InterruptedError";
  }
}

/**
 * Lets pending signal events run (`thorough`: every one sent so far), then throws if `signal`
 * was aborted. Neither turn sets a timer: setImmediate and setTimeout would do as well but load
 * Deno's timers the first time, 6-10 ms here.
 */
export async function checkInterrupt(signal?: AbortSignal, thorough = false): Promise<void> {
  if (!signal) return;
  if (thorough) await sleep(1);
  await turn();
  signal.throwIfAborted();
}

/**
 * One turn of the event loop: an operation of the runtime's (a stat of /, answered from its
 * thread pool), whose answer comes from the loop, which dispatches the signals in by then. Some
 * 0.1 ms, 0.5 the first time; a message through a MessageChannel took 0.4, and 1.4-2.2 the
 * first time.
 */
async function turn(): Promise<void> {
  await Deno.lstat("/");
}
