/**
 * SIGINT, SIGTERM and SIGHUP sent to criu (Ctrl-C, a service manager, a closed terminal) roll a
 * dump or restore back like any other failure, instead of ending criu in the middle.
 *
 * Deno delivers a signal to its listeners from the event loop, so a long synchronous stretch
 * only learns of it at the next {@link checkInterrupt}, which lets the loop turn. A quick turn
 * (setImmediate, tens of microseconds) may need a few turns to see a signal; a thorough one (a
 * timer, about 2 ms here, taken at the last check before a dump's or restore's point of no
 * return) sees any signal sent before it. (Should criu die anyway, the tasks it works in heal
 * on their own: tree/parasite.ts.)
 *
 * @module
 */

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
 * was aborted. Both turns cost about 10 ms the first time (the runtime loads its timers then):
 * a dump or restore takes them once before its tasks are stopped.
 */
export async function checkInterrupt(signal?: AbortSignal, thorough = false): Promise<void> {
  if (!signal) return;
  await new Promise((r) => thorough ? setTimeout(r, 0) : setImmediate(r));
  signal.throwIfAborted();
}
