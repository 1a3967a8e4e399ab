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
    const t = ((performance.now() - this.#start) / 1000).toFixed(5).padStart(11);
    const line = this.#enc.encode(`(${t}) ${prefix}${msg}\n`);
    if (this.#file) this.#file.writeSync(line);
    else Deno.stderr.writeSync(line);
  }

  /** Whether lines go to a log file (else to stderr). */
  get toFile(): boolean {
    return this.#file !== null;
  }

  /** An error (level 1). */
  error(msg: string): void {
    this.#write(LOG.ERROR, "Error: ", msg);
  }
  /** A warning (level 2). */
  warn(msg: string): void {
    this.#write(LOG.WARN, "Warn: ", msg);
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
