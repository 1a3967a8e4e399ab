/**
 * `deno task bench`: dump throughput for a process with a large touched heap, images on tmpfs,
 * side by side with a plain write loop of the same number of bytes to tmpfs in the same run.
 *
 * The command line part also takes a tree of 20 processes x 4 threads x 8 MiB (its label
 * 20x4x8M): the cost of each process and thread.
 *
 * Usage: deno task bench [--mib 1024] [--runs 3]
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { dump, restore } from "../mod.ts";
import { libc } from "../src/syscalls/mod.ts";
import { readImage } from "../src/images/image.ts";
import { stats_entrySchema } from "../proto/gen/misc_pb.ts";
import { freshBundle } from "../src/cli/bundle_fresh.ts";
import {
  buildVictim,
  criu,
  criuArgv,
  sleep,
  startVictim,
  treePids,
  waitFile,
  waitGone,
  waitReport,
} from "../tests/helpers.ts";
import {
  type CliRun,
  frozenFullAndLast,
  type FrozenPair,
  sideBySide,
  startOrphan,
  tools,
} from "./bench_cli.ts";

// The command line runs the bundle only while it is current (src/cli/bundle_fresh.ts), else the
// sources, some 40 ms slower to load: a bench of a stale bundle would measure that.
if (!Deno.env.get("DENO_CRIU_SOURCES") && !freshBundle(new URL("../", import.meta.url))) {
  console.log("bench: the bundle is stale; bundling first (deno task bundle)");
  const b = await new Deno.Command(Deno.execPath(), {
    args: ["task", "bundle"],
    cwd: new URL("../", import.meta.url),
  }).output();
  if (!b.success) throw new Error(new TextDecoder().decode(b.stderr));
}

const { values } = parseArgs({
  options: { mib: { type: "string", default: "1024" }, runs: { type: "string", default: "3" } },
});
const MIB = Number(values.mib);
const RUNS = Number(values.runs);
const TMPFS = "/dev/shm";
const TREE_MIB = 64;
/** The command line's tree: 20 processes x 4 threads of this many MiB each. */
const CLI_TREE_MIB = 8;
/** A page rewritten every 381 us: 1% of a GiB each second. */
const DIRTY_US = Math.round(1e6 / ((MIB << 20) / 4096 / 100));

/**
 * On this VM a page that has been free for a few seconds is handed back to the hypervisor
 * (free page reporting), and touching it again costs a host fault (~7 us a page: ~2 s a GiB).
 * Which step draws on such memory would decide the comparison, so right before each measured
 * step 1.25x the heap size is written to tmpfs and freed: every step then writes into warm
 * pages, as on a machine whose memory is in use.
 */
function warm(dir: string): void {
  const path = join(dir, "warm.bin");
  plainWrite(Math.round(MIB * 1.25) << 20, path);
  Deno.removeSync(path);
}

function plainWrite(bytes: number, path: string): number {
  const chunk = new Uint8Array(8 << 20).fill(7);
  const t = performance.now();
  using f = Deno.openSync(path, { write: true, create: true, truncate: true });
  for (let done = 0; done < bytes;) {
    const n = Math.min(chunk.length, bytes - done);
    let off = 0;
    while (off < n) off += f.writeSync(chunk.subarray(off, n));
    done += n;
  }
  f.syncSync();
  return performance.now() - t;
}

