/**
 * `dump`: checkpoint a process into CRIU-format images. Reads like a table of contents: one
 * named step per resource, top to bottom.
 *
 * Safety: the task is frozen with ptrace for the whole dump. Any failure thaws it with the
 * registers and signal mask it had (the `using` below), and nothing is written into its memory
 * except a scratch mapping that the remote-syscall scope removes. The task is killed only after
 * every image is written and synced.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { task_kobj_ids_entrySchema } from "../../proto/gen/core_pb.ts";
import { core_entrySchema } from "../../proto/gen/core_pb.ts";
import { fs_entrySchema } from "../../proto/gen/files_pb.ts";
import {
  dump_stats_entrySchema,
  inventory_entrySchema,
  lsmtype,
  pstree_entrySchema,
  seccomp_entrySchema,
  stats_entrySchema,
  timens_entrySchema,
  timespecSchema,
} from "../../proto/gen/misc_pb.ts";
import { syncDir } from "../images/image.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { CLOCK, clockGettime, O } from "../syscalls/mod.ts";
import { RemoteSyscalls } from "../tree/infect.ts";
import { listChildren, listThreads, NoSuchTaskError } from "../tree/proc.ts";
import { SeizedTask } from "../tree/seize.ts";
import { DumpContext, type DumpOptions, type DumpStats } from "./context.ts";
import { coreEntry } from "./core.ts";
import { collectFiles, dumpFiles, regFileEntry, UnsupportedError, writeRegFile } from "./files.ts";
import { collectVmas, dumpMm, dumpPages } from "./mm.ts";
import { collectTask } from "./task.ts";

export type { DumpOptions, DumpStats };

/** CRIU image format version written into inventory.img (CRTOOLS_IMAGES_V1_1). */
export const IMAGES_VERSION = 2;

/** What a dump produced. */
export interface DumpResult {
  /** Image files written, relative to the images directory. */
  images: string[];
  stats: DumpStats;
}

function checkImagesDir(dir: string): void {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(dir);
  } catch {
    throw new Error(`Cannot use images directory ${dir}: it does not exist`);
  }
  if (!st.isDirectory) throw new Error(`Cannot use images directory ${dir}: not a directory`);
  const probe = `${dir}/.deno-criu-probe-${Deno.pid}`;
  try {
    Deno.writeFileSync(probe, new Uint8Array(), { mode: 0o600 });
    Deno.removeSync(probe);
  } catch (e) {
    throw new Error(`Cannot write to images directory ${dir}: ${(e as Error).message}`);
  }
}

/** Refuses what this version cannot dump yet, before anything is written. */
function checkSupported(pid: number): void {
  const threads = listThreads(pid);
  if (threads.length > 1) {
    throw new UnsupportedError(
      `Cannot dump task ${pid}: it has ${threads.length} threads; multi-threaded processes are not supported yet`,
    );
  }
  const children = listChildren(pid);
  if (children.length) {
    throw new UnsupportedError(
      `Cannot dump task ${pid}: it has children (${
        children.join(", ")
      }); process trees are not supported yet`,
    );
  }
}

/**
 * Dumps the process `opts.pid` into `opts.imagesDir`.
 *
 * Precondition: the process is not a child of the calling process (see {@link SeizedTask}).
 */
