/**
 * The `criu` commands: parse, run, report. Every failure becomes one line on stderr (and in the
 * log) and exit code 1; a stack trace is printed only at verbosity 4.
 *
 * @module
 */
import type { OutsideLinks, VethOutside } from "../net/netns.ts";
import type { CgroupMode } from "../restore/cgroups.ts";
import { CRIU_VERSION, VERSION, versionText } from "../version.ts";
import { isAbsolute, join, resolve } from "node:path";
import { checkFeatures, featureNamed, FEATURES } from "../check.ts";
import { dump } from "../dump/dump.ts";
import { restore, type RestoreStats } from "../restore/restore.ts";
import type { DumpStats } from "../dump/context.ts";
import { showDir, showImage } from "../images/show.ts";
import { Logger } from "../log.ts";
import { actionScripts } from "../action_scripts.ts";
import { checkOptions, type CriuOpts, parseOptions, UsageError } from "./options.ts";
import { USAGE } from "./usage.ts";
import { interruptOnSignals } from "../util/interrupt.ts";
import { close, fcntl, writeAll } from "../syscalls/mod.ts";

/** Version printed by `criu --version`. */
export { VERSION };

function out(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text.endsWith("\n") ? text : text + "\n"));
}

/** Where a dump or restore reads and writes: images, and the work directory for the rest. */
interface Dirs {
  images: string;
  /** Logs, pidfiles and action scripts' cwd (`-W`, default the images directory). */
  work: string;
}

function dirsOf(o: CriuOpts): Dirs {
  const images = resolve(o.imagesDir);
  return { images, work: o.workDir ? resolve(o.workDir) : images };
}

/** `path` as criu takes it: relative to the work directory. */
function inWorkDir(dirs: Dirs, path: string): string {
  return isAbsolute(path) ? path : join(dirs.work, path);
}

function openLog(o: CriuOpts, dirs: Dirs): Logger {
  const level = Math.min(o.logLevel, 4);
  let log: Logger;
  if (!o.logFile || o.logFile === "-") {
    log = new Logger(level);
  } else {
    const path = inWorkDir(dirs, o.logFile);
    try {
      log = new Logger(level, path);
    } catch (e) {
      throw new Error(`Cannot open log file ${path}: ${(e as Error).message}`);
    }
  }
  log.header(`${CRIU_VERSION} (deno-criu ${VERSION})`);
  return log;
}

