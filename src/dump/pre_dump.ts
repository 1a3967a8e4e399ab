/**
 * `criu pre-dump`: the tree frozen only while its pages are found and write-protected again
 * (dump/track.ts), then left running while they are read and written out: a page it writes
 * meanwhile shows as written, and the next pre-dump or dump (`--track-mem --prev-images-dir`)
 * takes it again, with every other page written since. `--pre-dump-mode` splice and read
 * both work so (criu's splice mode pins the pages in pipes while frozen; their contents may
 * change as well once the tree runs). Its images are those a dump takes
 * as parent: inventory.img, and per process pagemap-ID.img and pages-N.img (only the pages
 * written since its own parent, if it has one), with the tracking beside them.
 *
 * @module
 */
import { collectTree } from "../tree/collect.ts";
import { Parasite } from "../tree/parasite.ts";
import { VirtualPids } from "../tree/pid_ns.ts";
import { type Logger, silentLogger } from "../log.ts";
import { DumpContext, type DumpOptions } from "./context.ts";
import { collectVmas, type PagePlan, scanPages, writePagePlan } from "./mm.ts";
import { processesBelow } from "./smaps_ahead.ts";
import { writeTracking } from "./track.ts";
import {
  type DumpResult,
  readAhead,
  startDump,
  startDumpWorker,
  tracked,
  trackPages,
  writeInventory,
  writeStats,
} from "./dump.ts";

/** Pre-dumps the tree of `opts.pid` into `opts.imagesDir`; the tree runs on. */
export async function preDump(
  opts: DumpOptions,
  log: Logger = silentLogger(),
): Promise<DumpResult> {
  const ctx = new DumpContext({ ...opts, trackMem: true, leaveRunning: true }, log);
  using _copiers = ctx.copiers;
  const pid = opts.pid;
  await startDump(ctx);
  const below = processesBelow(pid);
  using _worker = await startDumpWorker(ctx, below, false);
  // What infecting each process needs, found while the tree still runs.
  Parasite.prepare(below);
  const tFreeze = performance.now();
  using tree = collectTree(pid, (opts.timeoutSeconds ?? 10) * 1000);
  const tFrozen = performance.now();
  ctx.stats.freezingUs = Math.round((tFrozen - tFreeze) * 1000);
  ctx.pids = VirtualPids.of(tree.root);
  readAhead(ctx, tree.processes, true);
  // Frozen: each process's pages found and write-protected again (from here a write shows).
  const plans: PagePlan[] = [];
  for (const proc of tree.processes) {
    const { maps, vmas } = collectVmas(proc.pid, await ctx.ahead.get(proc.pid)?.mappings);
    // Tracking makes single calls only.
    using parasite = Parasite.infect(tree.task(proc.pid), maps, { blobs: false });
    const track = trackPages(ctx, parasite.leader, vmas)!;
    plans.push(await scanPages(ctx, proc.pid, vmas, undefined, track));
    tracked(ctx, proc.pid, vmas, track);
  }
  tree.resume({ stopped: false });
  ctx.stats.frozenUs = Math.round((performance.now() - tFrozen) * 1000);
  log.info(`Tree released after ${(ctx.stats.frozenUs / 1000).toFixed(1)} ms`);
  // Running again: the pages read and written out. A page written meanwhile is dumped again
  // by the next dump (its protection is gone), whatever this copy holds of it.
  try {
    for (const plan of plans) await writePagePlan(ctx, plan, true);
    await ctx.pagesFilesDone();
    ctx.pageXfer.close();
  } catch (e) {
    ctx.pageXfer.abort();
    throw e;
  }
  writeInventory(ctx);
  ctx.written.push(...writeTracking(ctx.dir, ctx.trackers, ctx.frames));
  ctx.flush();
  await ctx.dir.sync();
  log.info(`Pre-dump of ${tree.processes.length} processes done; the tree runs on`);
  writeStats(ctx);
  await opts.actions?.("post-dump", pid);
  return { images: [...ctx.written], stats: { ...ctx.stats } };
}