export async function dump(opts: DumpOptions, log: Logger = silentLogger()): Promise<DumpResult> {
  const ctx = new DumpContext(opts, log);
  const pid = opts.pid;
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`Invalid PID ${pid}`);
  if (pid === Deno.pid) throw new Error(`Cannot dump task ${pid}: it is this criu process`);
  checkImagesDir(opts.imagesDir);
  try {
    Deno.statSync(`/proc/${pid}`);
  } catch {
    throw new NoSuchTaskError(pid);
  }
  checkSupported(pid);

  const tFreeze = performance.now();
  log.info(`Seizing task ${pid}`);
  using task = SeizedTask.seize(pid);
  const tFrozen = performance.now();
  ctx.stats.freezingUs = Math.round((tFrozen - tFreeze) * 1000);
  checkSupported(pid); // it may have forked or cloned before it stopped

  // Collect: everything read while frozen, nothing written yet.
  const { maps, vmas } = collectVmas(pid);
  const taskFiles = collectFiles(ctx, pid);
  // Inside the task: signal state, timers, and the pages (through the parasite).
  log.info("Collected mappings and files");
  const state = await (async () => {
    using rs = RemoteSyscalls.open(task, maps);
    const state = collectTask(task, rs);
    ctx.faultPoint("parasite");
    await dumpPages(ctx, rs, vmas, 1);
    ctx.faultPoint("pages");
    return state;
  })();
  if (state.status.seccomp === 2) {
    throw new UnsupportedError(`Cannot dump task ${pid}: seccomp filters are not supported yet`);
  }
  ctx.faultPoint("collect");

  // Write: one image per resource.
  const ids = { vmId: 1, filesId: 2, fsId: 3, sighandId: 4 };
  const rootIds = create(task_kobj_ids_entrySchema, ids);
  ctx.image("inventory.img", "INVENTORY").entry(
    inventory_entrySchema,
    create(inventory_entrySchema, {
      imgVersion: IMAGES_VERSION,
      fdinfoPerId: true,
      rootIds: rootIds,
      nsPerId: true,
      lsmtype: lsmtype.NO_LSM,
    }),
  );
  ctx.image("pstree.img", "PSTREE").entry(
    pstree_entrySchema,
    create(pstree_entrySchema, {
      pid,
      ppid: 0,
      pgid: state.stat.pgid,
      sid: state.stat.sid,
      threads: [pid],
    }),
  );
  const core = coreEntry(state);
  ctx.image(`core-${pid}.img`, "CORE").entry(core_entrySchema, core);
  ctx.image(`ids-${pid}.img`, "IDS").entry(task_kobj_ids_entrySchema, rootIds);

  const files = ctx.image("files.img", "FILES");
  dumpMm(ctx, files, state, vmas);
  ctx.faultPoint("mm");
  dumpFiles(ctx, files, ids.filesId, taskFiles);
  const cwdId = ctx.fileId(), rootId = ctx.fileId();
  writeRegFile(files, regFileEntry(cwdId, state.cwd, { flags: O.DIRECTORY }));
  writeRegFile(files, regFileEntry(rootId, state.root, { flags: O.DIRECTORY }));
  ctx.image(`fs-${pid}.img`, "FS").entry(
    fs_entrySchema,
    create(fs_entrySchema, { cwdId: cwdId, rootId: rootId, umask: state.status.umask }),
  );
  ctx.image("seccomp.img", "SECCOMP").entry(seccomp_entrySchema, create(seccomp_entrySchema, {}));
  const ts = (clock: number) => {
    const [tvSec, tvNsec] = clockGettime(clock);
    return create(timespecSchema, { tvSec, tvNsec });
  };
  ctx.image("timens-0.img", "TIMENS").entry(
    timens_entrySchema,
    create(timens_entrySchema, { monotonic: ts(CLOCK.MONOTONIC), boottime: ts(CLOCK.BOOTTIME) }),
  );

  ctx.flush();
  syncDir(opts.imagesDir);
  ctx.faultPoint("sync");

  log.info("Images written and synced");
  // Every image is complete and durable: now the task may go.
  if (opts.leaveRunning) task.resume();
  else if (opts.leaveStopped) task.resume({ stopped: true });
  else task.kill();
  ctx.stats.frozenUs = Math.round((performance.now() - tFrozen) * 1000);
  log.info(opts.leaveRunning || opts.leaveStopped ? "Task released" : "Task killed");

  writeStats(ctx);
  log.info(`Dumping finished successfully`);
  return { images: [...ctx.written], stats: { ...ctx.stats } };
}

function writeStats(ctx: DumpContext): void {
  const s = ctx.stats;
  ctx.image("stats-dump", "STATS").entry(
    stats_entrySchema,
    create(stats_entrySchema, {
      dump: create(dump_stats_entrySchema, {
        freezingTime: s.freezingUs,
        frozenTime: s.frozenUs,
        memdumpTime: Math.round(s.memdumpUs),
        memwriteTime: Math.round(s.memwriteUs),
        pagesScanned: BigInt(s.pagesScanned),
        pagesSkippedParent: 0n,
        pagesWritten: BigInt(s.pagesWritten),
        pagesLazy: 0n,
      }),
    }),
  );
  ctx.flush();
}
