/**
 * SIGINT, SIGTERM and SIGHUP sent to criu (Ctrl-C, a service manager, a closed terminal) roll a
 * dump or restore back like any other failure, instead of ending criu in the middle.
 *
 * Deno delivers a signal to its listeners from the event loop, so a long synchronous stretch
 * only learns of it at the next {@link checkInterrupt}, which lets the loop turn once. (Should
 * criu die anyway, the tasks it works in heal on their own: tree/parasite.ts.)
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

/** Lets pending signal events run, then throws if `signal` was aborted. */
export async function checkInterrupt(signal?: AbortSignal): Promise<void> {
  if (!signal) return;
  await new Promise((r) => setTimeout(r, 0));
  signal.throwIfAborted();
}
