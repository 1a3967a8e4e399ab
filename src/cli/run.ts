/**
 * The commands that act on processes, run on parsed options: dump and restore. The command
 * line and RPC requests both come here with a `CriuOpts`; each says what it does with the
 * result.
 *
 * @module
 */
import type { OutsideLinks, VethOutside } from "../net/netns.ts";
import type { CgroupMode } from "../restore/cgroups.ts";
import { CRIU_VERSION, VERSION } from "../version.ts";
import { type Dirs, dirsOf, inWorkDir } from "./dirs.ts";
import { dump, type DumpResult } from "../dump/dump.ts";
import { preDump } from "../dump/pre_dump.ts";
import { dedup } from "../images/dedup.ts";
import { restore, type RestoreResult } from "../restore/restore.ts";
import { Logger } from "../log.ts";
import { type ActionHook, actionScripts } from "../action_scripts.ts";
import { type CriuOpts, UsageError } from "./options.ts";
import { interruptOnSignals } from "../util/interrupt.ts";
import { F, fcntl, writeAll } from "../syscalls/mod.ts";

export function openLog(o: CriuOpts, dirs: Dirs): Logger {
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

/** Who asked for a command, when it is not the command line. */
export interface Caller {
  /**
   * Tells the caller of each action point, before the action scripts run (criu's RPC notify);
   * throws when the caller answers that its action failed.
   */
  notify?: ActionHook;
  /**
   * Hands the caller the new master of a pty whose master was outside the tree (criu's
   * orphan-pts-master notification, with the descriptor).
   */
  ptyMaster?: (fd: number) => Promise<void>;
  /** Asks the caller for more external resources during a dump (criu's query-ext-files). */
  queryExternal?: () => Promise<string[]>;
}

/** The action hook of a command: the caller's notifications, then the action scripts. */
function actionsOf(o: CriuOpts, dirs: Dirs, log: Logger, caller: Caller): ActionHook | undefined {
  const scripts = actionScripts(o.actionScripts, dirs.images, dirs.work, (l) => log.debug(l));
  const notify = caller.notify;
  if (!notify) return scripts;
  return async (action, pid) => {
    await notify(action, pid);
    await scripts?.(action, pid);
  };
}

/**
 * Runs a dump as `o` says; `done` gets its result while the log is still open. Errors are
 * logged to the log file and thrown.
 */
export async function runDump<T>(
  o: CriuOpts,
  caller: Caller,
  done: (r: DumpResult) => T | Promise<T>,
): Promise<T> {
  if (o.tree === undefined) throw new UsageError("dump needs a process: -t/--tree PID");
  const dirs = dirsOf(o);
  using log = openLog(o, dirs);
  using stop = interruptOnSignals();
  try {
    // A pre-dump copies memory alone and leaves the tree running (dump/pre_dump.ts).
    const run = o.command === "pre-dump" ? preDump : dump;
    const r = await run({
      pid: o.tree,
      trackMem: o.trackMem,
      prevImagesDir: o.prevImagesDir,
      pageServer: o.pageServer ? { address: o.address, port: o.port } : undefined,
      lazyServe: o.lazyPages
        ? { address: o.address, port: o.port, statusFd: o.statusFd }
        : undefined,
      imagesDir: dirs.images,
      workDir: dirs.work,
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
      actions: actionsOf(o, dirs, log, caller),
      queryExternal: caller.queryExternal,
      orphanPtsMaster: o.orphanPtsMaster,
      faultInject: Deno.env.get("DENO_CRIU_FAULT") || undefined,
      signal: stop.signal,
    }, log);
    if (o.autoDedup && o.prevImagesDir) {
      const punched = dedup(dirs.images);
      log.info(`Auto-dedup: ${punched} pages taken out of the parent images`);
    }
    return await done(r);
  } catch (e) {
    // stderr gets the line from main(); the log file needs its own copy.
    if (log.toFile) log.error((e as Error).message, e);
    throw e;
  }
}

/**
 * Runs a restore as `o` says; `done` gets its result while the log is still open. Errors are
 * logged to the log file and thrown.
 */
export async function runRestore<T>(
  o: CriuOpts,
  caller: Caller,
  done: (r: RestoreResult) => T | Promise<T>,
): Promise<T> {
  const dirs = dirsOf(o);
  using log = openLog(o, dirs);
  if (o.tree !== undefined) log.warn("Using -t with criu restore is obsoleted");
  let r;
  try {
    using stop = interruptOnSignals();
    r = await restore({
      imagesDir: dirs.images,
      workDir: dirs.work,
      detach: o.restoreDetached,
      lazyPages: o.lazyPages,
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
      orphanPtsMaster: o.orphanPtsMaster ? caller.ptyMaster : undefined,
      actions: actionsOf(o, dirs, log, caller),
      faultInject: Deno.env.get("DENO_CRIU_FAULT") || undefined,
      signal: stop.signal,
    }, log);
  } catch (e) {
    if (log.toFile) log.error((e as Error).message, e);
    throw e;
  }
  return await done(r);
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

function fdIsOpen(fd: number): boolean {
  try {
    fcntl(fd, F.GETFD);
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
