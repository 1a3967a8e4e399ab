/**
 * `criu restore` on parsed options, from the command line or an RPC request.
 *
 * @module
 */
import type { OutsideLinks, VethOutside } from "../net/netns.ts";
import type { CgroupMode } from "../restore/cgroups.ts";
import { dirsOf, inWorkDir } from "./dirs.ts";
import { restore, type RestoreResult } from "../restore/restore.ts";
import type { Logger } from "../log.ts";
import { type CriuOpts, UsageError } from "./options.ts";
import { interruptOnSignals } from "../util/interrupt.ts";
import { F, fcntl, writeAll } from "../syscalls/mod.ts";
import { actionsOf, type Caller, openLog } from "./run.ts";

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