function scriptsOf(o: CriuOpts, dirs: Dirs, log: Logger) {
  return actionScripts(o.actionScripts, dirs.images, dirs.work, (l) => log.debug(l));
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

async function runDump(o: CriuOpts): Promise<number> {
  if (o.tree === undefined) throw new UsageError("dump needs a process: -t/--tree PID");
  const dirs = dirsOf(o);
  using log = openLog(o, dirs);
  using stop = interruptOnSignals();
  try {
    const r = await dump({
      pid: o.tree,
      imagesDir: dirs.images,
      leaveRunning: o.finalState === "alive",
      leaveStopped: o.finalState === "stopped",
      shellJob: o.shellJob,
      fileLocks: o.fileLocks,
      timeoutSeconds: o.timeout,
      freezeCgroup: o.freezeCgroup,
      emptyNet: o.emptyNet,
      displayStats: o.displayStats,
      ghostLimit: o.ghostLimit,
      linkRemap: o.linkRemap,
      extUnixSk: o.extUnixSk,
      external: o.external,
      extMountAuto: o.extMountAuto,
      externalSharing: o.externalSharing,
      externalMasters: o.externalMasters,
      enableFs: o.enableFs,
      cgroupRoots: o.cgroupRoots,
      tcpEstablished: o.tcpEstablished,
      tcpClose: o.tcpClose,
      skipInFlight: o.tcpSkipInFlight,
      networkLock: o.networkLock,
      actions: scriptsOf(o, dirs, log),
      faultInject: Deno.env.get("DENO_CRIU_FAULT") || undefined,
      signal: stop.signal,
    }, log);
    if (o.displayStats) out(formatDumpStats(r.stats));
    return 0;
  } catch (e) {
    // stderr gets the line from main(); the log file needs its own copy.
    if (log.toFile) log.error((e as Error).message, e);
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

async function runRestore(o: CriuOpts): Promise<number> {
  const dirs = dirsOf(o);
  using log = openLog(o, dirs);
  if (o.tree !== undefined) log.warn("Using -t with criu restore is obsoleted");
  let r;
  try {
    using stop = interruptOnSignals();
    r = await restore({
      imagesDir: dirs.images,
      detach: o.restoreDetached,
      sibling: o.restoreSibling,
      shellJob: o.shellJob,
      pidfile: o.pidfile ? inWorkDir(dirs, o.pidfile) : undefined,
      tcpEstablished: o.tcpEstablished,
      tcpClose: o.tcpClose,
      networkLock: o.networkLock,
      leaveStopped: o.finalState === "stopped",
      inheritFds: inheritedFds(o.inheritFds, log),
      // As criu: soft unless told otherwise (the option alone is soft too).
      manageCgroups: (o.manageCgroups || "soft") as CgroupMode,
      joinNet: joinedNet(o.joinNs),
      emptyNet: o.emptyNet,
      outsideLinks: outsideLinksOf(o.external),
      root: o.root,
      externalMounts: mountsOf(o.external),
      extMountAuto: o.extMountAuto,
      cgroupRoots: o.cgroupRoots,
      actions: scriptsOf(o, dirs, log),
      faultInject: Deno.env.get("DENO_CRIU_FAULT") || undefined,
      signal: stop.signal,
    }, log);
  } catch (e) {
    if (log.toFile) log.error((e as Error).message, e);
    throw e;
  }
  if (o.displayStats) out(formatRestoreStats(r.stats));
  return r.exit ? await r.exit : 0;
}

async function runCheck(o: CriuOpts): Promise<number> {
  if (Deno.uid() !== 0) {
    throw new Error(
      "criu check needs root: dump and restore need CAP_SYS_ADMIN (ptrace, pagemap, map_files)",
    );
  }
  if (o.features.length) {
    // As criu: one feature (the last named) answers with its exit code.
    const feature = featureNamed(o.features.at(-1)!);
    const [r] = await checkFeatures([feature]);
    if (r.supported) {
      out(`${feature.name} is supported`);
      return 0;
    }
    throw new Error(
      `${feature.name} is not supported: ${feature.notOurs ?? `${feature.description} is missing`}`,
    );
  }
  const wanted = FEATURES.filter((f) =>
    f.category === "required" || f.category === "extra" && o.checkExtra ||
    f.category === "experimental" && o.checkExperimental
  );
  const results = await checkFeatures(wanted);
  let missing = false;
  for (const r of results) {
    if (r.supported) continue;
    if (r.feature.category === "required") {
      out(`Error: ${r.feature.name} is missing: ${r.feature.description}`);
      return 1;
    }
    // Features deno-criu does not use yet are named, not counted against the kernel.
    const why = r.feature.notOurs
      ? `not used by deno-criu: ${r.feature.notOurs}`
      : `missing: ${r.feature.description}`;
    Deno.stderr.writeSync(new TextEncoder().encode(`Warn: ${r.feature.name} is ${why}\n`));
    if (!r.feature.notOurs) missing = true;
  }
  if (missing) {
    out(
      "Looks good but some kernel features are missing\nwhich, depending on your process tree, " +
        "may cause\ndump or restore failure.",
    );
    return 1;
  }
  out("Looks good.");
  return 0;
}

function runShow(o: CriuOpts): number {
  const target = o.args[0] ?? o.imagesDir;
  const st = Deno.statSync(target);
  const json = st.isDirectory ? showDir(target) : showImage(target);
  out(JSON.stringify(json, null, 2));
  return 0;
}

/** Commands and how many operands each takes after it. */
const COMMANDS: Record<string, number> = {
  dump: 0,
  restore: 0,
  check: 0,
  show: 1,
  "pre-dump": 0,
  "page-server": 0,
  "lazy-pages": 0,
  swrk: 1,
  service: 0,
  dedup: 0,
  cpuinfo: 1,
};

/** Runs `criu ARGS`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let o: CriuOpts | undefined;
  try {
    o = parseOptions(argv);
    if (o.version) {
      out(versionText());
      return 0;
    }
    if (o.help) {
      out(USAGE);
      return 0;
    }
    if (!o.command) throw new UsageError("command is required");
    const operands = COMMANDS[o.command];
    if (operands === undefined) throw new UsageError(`unknown command: ${o.command}`);
    if (o.args.length > operands) {
      const extra = o.args.length - operands;
      throw new UsageError(
        `excessive parameter${extra > 1 ? "s" : ""} for command ${o.command}`,
      );
    }
    checkOptions(o);
    for (const fd of o.closeFds) close(fd);
    switch (o.command) {
      case "dump":
        return await runDump(o);
      case "check":
        return await runCheck(o);
      case "show":
        return runShow(o);
      case "restore":
        return await runRestore(o);
      default:
        throw new Error(`The ${o.command} command is not supported by deno-criu yet`);
    }
  } catch (e) {
    const err = e as Error;
    const msg = err instanceof Error ? err.message : String(e);
    const enc = new TextEncoder();
    // The stack (debug level only, and never for an expected error) first: the last line of
    // stderr names the failure.
    if ((o?.logLevel ?? 0) >= 4 && isBug(err) && err.stack) {
      Deno.stderr.writeSync(enc.encode(`${err.stack}\n`));
    }
    if (e instanceof UsageError) {
      Deno.stderr.writeSync(enc.encode("Try 'criu --help'\n"));
      // Harnesses read the log file for the reason (zdtm does): it gets the line too.
      if (o?.logFile && o.logFile !== "-") logUsageError(o, msg);
    }
    Deno.stderr.writeSync(enc.encode(`Error: ${msg}\n`));
    return 1;
  }
}

/**
 * `--inherit-fd fd[N]:KEY` (and criu's `debug[N]:TEXT`, which writes TEXT to descriptor N):
 * the descriptors by the key of the file each stands for.
 */
function inheritedFds(args: string[], log: Logger): Map<string, number> {
  const out = new Map<string, number>();
  for (const a of args) {
    const m = /^(fd|debug)\[(\d+)\]:(.+)$/.exec(a);
    if (!m) throw new UsageError(`Invalid inherit fd argument: ${a}`);
    const fd = Number(m[2]);
    if (!fdIsOpen(fd)) throw new Error(`Can't fstat inherit fd ${fd}: it is not open`);
    if (m[1] === "debug") {
      writeAll(fd, new TextEncoder().encode(m[3]), `inherit fd ${fd}`);
      continue;
    }
    log.info(`File ${m[3]} will be restored from inherit fd ${fd}`);
    out.set(m[3], fd);
  }
  return out;
}

/** Appends a command-line error to the log file the command line names, if it can. */
function logUsageError(o: CriuOpts, msg: string): void {
  try {
    const dirs = dirsOf(o);
    Deno.writeTextFileSync(inWorkDir(dirs, o.logFile!), `(00.000000) Error (main.ts): ${msg}\n`, {
      append: true,
    });
  } catch {
    // no directory to log into: stderr has it
  }
}

/** Whether an error is a bug in deno-criu (its stack helps) rather than an expected refusal. */
function isBug(e: Error): boolean {
  return e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError ||
    e instanceof SyntaxError;
}

export { FEATURES };

function fdIsOpen(fd: number): boolean {
  try {
    fcntl(fd, 1 /* F_GETFD */);
    return true;
  } catch {
    return false;
  }
}

/** The network namespace `--join-ns net:PID|FILE` names, as a path (a PID's /proc link). */
function joinedNet(joins: string[]): string | undefined {
  const net = joins.map((j) => /^net:(.+)$/.exec(j)?.[1]).find((v) => v !== undefined);
  if (net === undefined) return undefined;
  return /^\d+$/.test(net) ? `/proc/${net}/ns/net` : net;
}

/** `--external mnt[KEY]:PATH` (restore): the directory each external mount is bound from. */
function mountsOf(external: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of external) {
    const m = /^mnt\[([^\]]+)\]:(.+)$/.exec(e);
    if (m) out.set(m[1], m[2]);
  }
  return out;
}

/**
 * `--external veth[IFNAME]:OUTNAME[@BRIDGE]` and `macvlan[IFNAME]:LOWER`: the outside end of
 * each veth and the lower device of each macvlan, by their names inside.
 */
function outsideLinksOf(external: string[]): OutsideLinks {
  const veths = new Map<string, VethOutside>(), macvlans = new Map<string, string>();
  for (const e of external) {
    const m = /^veth\[([^\]]+)\]:([^@]+)(?:@(.+))?$/.exec(e);
    if (m) veths.set(m[1], { name: m[2], bridge: m[3] });
    const v = /^macvlan\[([^\]]+)\]:(.+)$/.exec(e);
    if (v) macvlans.set(v[1], v[2]);
  }
  return { veths, macvlans };
}
