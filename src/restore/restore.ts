/**
 * `restore`: bring a dumped process back from its images, with its PID, memory, files, signal
 * state and registers.
 *
 * Stages, in order (each names the resource in its error):
 *
 * 1. READ: every image is read and checked (magics, framing, pages file long enough), and the
 *    files the task had are checked to exist with their dumped size. Nothing exists yet.
 * 2. FORK: the restore helper (a static executable; Deno never forks) makes the task with
 *    clone3(set_tid = dumped PID). The task sleeps in the helper's code.
 * 3. SEIZE: we become its tracer and run syscalls inside it (tree/infect.ts).
 * 4. FILES: its descriptor table is emptied and refilled: dumped descriptors at their numbers,
 *    plus the restorer's own (pages-N.img, mapped files, exe) above them.
 * 5. MEMORY: the restorer blob is mapped in a gap free in both address spaces and runs the
 *    operations of restore/memory.ts: the helper's mappings go, the vDSO moves to its dumped
 *    place, every dumped mapping comes back with its pages read from pages-N.img.
 * 6. STATE: mm fields and exe link, signals, timers, limits, cwd, session, rseq, pending
 *    signals, credentials (restore/task_state.ts); the blob area is unmapped.
 * 7. RESUME: dumped registers, FPU/AVX state and signal mask are set with ptrace, and the task
 *    is let go. It continues where it was dumped; a syscall it was in is restarted.
 *
 * Any failure after FORK kills the task, so nothing half-restored runs.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { join } from "node:path";
import { BLOBS } from "../../parasite/blobs_gen.ts";
import { restore_stats_entrySchema, stats_entrySchema } from "../../proto/gen/misc_pb.ts";
import { ImageWriter } from "../images/image.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { VMA } from "../pagemap/vma.ts";
import { ptraceGetXstate, readRemote, remoteAdd, remotePtr, writeRemote } from "../syscalls/mod.ts";
import { RemoteSyscalls } from "../tree/infect.ts";
import { parseMaps, readProcText } from "../tree/proc.ts";
import { SeizedTask, TASK_STATE } from "../tree/seize.ts";
import { decodeBase64 } from "../util/base64.ts";
import { RemoteArena } from "./arena.ts";
import { prepareFiles, RestoreError } from "./files.ts";
import { PidTakenError, spawnTask } from "./helper.ts";

function pidInUse(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}
import { type DumpImages, readDump, type TaskImages } from "./images.ts";
import { encodeOps, findGap, occupied, OP_SIZE, planMemory } from "./memory.ts";
import { gpregsWords, xsaveArea } from "../images/x86.ts";
import { restoreTaskState } from "./task_state.ts";

/** Options of a restore, as `criu restore` takes them. */
export interface RestoreOptions {
  /** Where the images are (`-D`). */
  imagesDir: string;
  /** Return once the task runs instead of waiting for it (`-d`). */
  detach?: boolean;
  /** Keep the task in the restorer's session and terminal (`-j`). */
  shellJob?: boolean;
  /** Write the restored root task's PID here (`--pidfile`); an existing file is an error. */
  pidfile?: string;
  /** Test hook: fail at the named stage after the task exists. */
  faultInject?: string;
}

/** Restore statistics (times in microseconds), as stats-restore records them. */
export interface RestoreStats {
  forkingUs: number;
  restoreUs: number;
  pagesRestored: number;
}

/** What a restore produced. */
export interface RestoreResult {
  /** PID of the restored root task. */
  pid: number;
  stats: RestoreStats;
  /** Without `detach`: resolves to the task's exit status (128 + signal when killed). */
  exit?: Promise<number>;
}

const AREA_CODE = 0;
const AREA_ARGS = 4096;
const ARENA_SIZE = 64 << 10;
const STACK_SIZE = 16 << 10;
const BLOB_TIMEOUT_MS = 600_000;

