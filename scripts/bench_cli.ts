/**
 * The bench's command-line part: ours and CRIU 4.2's `criu` run the same way, taking turns, each
 * a fresh process (start-up included), timed from just before its exec to its exit, with its
 * peak resident memory (the largest of it and the children it waited for).
 *
 * @module
 */
import { join } from "node:path";
import { readImage } from "../src/images/image.ts";
import { stats_entrySchema } from "../proto/gen/misc_pb.ts";
import {
  criuArgv,
  ORACLE,
  oracle,
  sleep,
  treePids,
  waitGone,
  waitReport,
} from "../tests/helpers.ts";

/** One command-line run. */
export interface CliRun {
  ms: number;
  /** Peak resident set, KiB. */
  peakKiB: number;
}

/** A `criu` to run: ours (this repository's main.ts under Deno) or CRIU 4.2's. */
export interface Tool {
  name: string;
  argv: (args: string[]) => string[];
}

/** Ours, and CRIU 4.2 where this machine has the oracle (../shared/oracle). */
export function tools(): Tool[] {
  const ours: Tool = { name: "ours", argv: (args) => criuArgv(args) };
  return oracle() ? [ours, { name: "CRIU 4.2", argv: (args) => [ORACLE, ...args] }] : [ours];
}

/** Waits for a command, then prints its wall time (ms) and the peak RSS of what it waited for. */
const TIMER = `
import json, resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
ms = (time.monotonic() - t) * 1000
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": r.returncode, "ms": ms, "peak": peak,
                  "stderr": r.stderr.decode(errors="replace")[-2000:]}))
`;

/** Runs `argv`, failing with its last words when it fails. */
export async function timed(argv: string[]): Promise<CliRun> {
  const out = await new Deno.Command("python3", {
    args: ["-c", TIMER, ...argv],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  if (r.code !== 0) throw new Error(`${argv.join(" ")} failed (${r.code}): ${r.stderr}`);
  return { ms: r.ms, peakKiB: r.peak };
}

/**
 * Starts `bin ARGS` in a session of its own, not our child (Deno's reaper would steal its
 * ptrace stops), and waits for its "ready".
 */
export async function startOrphan(bin: string, args: string[], dir: string): Promise<number> {
  const out = join(dir, "out.log");
  Deno.writeTextFileSync(out, "");
  const sh = await new Deno.Command("sh", {
    args: ["-c", `setsid "$0" "$@" </dev/null >/dev/null 2>&1 & echo $!`, bin, out, ...args],
    stdout: "piped",
  }).output();
  const pid = Number(new TextDecoder().decode(sh.stdout).trim());
  // deno-lint-ignore no-explicit-any
  await waitReport({ pid, out, dir, child: null as any }, "ready", 60000);
  return pid;
}

/** A dump and a restore of one process by one tool. */
export interface RoundTrip {
  dump: CliRun;
  restore: CliRun;
}

/** A victim of the round trips: `bin OUT ARGS` (it writes "ready" into OUT). */
export interface BenchVictim {
  bin: string;
  args: string[];
}

/**
 * `runs` round trips by each tool, taking turns (which goes first alternates): the tree of
 * `victim` dumped into tmpfs under `dir`, then restored (-d) from those images and killed.
 * `warm` runs before each measured step.
 */
export async function sideBySide(
  victim: BenchVictim,
  runs: number,
  dir: string,
  warm: () => void,
): Promise<Map<string, RoundTrip[]>> {
  const all = tools();
  const out = new Map(all.map((t) => [t.name, [] as RoundTrip[]]));
  const gone = async (pids: number[], what: string) => {
    for (const pid of pids) {
      if (!await waitGone(pid, 15000)) throw new Error(`${what}: ${pid} is still there`);
    }
  };
  for (let run = 0; run < runs; run++) {
    for (let i = 0; i < all.length; i++) {
      const tool = all[(i + run) % all.length];
      const imgs = Deno.makeTempDirSync({ dir, prefix: "imgs-" });
      try {
        const pid = await startOrphan(victim.bin, victim.args, dir);
        const pids = treePids(pid);
        warm();
        const dump = await timed(tool.argv(["dump", "-t", `${pid}`, "-D", imgs, "-o", "d.log"]));
        await gone(pids, `${tool.name} dumped the tree`);
        warm();
        const restore = await timed(tool.argv(["restore", "-d", "-D", imgs, "-o", "r.log"]));
        for (const p of treePids(pid).reverse()) Deno.kill(p, "SIGKILL");
        await gone(pids, "the restored tree was killed");
        out.get(tool.name)!.push({ dump, restore });
      } finally {
        Deno.removeSync(imgs, { recursive: true });
      }
      await sleep(100);
    }
  }
  return out;
}

/** Frozen times (ms) of a full dump and of the last dump after two pre-dumps. */
export interface FrozenPair {
  full: number;
  last: number;
  preDumps: number[];
}

/**
 * Our command line on a process of `mib` MiB rewriting a page every `us` microseconds (the
 * `dirty` victim): the frozen time of a full dump of one, and of the last dump of another after
 * two pre-dumps a second apart (--track-mem), from their stats images.
 */
export async function frozenFullAndLast(
  dirty: string,
  mib: number,
  us: number,
  dir: string,
  warm: () => void,
): Promise<FrozenPair> {
  const ours = tools()[0];
  // A pre-dump's stats are in stats-dump too, as CRIU writes them.
  const frozen = (imgs: string) => {
    const s = readImage(join(imgs, "stats-dump"), "STATS", stats_entrySchema)[0].message;
    return Number(s.dump?.frozenTime ?? 0) / 1000;
  };
  const base = Deno.makeTempDirSync({ dir, prefix: "frozen-" });
  try {
    const sub = (name: string) => {
      Deno.mkdirSync(join(base, name));
      return join(base, name);
    };
    let pid = await startOrphan(dirty, [`${mib}`, `${us}`], dir);
    await sleep(1000);
    warm();
    await timed(ours.argv(["dump", "-t", `${pid}`, "-D", sub("full")]));
    const full = frozen(join(base, "full"));
    await waitGone(pid, 15000);

    pid = await startOrphan(dirty, [`${mib}`, `${us}`], dir);
    await sleep(1000);
    const preDumps: number[] = [];
    let prev: string | undefined;
    for (const name of ["p1", "p2"]) {
      const parent = prev ? ["--prev-images-dir", `../${prev}`] : [];
      await timed(
        ours.argv(["pre-dump", "-t", `${pid}`, "-D", sub(name), "--track-mem", ...parent]),
      );
      preDumps.push(frozen(join(base, name)));
      prev = name;
      await sleep(1000);
    }
    // Not warmed: it writes little, and the warming's freed memory would go back to the
    // hypervisor during it.
    await timed(
      ours.argv([
        "dump",
        "-t",
        `${pid}`,
        "-D",
        sub("last"),
        "--track-mem",
        "--prev-images-dir",
        "../p2",
      ]),
    );
    await waitGone(pid, 15000);
    return { full, last: frozen(join(base, "last")), preDumps };
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
}