function gbps(bytes: number, ms: number): string {
  return (bytes / 1e9 / (ms / 1000)).toFixed(2);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const heap = await buildVictim("heap");
const rows: {
  dumpMs: number;
  memwriteMs: number;
  writeMs: number;
  bytes: number;
  frozenMs: number;
}[] = [];
for (let run = 0; run < RUNS; run++) {
  const dir = Deno.makeTempDirSync({ dir: TMPFS, prefix: "criu-bench-" });
  try {
    const timeDump = async () => {
      const pid = await startOrphan(heap, [`${MIB}`], dir);
      const imgs = join(dir, "imgs");
      Deno.mkdirSync(imgs);
      warm(dir);
      const t = performance.now();
      const r = await dump({ pid, imagesDir: imgs });
      const ms = performance.now() - t;
      Deno.removeSync(imgs, { recursive: true });
      return { ms, r };
    };
    // The two measurements take turns at going first.
    const steps = [
      async () => (dumpRun = await timeDump()),
      () => {
        warm(dir);
        writeMs = plainWrite(MIB << 20, join(dir, "plain.bin"));
        Deno.removeSync(join(dir, "plain.bin"));
      },
    ];
    let dumpRun = { ms: 0, r: null as unknown as Awaited<ReturnType<typeof dump>> };
    let writeMs = 0;
    for (let i = 0; i < steps.length; i++) await steps[(i + run) % steps.length]();
    const dumpMs = dumpRun.ms, r = dumpRun.r;
    const bytes = r.stats.pagesWritten * 4096;
    rows.push({
      dumpMs,
      memwriteMs: r.stats.memwriteUs / 1000,
      writeMs,
      bytes,
      frozenMs: r.stats.frozenUs / 1000,
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  await sleep(100);
}

// A tiny process: the fixed cost of a dump.
const tinyDir = Deno.makeTempDirSync({ dir: TMPFS, prefix: "criu-bench-" });
const tiny: number[] = [];
try {
  for (let run = 0; run < RUNS; run++) {
    const pid = await startOrphan(heap, ["1"], tinyDir);
    const imgs = join(tinyDir, `imgs${run}`);
    Deno.mkdirSync(imgs);
    const t = performance.now();
    await dump({ pid, imagesDir: imgs });
    tiny.push(performance.now() - t);
  }
} finally {
  Deno.removeSync(tinyDir, { recursive: true });
}

/** Fresh anonymous memory, faulted in and filled: what a restore of the heap must at least do. */
function plainFaultAndFill(bytes: number): number {
  const t = performance.now();
  const addr = BigInt(libc.mmap(0n, BigInt(bytes), 3, 0x22, -1, 0n));
  const view = new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(addr)!, bytes),
  );
  view.fill(7);
  const ms = performance.now() - t;
  libc.munmap(addr, BigInt(bytes));
  return ms;
}

/** Dumps a heap victim of `mib` MiB with the CLI into `imgs` (the victim is our child, so its PID is free at once). */
async function dumpedHeap(mib: number, imgs: string): Promise<number> {
  const v = startVictim(["setsid", heap, "{out}", `${mib}`]);
  await waitReport(v, "ready", 60000);
  const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
  if (run.code !== 0) throw new Error(`dump failed: ${run.stderr}`);
  await v.child.status;
  return v.pid;
}

/**
 * A lazy restore of `imgs` (criu lazy-pages from the CLI, the restore through mod.ts): how long
 * until the restore returned (the process runs), and until the daemon had brought every page in.
 */
async function lazyRestore(imgs: string): Promise<{ returnMs: number; allMs: number }> {
  const [cmd, ...args] = criuArgv(["lazy-pages", "-D", imgs, "-o", "lazy.log"]);
  const daemon = new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).spawn();
  await waitFile(join(imgs, "lazy-pages.socket"));
  const t = performance.now();
  const r = await restore({ imagesDir: imgs, detach: true, lazyPages: true });
  const returnMs = performance.now() - t;
  const status = await daemon.status;
  const allMs = performance.now() - t;
  Deno.kill(r.pid, "SIGKILL");
  if (!status.success) throw new Error("criu lazy-pages failed");
  return { returnMs, allMs };
}

const restoreRows: { restoreMs: number; fillMs: number; lazyMs: number; lazyAllMs: number }[] = [];
const tinyRestore: number[] = [];
for (let run = 0; run < RUNS; run++) {
  const dir = Deno.makeTempDirSync({ dir: TMPFS, prefix: "criu-bench-" });
  try {
    const imgs = join(dir, "imgs");
    Deno.mkdirSync(imgs);
    const pid = await dumpedHeap(MIB, imgs);
    let restoreMs = 0, fillMs = 0;
    const steps = [
      async () => {
        warm(dir);
        const t = performance.now();
        const r = await restore({ imagesDir: imgs, detach: true });
        restoreMs = performance.now() - t;
        Deno.kill(r.pid, "SIGKILL");
        await waitGone(pid, 15000);
      },
      () => {
        warm(dir);
        fillMs = plainFaultAndFill(MIB << 20);
      },
    ];
    for (let i = 0; i < steps.length; i++) await steps[(i + run) % steps.length]();
    warm(dir);
    const lazy = await lazyRestore(imgs);
    await waitGone(pid, 15000);
    restoreRows.push({ restoreMs, fillMs, lazyMs: lazy.returnMs, lazyAllMs: lazy.allMs });
    const tiny = join(dir, "tiny");
    Deno.mkdirSync(tiny);
    await dumpedHeap(1, tiny);
    const t = performance.now();
    const r = await restore({ imagesDir: tiny, detach: true });
    tinyRestore.push(performance.now() - t);
    Deno.kill(r.pid, "SIGKILL");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

// A tree: 20 processes x 4 threads with 64 MiB each (dump through the CLI: the tree's root is
// our child, and a tracer must not be its parent's Deno).
const treeRows: { dumpMs: number; frozenMs: number; restoreMs: number }[] = [];
{
  const tree = await buildVictim("tree");
  const dir = Deno.makeTempDirSync({ dir: TMPFS, prefix: "criu-bench-" });
  try {
    for (let run = 0; run < Math.min(RUNS, 2); run++) {
      const imgs = join(dir, `tree${run}`);
      Deno.mkdirSync(imgs);
      const v = startVictim(["setsid", tree, "{out}", "20", "4", `${TREE_MIB}`]);
      await waitReport(v, "ready", 60000);
      const pids = treePids(v.pid);
      warm(dir);
      const t = performance.now();
      const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
      const dumpMs = performance.now() - t;
      if (d.code !== 0) throw new Error(`tree dump failed: ${d.stderr}`);
      await v.child.status;
      for (const pid of pids) await waitGone(pid, 15000);
      const stats = readImage(join(imgs, "stats-dump"), "STATS", stats_entrySchema)[0].message;
      warm(dir);
      const t2 = performance.now();
      const r = await restore({ imagesDir: imgs, detach: true });
      const restoreMs = performance.now() - t2;
      treeRows.push({ dumpMs, frozenMs: (stats.dump?.frozenTime ?? 0) / 1000, restoreMs });
      for (const pid of treePids(r.pid).reverse()) Deno.kill(pid, "SIGKILL");
      Deno.removeSync(imgs, { recursive: true });
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

// The command line, ours and CRIU 4.2's (where the oracle is here) taking turns: the heap, and
// a tiny process (start-up and fixed costs).
const cliDir = Deno.makeTempDirSync({ dir: TMPFS, prefix: "criu-bench-" });
let cliHeap, cliTiny, cliTree, frozen: FrozenPair[];
const dirty = await buildVictim("dirty");
const cliTreeBin = await buildVictim("tree");
try {
  cliHeap = await sideBySide({ bin: heap, args: [`${MIB}`] }, RUNS, cliDir, () => warm(cliDir));
  cliTiny = await sideBySide({ bin: heap, args: ["1"] }, RUNS, cliDir, () => {});
  // A tree of mid-sized processes: the cost of each process and thread, beside its pages.
  cliTree = await sideBySide(
    { bin: cliTreeBin, args: ["20", "4", `${CLI_TREE_MIB}`] },
    RUNS,
    cliDir,
    () => {},
  );
  // Pre-dumps: the last dump's frozen time against a full dump's, of a process rewriting 1% of
  // its memory each second (a page every DIRTY_US).
  frozen = [];
  for (let run = 0; run < RUNS; run++) {
    frozen.push(await frozenFullAndLast(dirty, MIB, DIRTY_US, cliDir, () => warm(cliDir)));
  }
} finally {
  Deno.removeSync(cliDir, { recursive: true });
}

const d = median(rows.map((r) => r.dumpMs));
const w = median(rows.map((r) => r.writeMs));
const bytes = rows[0].bytes;
const ratios = rows.map((r) => r.dumpMs / r.writeMs);
console.log(`deno-criu bench: ${MIB} MiB touched heap, images on ${TMPFS}, ${RUNS} runs (median)`);
console.log(
  `  dump           ${d.toFixed(0).padStart(6)} ms  ${gbps(bytes, d)} GB/s  (frozen ${
    median(rows.map((r) => r.frozenMs)).toFixed(0)
  } ms, pages written in ${median(rows.map((r) => r.memwriteMs)).toFixed(0)} ms)`,
);
console.log(`  plain write    ${w.toFixed(0).padStart(6)} ms  ${gbps(bytes, w)} GB/s`);
console.log(
  `  ratio          ${median(ratios).toFixed(2)}x median of runs (target <= 1.5x); ` +
    `per run: ${ratios.map((x) => x.toFixed(2)).join(" ")}`,
);
const rr = median(restoreRows.map((r) => r.restoreMs));
const ff = median(restoreRows.map((r) => r.fillMs));
const rratios = restoreRows.map((r) => r.restoreMs / r.fillMs);
console.log(`  restore        ${rr.toFixed(0).padStart(6)} ms  ${gbps(bytes, rr)} GB/s`);
console.log(
  `  fault+fill     ${ff.toFixed(0).padStart(6)} ms  ${
    gbps(bytes, ff)
  } GB/s  (fresh anonymous memory)`,
);
console.log(
  `  ratio          ${median(rratios).toFixed(2)}x median of runs (target <= 1.5x); ` +
    `per run: ${rratios.map((x) => x.toFixed(2)).join(" ")}`,
);
const lz = median(restoreRows.map((r) => r.lazyMs));
console.log(
  `  lazy restore   ${lz.toFixed(0).padStart(6)} ms  (${(lz / rr).toFixed(2)}x the restore, ` +
    `target <= 0.25x; every page in after ${
      median(restoreRows.map((r) => r.lazyAllMs)).toFixed(0)
    } ms)`,
);
console.log(`  tiny restore   ${median(tinyRestore).toFixed(1).padStart(6)} ms  (1 MiB process)`);
const treeMiB = 20 * TREE_MIB;
console.log(
  `tree: 20 processes x 4 threads x ${TREE_MIB} MiB (${treeMiB} MiB), median of ${treeRows.length}`,
);
console.log(
  `  dump (CLI)     ${median(treeRows.map((r) => r.dumpMs)).toFixed(0).padStart(6)} ms  ` +
    `(frozen ${median(treeRows.map((r) => r.frozenMs)).toFixed(0)} ms)`,
);
console.log(
  `  restore        ${median(treeRows.map((r) => r.restoreMs)).toFixed(0).padStart(6)} ms`,
);
console.log(`  tiny dump      ${median(tiny).toFixed(1).padStart(6)} ms  (1 MiB process)`);

const cliRow = (runs: CliRun[]) => {
  const ms = median(runs.map((r) => r.ms));
  const peak = Math.max(...runs.map((r) => r.peakKiB)) / 1024;
  return { ms, text: `${ms.toFixed(0).padStart(6)} ms ${peak.toFixed(0).padStart(4)} MB` };
};
console.log(
  `command line (a fresh process each; median of ${RUNS}; peak resident memory), ` +
    tools().map((t) => t.name).join(" and ") + " taking turns",
);
console.log(`                          dump                restore`);
for (
  const [label, table] of [
    [`${MIB} MiB`, cliHeap],
    ["1 MiB", cliTiny],
    [`20x4x${CLI_TREE_MIB}M`, cliTree],
  ] as const
) {
  const rows = [...table.entries()].map(([name, trips]) => ({
    name,
    dump: cliRow(trips.map((t) => t.dump)),
    restore: cliRow(trips.map((t) => t.restore)),
  }));
  rows.forEach((r, i) =>
    console.log(
      `  ${(i ? "" : label).padEnd(10)} ${r.name.padEnd(9)} ${r.dump.text}   ${r.restore.text}`,
    )
  );
  if (rows.length === 2) {
    const [a, b] = rows;
    console.log(
      `  ${"".padEnd(10)} ${"ratio".padEnd(9)} ${(a.dump.ms / b.dump.ms).toFixed(2).padStart(6)}x` +
        `${"".padEnd(11)} ${(a.restore.ms / b.restore.ms).toFixed(2).padStart(6)}x`,
    );
  }
}
console.log(
  `pre-dumps: ${MIB} MiB, a page rewritten every ${DIRTY_US} us (1% a second), our command line, ` +
    `median of ${RUNS}`,
);
const full = median(frozen.map((f) => f.full)), last = median(frozen.map((f) => f.last));
console.log(
  `  frozen         full dump ${full.toFixed(0)} ms; pre-dumps ` +
    `${median(frozen.map((f) => f.preDumps[0])).toFixed(0)}, ` +
    `${median(frozen.map((f) => f.preDumps[1])).toFixed(0)} ms; last dump ${last.toFixed(1)} ms ` +
    `(${(last / full).toFixed(3)}x the full, target <= 0.1x); per run: ` +
    frozen.map((f) => `${f.last.toFixed(0)}/${f.full.toFixed(0)}`).join(" "),
);
