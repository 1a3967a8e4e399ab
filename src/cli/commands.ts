/**
 * The `criu` commands: parse, run, report. Every failure becomes one line on stderr (and in the
 * log) and exit code 1; a stack trace is printed only at verbosity 4.
 *
 * @module
 */
import { VERSION } from "../version.ts";
import { isAbsolute, join, resolve } from "node:path";
import { checkFeatures, FEATURES } from "../check.ts";
import { dump } from "../dump/dump.ts";
import { restore, type RestoreStats } from "../restore/restore.ts";
import type { DumpStats } from "../dump/context.ts";
import { showDir, showImage } from "../images/show.ts";
import { Logger } from "../log.ts";
import { type CliOptions, parseCommandLine, USAGE, UsageError } from "./options.ts";
import { interruptOnSignals } from "../util/interrupt.ts";

/** Version printed by `criu --version`. */
export { VERSION };

function out(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text.endsWith("\n") ? text : text + "\n"));
}

function openLog(o: CliOptions, imagesDir: string): Logger {
  if (!o.logFile || o.logFile === "-") return new Logger(o.verbosity);
  const path = isAbsolute(o.logFile) ? o.logFile : join(imagesDir, o.logFile);
  try {
    return new Logger(o.verbosity, path);
  } catch (e) {
    throw new Error(`Cannot open log file ${path}: ${(e as Error).message}`);
  }
}

/** The dump statistics block `--display-stats` prints, as criu prints it. */
export function formatDumpStats(s: DumpStats): string {
  const n = (v: number) => `${v} (0x${v.toString(16)})`;
  return [
    "Displaying dump stats:",
    `Freezing time: ${Math.round(s.freezingUs)} us`,
    `Frozen time: ${Math.round(s.frozenUs)} us`,
    `Memory dump time: ${Math.round(s.memdumpUs)} us`,
    `Memory write time: ${Math.round(s.memwriteUs)} us`,
    `Memory pages scanned: ${n(s.pagesScanned)}`,
    `Memory pages skipped from parent: ${n(0)}`,
    `Memory pages written: ${n(s.pagesWritten)}`,
    `Lazy memory pages: ${n(0)}`,
  ].join("\n");
}

async function runDump(o: CliOptions): Promise<number> {
  if (o.tree === undefined) throw new UsageError("dump needs a process: -t/--tree PID");
  if (o.leaveRunning && o.leaveStopped) {
    throw new UsageError("--leave-running and --leave-stopped exclude each other");
  }
  const imagesDir = resolve(o.imagesDir);
  using log = openLog(o, imagesDir);
  using stop = interruptOnSignals();
  try {
    const r = await dump({
      pid: o.tree,
      imagesDir,
      leaveRunning: o.leaveRunning,
      leaveStopped: o.leaveStopped,
      shellJob: o.shellJob,
      fileLocks: o.fileLocks,
      timeoutSeconds: o.timeout,
      displayStats: o.displayStats,
      ghostLimit: o.ghostLimit,
      tcpEstablished: o.tcpEstablished,
      tcpClose: o.tcpClose,
      skipInFlight: o.skipInFlight,
      networkLock: o.networkLock,
      faultInject: Deno.env.get("DENO_CRIU_FAULT") || undefined,
      signal: stop.signal,
    }, log);
    if (o.displayStats) out(formatDumpStats(r.stats));
    return 0;
  } catch (e) {
    // stderr gets the line from main(); the log file needs its own copy.
    if (log.toFile) log.error((e as Error).message);
    throw e;
  }
}

/** The restore statistics block `--display-stats` prints, as criu prints it. */
export function formatRestoreStats(s: RestoreStats): string {
  const n = (v: number) => `${v} (0x${v.toString(16)})`;
  return [
    "Displaying restore stats:",
    `Pages compared: ${n(s.pagesCompared)}`,
    `Pages skipped COW: ${n(s.pagesSkippedCow)}`,
    `Pages restored: ${n(s.pagesRestored)}`,
    `Restore time: ${s.restoreUs} us`,
    `Forking time: ${s.forkingUs} us`,
  ].join("\n");
}

async function runRestore(o: CliOptions): Promise<number> {
  const imagesDir = resolve(o.imagesDir);
  using log = openLog(o, imagesDir);
  let r;
  try {
    using stop = interruptOnSignals();
    r = await restore({
      imagesDir,
      detach: o.restoreDetached,
      shellJob: o.shellJob,
      pidfile: o.pidfile ? resolve(o.pidfile) : undefined,
      tcpEstablished: o.tcpEstablished,
      tcpClose: o.tcpClose,
      networkLock: o.networkLock,
      faultInject: Deno.env.get("DENO_CRIU_FAULT") || undefined,
      signal: stop.signal,
    }, log);
  } catch (e) {
    if (log.toFile) log.error((e as Error).message);
    throw e;
  }
  if (o.displayStats) out(formatRestoreStats(r.stats));
  return r.exit ? await r.exit : 0;
}

async function runCheck(o: CliOptions): Promise<number> {
  const results = await checkFeatures(o.features);
  if (o.features.length) {
    for (const r of results) out(`${r.feature.name}: ${r.supported ? "supported" : "unsupported"}`);
    return results.every((r) => r.supported) ? 0 : 1;
  }
  let ok = true;
  for (const r of results) {
    if (o.all) {
      out(
        `${r.feature.name}: ${
          r.supported ? "supported" : "UNSUPPORTED"
        }  (${r.feature.description})`,
      );
    }
    if (!r.supported && r.feature.required) {
      ok = false;
      if (!o.all) out(`Error: ${r.feature.name} is missing: ${r.feature.description}`);
    }
  }
  if (ok) out("Looks good.");
  return ok ? 0 : 1;
}

function runShow(o: CliOptions): number {
  const target = o.args[0] ?? o.imagesDir;
  const st = Deno.statSync(target);
  const json = st.isDirectory ? showDir(target) : showImage(target);
  out(JSON.stringify(json, null, 2));
  return 0;
}

/** Runs `criu ARGS`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let o: CliOptions | undefined;
  try {
    o = parseCommandLine(argv);
    if (o.version) {
      out(`Version: ${VERSION} (deno-criu, images compatible with CRIU 4.x)`);
      return 0;
    }
    if (o.help || !o.command) {
      out(USAGE);
      return o.help ? 0 : 1;
    }
    switch (o.command) {
      case "dump":
        return await runDump(o);
      case "check":
        return await runCheck(o);
      case "show":
        return runShow(o);
      case "restore":
        return await runRestore(o);
      case "pre-dump":
      case "page-server":
      case "lazy-pages":
      case "swrk":
      case "service":
      case "dedup":
      case "cpuinfo":
        throw new Error(`The ${o.command} command is not supported by deno-criu yet`);
      default:
        throw new UsageError(`Unknown command ${o.command}`);
    }
  } catch (e) {
    const err = e as Error;
    const msg = err instanceof Error ? err.message : String(e);
    const enc = new TextEncoder();
    // The stack (debug level only) first: the last line of stderr names the failure.
    if ((o?.verbosity ?? 0) >= 4 && err instanceof Error && err.stack) {
      Deno.stderr.writeSync(enc.encode(`${err.stack}\n`));
    }
    if (e instanceof UsageError) Deno.stderr.writeSync(enc.encode("Try 'criu --help'\n"));
    Deno.stderr.writeSync(enc.encode(`Error: ${msg}\n`));
    return 1;
  }
}

export { FEATURES };
