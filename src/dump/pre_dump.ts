/**
 * `criu pre-dump`: the tree's memory copied while it is frozen, then the tree left running,
 * its memory tracked (dump/track.ts) so that the next pre-dump or dump (`--track-mem
 * --prev-images-dir`) writes only the pages written since. Its images are those a dump takes
 * as parent: inventory.img, and per process pagemap-ID.img and pages-N.img (only the pages
 * written since its own parent, if it has one), with the tracking beside them.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { inventory_entrySchema, lsmtype } from "../../proto/gen/misc_pb.ts";
import { syncDir } from "../images/image.ts";
import { collectTree } from "../tree/collect.ts";
import { Parasite } from "../tree/parasite.ts";
import { VirtualPids } from "../tree/pid_ns.ts";
import { type Logger, silentLogger } from "../log.ts";
import { VERSION } from "../version.ts";
import { DumpContext, type DumpOptions } from "./context.ts";
import { collectVmas, dumpPages } from "./mm.ts";
import { writeTracking } from "./track.ts";
import {
  type DumpResult,
  IMAGES_VERSION,
  startDump,
  tracked,
  trackPages,
  writeStats,
} from "./dump.ts";

/** Pre-dumps the tree of `opts.pid` into `opts.imagesDir`; the tree runs on. */
export async function preDump(
  opts: DumpOptions,
  log: Logger = silentLogger(),
): Promise<DumpResult> {
  const ctx = new DumpContext({ ...opts, trackMem: true, leaveRunning: true }, log);
  const pid = opts.pid;
  await startDump(ctx);
  const tFreeze = performance.now();
  using tree = collectTree(pid, (opts.timeoutSeconds ?? 10) * 1000);
  const tFrozen = performance.now();
  ctx.stats.freezingUs = Math.round((tFrozen - tFreeze) * 1000);
  ctx.pids = VirtualPids.of(tree.root);
  try {
    for (const proc of tree.processes) {
      const { maps, vmas } = collectVmas(proc.pid);
      using parasite = Parasite.infect(tree.task(proc.pid), maps);
      const track = trackPages(ctx, parasite.leader, vmas)!;
      await dumpPages(ctx, parasite.leader, vmas, ctx.pagesId(), undefined, track);
      tracked(ctx, proc.pid, vmas, track);
    }
    ctx.pageServer?.close();
  } catch (e) {
    ctx.pageServer?.abort();
    throw e;
  }
  ctx.image("inventory.img", "INVENTORY").entry(
    inventory_entrySchema,
    create(inventory_entrySchema, {
      imgVersion: IMAGES_VERSION,
      fdinfoPerId: true,
      nsPerId: true,
      lsmtype: lsmtype.NO_LSM,
      denoCriu: VERSION,
    }),
  );
  ctx.flush();
  syncDir(ctx.opts.imagesDir);
  tree.resume({ stopped: false });
  ctx.stats.frozenUs = Math.round((performance.now() - tFrozen) * 1000);
  // What the next dump needs of the tracking, once the tree runs again.
  ctx.written.push(...writeTracking(ctx.opts.imagesDir, ctx.trackers, ctx.frames));
  syncDir(ctx.opts.imagesDir);
  log.info(`Pre-dump of ${tree.processes.length} processes done; the tree runs on`);
  writeStats(ctx);
  await opts.actions?.("post-dump", pid);
  return { images: [...ctx.written], stats: { ...ctx.stats } };
}
