/**
 * `criu dump` and `criu pre-dump` on parsed options, from the command line or an RPC request.
 *
 * @module
 */
import { dirsOf } from "./dirs.ts";
import { dump, type DumpResult } from "../dump/dump.ts";
import { preDump } from "../dump/pre_dump.ts";
import { dedup } from "../images/dedup.ts";
import { type CriuOpts, UsageError } from "./options.ts";
import { interruptOnSignals } from "../util/interrupt.ts";
import { actionsOf, type Caller, openLog } from "./run.ts";

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
