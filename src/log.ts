/**
 * CRIU-style logging: levels 0 (none) to 4 (debug), to a log file when one is given, and the
 * final error line to stderr.
 *
 * @module
 */

/** Log levels as criu numbers them. */
export const LOG = { NONE: 0, ERROR: 1, WARN: 2, INFO: 3, DEBUG: 4 } as const;

/** Default level: warnings. */
export const DEFAULT_VERBOSITY = LOG.WARN;

/** A logger writing `(seconds) message` lines, like criu. */
export class Logger implements Disposable {
  readonly level: number;
  readonly #file: Deno.FsFile | null;
  readonly #start = performance.now();
  readonly #enc = new TextEncoder();

  /** Logs to `path` (appending) when given, else to stderr. */
  constructor(level: number, path?: string) {
    this.level = level;
    this.#file = path
      ? Deno.openSync(path, { write: true, create: true, truncate: true, mode: 0o600 })
      : null;
  }

  #write(level: number, prefix: string, msg: string): void {
    if (level > this.level) return;
    const us = Math.round((performance.now() - this.#start) * 1000);
    const sec = String(Math.floor(us / 1e6)).padStart(2, "0");
    const frac = String(us % 1e6).padStart(6, "0");
    const line = this.#enc.encode(`(${sec}.${frac}) ${prefix}${msg}\n`);
    try {
      if (this.#file) this.#file.writeSync(line);
      else Deno.stderr.writeSync(line);
    } catch {
      // As criu: a log that cannot be written (its file system full, say) is left short; the
      // work goes on, and its own failure, if any, is what criu says.
    }
  }

  /** The header criu starts its log with: the version, and the kernel it runs on. */
  header(version: string): void {
    if (this.level < LOG.INFO) return;
    let kernel = "";
    try {
      kernel = Deno.readTextFileSync("/proc/sys/kernel/version").trim();
    } catch {
      // no /proc: the release alone
    }
    this.info(`Version: ${version}`);
    this.info(`Running on ${Deno.hostname()} Linux ${Deno.osRelease()} ${kernel} x86_64`);
  }

  /** Whether lines go to a log file (else to stderr). */
  get toFile(): boolean {
    return this.#file !== null;
  }

  /**
   * An error (level 1), prefixed as criu's: `Error (file:line): `, the place `cause` was thrown
   * from when given, else the caller's.
   */
  error(msg: string, cause?: unknown): void {
    if (this.level < LOG.ERROR) return;
    const site = (cause instanceof Error && siteOf(cause.stack ?? "", 1)) || callerSite();
    this.#write(LOG.ERROR, `Error (${site}): `, msg);
  }
  /** A warning (level 2), prefixed as criu's: `Warn  (file:line): `. */
  warn(msg: string): void {
    if (this.level >= LOG.WARN) this.#write(LOG.WARN, `Warn  (${callerSite()}): `, msg);
  }
  /** Progress (level 3). */
  info(msg: string): void {
    this.#write(LOG.INFO, "", msg);
  }
  /** Detail (level 4). */
  debug(msg: string): void {
    this.#write(LOG.DEBUG, "", msg);
  }

  /** Closes the log file. Idempotent. */
  close(): void {
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A logger that drops everything (library use without logging). */
export function silentLogger(): Logger {
  return new Logger(LOG.NONE);
}

/** Where the logger was called from, `src/dir/file.ts:line`, as criu names its C sources. */
function callerSite(): string {
  // Frames: callerSite, the Logger method, then its caller.
  return siteOf(new Error().stack ?? "", 3) || "deno-criu";
}

/** The first frame of `stack`, from the `skip`-th on, in deno-criu's own sources. */
function siteOf(stack: string, skip: number): string {
  for (const frame of stack.split("\n").slice(skip)) {
    const m = /\/((?:src\/[^\s():]*|main\.ts|mod\.ts)):(\d+):\d+\)?$/.exec(frame);
    if (m) return `${m[1]}:${m[2]}`;
  }
  return "";
}