function checkFiles(dump: DumpImages, task: TaskImages, shellJob: boolean): void {
  const pid = task.pstree.pid;
  const ps = task.pstree;
  if (!shellJob && ps.sid !== ps.pid) {
    throw new RestoreError(
      `Cannot restore task ${pid}: it belonged to session ${ps.sid}, which is not in the ` +
        `images; restore it into this session with --shell-job (-j)`,
    );
  }
  if (pidInUse(pid)) throw new PidTakenError(pid);
  const ids = new Set<number>(task.fds.map((f) => f.id));
  for (const v of task.mm.vmas) {
    if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) ids.add(Number(v.shmid));
  }
  ids.add(task.mm.exeFileId);
  for (const id of ids) {
    const reg = dump.files.get(id)?.reg;
    if (!reg) continue;
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(reg.name);
    } catch {
      throw new RestoreError(`Cannot restore task ${pid}: file ${reg.name} no longer exists`);
    }
    if (st.isFile && reg.size !== undefined && BigInt(st.size) !== reg.size) {
      throw new RestoreError(
        `Cannot restore task ${pid}: file ${reg.name} changed size since the dump ` +
          `(${st.size} bytes, was ${reg.size})`,
      );
    }
  }
}

/** Restores the process tree in `opts.imagesDir` (one single-threaded process for now). */
export async function restore(
  opts: RestoreOptions,
  log: Logger = silentLogger(),
): Promise<RestoreResult> {
  const t0 = performance.now();
  // 1. READ
  const dump = readDump(opts.imagesDir);
  if (dump.tasks.length !== 1 || dump.tasks[0].pstree.threads.length > 1) {
    throw new RestoreError("Cannot restore: process trees and threads are not supported yet");
  }
  const task = dump.tasks[0];
  const pid = task.pstree.pid;
  checkFiles(dump, task, opts.shellJob ?? false);
  if (opts.pidfile) {
    try {
      Deno.statSync(opts.pidfile);
      throw new RestoreError(`Cannot write pidfile ${opts.pidfile}: it exists already`);
    } catch (e) {
      if (e instanceof RestoreError) throw e;
    }
  }

  // 2. FORK
  log.info(`Creating task ${pid}`);
  const made = await spawnTask(pid, opts.detach ?? false);
  const tForked = performance.now();
  let seized: SeizedTask | undefined;
  try {
    // 3. SEIZE
    seized = SeizedTask.seize(made.pid);
    const maps = parseMaps(readProcText(pid, "maps"));
    const rs = RemoteSyscalls.open(seized, maps);
    const stats = restoreInside(rs, dump, task, maps, opts, log);
    const fault = (stage: string) => {
      if (opts.faultInject === stage) throw new RestoreError(`Fault injected at ${stage}`);
    };
    fault("state");
    rs.close({ restoreState: false });

    // 7. RESUME
    const template = ptraceGetXstate(pid);
    const ti = task.core.threadInfo!;
    seized.release(
      gpregsWords(ti.gpregs!),
      xsaveArea(ti.fpregs!, template),
      task.core.tc!.blkSigset,
      task.core.tc!.taskState === TASK_STATE.STOPPED,
    );
    log.info(`Task ${pid} resumed`);
    if (opts.pidfile) {
      Deno.writeTextFileSync(opts.pidfile, `${pid}`, { createNew: true });
    }
    const result: RestoreResult = {
      pid,
      stats: {
        forkingUs: Math.round((tForked - t0) * 1000),
        restoreUs: Math.round((performance.now() - t0) * 1000),
        pagesRestored: stats.pages,
      },
    };
    writeStats(opts.imagesDir, result.stats);
    if (!opts.detach) {
      result.exit = made.helper.status.then((s) => s.code);
    } else {
      await made.helper.status;
    }
    return result;
  } catch (e) {
    log.error(`Restore of task ${pid} failed; killing it`);
    if (seized?.attached) seized.kill();
    else {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    await made.helper.status.catch(() => {});
    throw e;
  }
}

/** Stages 4 to 6, inside the seized task. */
function restoreInside(
  rs: RemoteSyscalls,
  dump: DumpImages,
  task: TaskImages,
  maps: ReturnType<typeof parseMaps>,
  opts: RestoreOptions,
  log: Logger,
): { pages: number } {
  const pid = rs.task.pid;
  const code = decodeBase64(BLOBS.restorer);

  // The restorer area: code, args, ops, stack, arena, and room to park the vDSO block.
  const specials = maps.filter((m) => ["[vdso]", "[vvar]", "[vvar_vclock]"].includes(m.path));
  const parkSize = specials.length
    ? specials.reduce((a, m) => (m.end > a ? m.end : a), 0n) -
      specials.reduce((a, m) => (m.start < a ? m.start : a), specials[0].start)
    : 0n;
  // Ops are planned after the fds exist; size the area for the worst case first.
  const maxOps = maps.length + task.mm.vmas.length * 8 + task.pagemap.length * 2 + 16;
  const opsOff = AREA_ARGS + 64;
  const stackOff = Math.ceil((opsOff + maxOps * OP_SIZE) / 16) * 16;
  const arenaOff = stackOff + STACK_SIZE;
  const areaSize = BigInt(Math.ceil((arenaOff + ARENA_SIZE) / 4096) * 4096);
  const gap = findGap(occupied(task, maps), areaSize + parkSize + 0x10000n);
  const area = rs.scratch(Number(areaSize), true, remotePtr(gap));
  const arena = new RemoteArena(pid, remoteAdd(area, arenaOff), ARENA_SIZE);
  log.debug(`restorer area at 0x${gap.toString(16)} (${areaSize} bytes)`);

  // 4. FILES
  const fds = prepareFiles(rs, arena, dump, task, opts.shellJob ?? false);
  if (opts.faultInject === "files") throw new RestoreError("Fault injected at files");

  // 5. MEMORY
  const ops = planMemory({
    task,
    maps,
    area: { start: gap, end: gap + areaSize },
    tempBase: gap + areaSize + 0x8000n,
    mapFds: fds.maps,
    pagesFd: fds.pages,
  });
  if (ops.length > maxOps) throw new RestoreError(`Too many restorer operations (${ops.length})`);
  writeRemote(pid, remoteAdd(area, AREA_CODE), code);
  writeRemote(pid, remoteAdd(area, opsOff), encodeOps(ops));
  const args = new BigUint64Array([BigInt(ops.length), remoteAdd(area, opsOff), 0n, 0n, 0n]);
  writeRemote(pid, remoteAdd(area, AREA_ARGS), new Uint8Array(args.buffer));
  const tMem = performance.now();
  rs.run(area, remoteAdd(area, AREA_ARGS), remoteAdd(area, arenaOff));
  try {
    rs.waitFlag(remoteAdd(area, AREA_ARGS + 16), BLOB_TIMEOUT_MS);
  } finally {
    rs.interrupt();
  }
  const result = new BigInt64Array(2);
  readRemote(pid, remoteAdd(area, AREA_ARGS + 24), new Uint8Array(result.buffer));
  if (result[0] >= 0n) {
    const op = ops[Number(result[0])];
    throw new RestoreError(
      `Cannot restore memory of task ${pid}: ${op.what} failed with errno ${-result[1]}`,
    );
  }
  const pages = task.pagemap.reduce((n, e) => n + e.nrPages, 0);
  log.info(
    `Memory of task ${pid} restored: ${pages} pages in ${(performance.now() - tMem).toFixed(1)} ms`,
  );
  if (opts.faultInject === "memory") throw new RestoreError("Fault injected at memory");

  // 6. STATE: syscalls now run at a `syscall` instruction of the restored code.
  rs.retarget(parseMaps(readProcText(pid, "maps")).filter((m) => m.start !== gap));
  restoreTaskState(rs, arena, dump, task, fds, { shellJob: opts.shellJob ?? false }, log);
  return { pages };
}

function writeStats(dir: string, s: RestoreStats): void {
  try {
    new ImageWriter(dir, "stats-restore", "STATS").entry(
      stats_entrySchema,
      create(stats_entrySchema, {
        restore: create(restore_stats_entrySchema, {
          pagesCompared: 0n,
          pagesSkippedCow: 0n,
          forkingTime: s.forkingUs,
          restoreTime: s.restoreUs,
          pagesRestored: BigInt(s.pagesRestored),
        }),
      }),
    ).close();
  } catch {
    // A read-only images directory does not fail a restore that worked.
  }
}

export { join };
