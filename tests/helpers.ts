/**
 * Shared test helpers: build and start victim programs, wait for readiness, run the `criu` CLI,
 * decode images with Debian's crit (the external judge of our format).
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DENO_RUN } from "../src/util/self.ts";

/** The repository root. */
export const ROOT: string = join(dirname(fileURLToPath(import.meta.url)), "..");
const BUILD = join(ROOT, "tests", ".build");

/** Compiles tests/victims/NAME.c (once per source change) and returns the binary path. */
export async function buildVictim(name: string, flags: string[] = []): Promise<string> {
  const src = join(ROOT, "tests", "victims", `${name}.c`);
  // A static build (for containers) is kept apart from the usual one.
  const bin = join(BUILD, flags.includes("-static") ? `${name}-static` : name);
  Deno.mkdirSync(BUILD, { recursive: true });
  try {
    if (Deno.statSync(bin).mtime! >= Deno.statSync(src).mtime!) return bin;
  } catch {
    // not built yet
  }
  const out = await new Deno.Command("gcc", {
    args: ["-O1", "-Wall", "-pthread", ...flags, "-o", bin, src],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`gcc ${name}.c failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
  return bin;
}

/**
 * A container root for tests/victims/mntns.c (built static): a directory holding only the
 * program and the directories it mounts on, and a directory of the host it binds as external.
 */
export function mntnsRoot(bin: string): { root: string; ext: string; argv: string[] } {
  const root = tmpDir("mntns-root-");
  for (const d of ["proc", "tmp", "mnt", "ext", "slave", "sys", "ub", "dev/pts", "dev/mqueue"]) {
    Deno.mkdirSync(`${root}/${d}`, { recursive: true });
  }
  Deno.copyFileSync(bin, `${root}/mntns`);
  Deno.writeTextFileSync(`${root}/filebind`, "");
  const ext = tmpDir("mntns-ext-");
  Deno.writeTextFileSync(`${ext}/hostfile`, "from the host");
  return { root, ext, argv: ["setsid", `${root}/mntns`, root, ext] };
}

/**
 * A container root for tests/victims/userns.c (built static) in its "full" mode: the program
 * and the directories it mounts on, open to the root of its user namespace (whose ids are
 * not the host's); argv starts it, reporting into ROOT/out.log (startVictim's with `root` as
 * its directory), with `extra` arguments after "full".
 */
export function usernsRoot(bin: string, extra: string[] = []): { root: string; argv: string[] } {
  // Below a directory of its own: a test may close that to the namespace's root once it runs.
  const root = `${tmpDir("userns-root-")}/root`;
  Deno.mkdirSync(root, { mode: 0o755 });
  Deno.chmodSync(dirname(root), 0o755);
  for (const d of ["proc", "tmp"]) Deno.mkdirSync(`${root}/${d}`);
  Deno.copyFileSync(bin, `${root}/userns`);
  return { root, argv: ["setsid", `${root}/userns`, "{out}", root, "full", ...extra] };
}

/** A running victim process. */
export interface Victim {
  pid: number;
  child: Deno.ChildProcess;
  /** The file the victim reports into. */
  out: string;
  /** Its scratch directory. */
  dir: string;
}

const made: string[] = [];
// Images of big victims add up over a run: every directory made here goes when the test file
// is done (set DENO_CRIU_KEEP_TMP=1 to look at them afterwards).
globalThis.addEventListener("unload", () => {
  if (Deno.env.get("DENO_CRIU_KEEP_TMP")) return;
  for (const dir of made) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // a restored victim may still hold it; it is in /tmp
    }
  }
});

/** A fresh temporary directory, removed when the test file is done. */
export function tmpDir(prefix = "criu-test-"): string {
  const dir = Deno.makeTempDirSync({ prefix });
  made.push(dir);
  return dir;
}

/**
 * Starts `argv` with stdio on /dev/null. `{out}` and `{dir}` in argv are replaced by the
 * victim's report file and scratch directory.
 */
export function startVictim(argv: string[], dir = tmpDir("victim-")): Victim {
  const out = join(dir, "out.log");
  Deno.writeTextFileSync(out, "");
  const args = argv.map((a) => a.replaceAll("{out}", out).replaceAll("{dir}", dir));
  const child = new Deno.Command(args[0], {
    args: args.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  return { pid: child.pid, child, out, dir };
}

/** Waits until the victim's report holds a line starting with `prefix`; returns its k=v pairs. */
export async function waitReport(
  v: Victim,
  prefix = "ready",
  timeoutMs = 10000,
): Promise<Record<string, string>> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const line = Deno.readTextFileSync(v.out).split("\n").find((l) => l.startsWith(prefix));
    if (line) {
      const kv: Record<string, string> = {};
      for (const w of line.split(/\s+/).slice(1)) {
        const i = w.indexOf("=");
        if (i > 0) kv[w.slice(0, i)] = w.slice(i + 1);
      }
      return kv;
    }
    await sleep(20);
  }
  throw new Error(`victim ${v.pid} did not report "${prefix}": ${Deno.readTextFileSync(v.out)}`);
}

/** Kills the victim (if alive) and reaps it. */
export async function stopVictim(v: Victim): Promise<Deno.CommandStatus> {
  try {
    v.child.kill("SIGKILL");
  } catch {
    // already gone
  }
  return await v.child.status;
}

/** SIGKILL to each of `pids` still there (restored tasks are not our children to stop). */
export function killAll(...pids: number[]): void {
  // 0 and negative numbers would name process groups: the test's own among them.
  for (const pid of pids.filter((p) => p > 0)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A file's text, or "" when it cannot be read. */
export function safeRead(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

/** Waits for a line of `path` matching `re` and returns it; throws with the file's text on timeout. */
export async function waitLine(path: string, re: RegExp, timeoutMs = 5000): Promise<string> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const line = safeRead(path).split("\n").find((l) => re.test(l));
    if (line) return line;
    await sleep(20);
  }
  throw new Error(`no line matching ${re} in ${path}: ${safeRead(path)}`);
}

/** Waits until `path` exists (a socket a daemon listens on, say). */
export async function waitFile(path: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      Deno.statSync(path);
      return;
    } catch {
      await sleep(20);
    }
  }
  throw new Error(`${path} did not appear`);
}

/**
 * Asks a victim to check itself: sends `signal` to `pid` (the victim unless given), waits for
 * its PASS or FAIL line and returns its whole report, for the caller to match.
 */
export async function verdict(
  v: Victim,
  pid = v.pid,
  signal: Deno.Signal = "SIGTERM",
  timeoutMs = 5000,
): Promise<string> {
  Deno.kill(pid, signal);
  await waitLine(v.out, /^(PASS|FAIL)/, timeoutMs);
  return Deno.readTextFileSync(v.out);
}

/**
 * A directory holding `criu`, a script that runs this repository's criu, and PATH with it
 * first: how LXC, runc and podman find criu.
 */
export function criuOnPath(): { bin: string; env: Record<string, string> } {
  const dir = tmpDir("criu-bin-");
  const argv = criuArgv([]).map((a) => `'${a}'`).join(" ");
  Deno.writeTextFileSync(join(dir, "criu"), `#!/bin/sh\nexec ${argv} "$@"\n`, { mode: 0o755 });
  return { bin: join(dir, "criu"), env: { PATH: `${dir}:${Deno.env.get("PATH")}` } };
}

/** Whether `tool` is on PATH. */
export function has(tool: string): boolean {
  return new Deno.Command("sh", { args: ["-c", `command -v ${tool}`], stdout: "null" })
    .outputSync().success;
}

/**
 * Runs a tool (stdin /dev/null) and returns its exit code and its output, stdout then stderr;
 * killed after `timeoutMs` (10 minutes unless given).
 */
export async function runTool(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd, {
    args,
    env: opts.env,
    cwd: opts.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(opts.timeoutMs ?? 600_000),
  }).output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

/** Result of one criu run. */
export interface CriuRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** The command line that runs this repository's criu with `args` (for other launchers too). */
export function criuArgv(args: string[]): string[] {
  return [Deno.execPath(), ...DENO_RUN, join(ROOT, "main.ts"), ...args];
}

/**
 * Runs `criu ARGS` (this repository's main.ts under Deno). A run that hangs is killed after two
 * minutes, so a hang fails its test instead of stalling the suite.
 */
export async function criu(args: string[], env: Record<string, string> = {}): Promise<CriuRun> {
  const [cmd, ...argv] = criuArgv(args);
  const out = await new Deno.Command(cmd, {
    args: argv,
    stdout: "piped",
    stderr: "piped",
    env,
    signal: AbortSignal.timeout(120_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Process state letter from /proc/PID/stat, or undefined when gone. */
export function procState(pid: number): string | undefined {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return s.slice(s.lastIndexOf(")") + 2, s.lastIndexOf(")") + 3);
  } catch {
    return undefined;
  }
}

/**
 * A task's state once it has settled on `want`, or the last one seen after `ms`: a task just
 * thawed may run for a moment (a syscall restarted) before it sleeps again, and a check of a
 * single read would fail on that moment. A task left stopped or gone still fails.
 */
export async function settledState(
  pid: number,
  want: string,
  ms = 2000,
): Promise<string | undefined> {
  const end = Date.now() + ms;
  let state = procState(pid);
  while (state !== want && state !== undefined && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 10));
    state = procState(pid);
  }
  return state;
}

/** TracerPid of a task. */
export function tracerPid(pid: number): number {
  const m = /TracerPid:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return Number(m![1]);
}

/** /proc/PID/maps text. */
export function procMaps(pid: number): string {
  return Deno.readTextFileSync(`/proc/${pid}/maps`);
}

/** A decoded image: crit's JSON. */
// deno-lint-ignore no-explicit-any
export type Crit = { magic: string; entries: any[] };

/**
 * Decodes every image in `dir` (pages-N.img excepted) with crit's own decoder: what
 * `crit decode -i FILE --pretty` does, run for all files in one Python (see crit_decode_all.py).
 */
export async function critDecodeAll(dir: string): Promise<Map<string, Crit>> {
  const names = [...Deno.readDirSync(dir)].map((e) => e.name)
    .filter((n) => (n.endsWith(".img") || n.startsWith("stats-")) && !/^pages-\d+\.img$/.test(n))
    .sort();
  const out = Deno.makeTempDirSync({ prefix: "crit-" });
  try {
    const run = await new Deno.Command("/usr/bin/python3", {
      args: [join(ROOT, "tests", "crit_decode_all.py"), out, ...names.map((n) => join(dir, n))],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!run.success) throw new Error(new TextDecoder().decode(run.stderr));
    return new Map(
      names.map((n) => [n, JSON.parse(Deno.readTextFileSync(join(out, `${n}.json`))) as Crit]),
    );
  } finally {
    Deno.removeSync(out, { recursive: true });
  }
}

/** A number crit printed (decimal number, or "0x..." string for hex fields) as bigint. */
export function num(v: unknown): bigint {
  if (typeof v === "number") return BigInt(v);
  if (typeof v === "string") return BigInt(v);
  throw new Error(`not a number: ${JSON.stringify(v)}`);
}

/** Waits until `pid` no longer exists (the reaper may lag a few seconds). */
export async function waitGone(pid: number, timeoutMs = 10000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const st = procState(pid);
    if (st === undefined) return true;
    await sleep(50);
  }
  return false;
}

/**
 * A TCP port free on every address in both families, below the ephemeral range (a random
 * ephemeral port could be another connection's local port).
 */
export function freePort(): number {
  for (;;) {
    const p = 10000 + Math.floor(Math.random() * 22000);
    try {
      Deno.listen({ hostname: "0.0.0.0", port: p }).close();
      Deno.listen({ hostname: "::", port: p }).close();
      return p;
    } catch {
      // taken: another
    }
  }
}

/** A network namespace for a peer, joined to this one by a veth pair: two hosts on one box. */
export interface PeerNet extends AsyncDisposable {
  /** Its name, for `ip netns exec`. */
  ns: string;
  /** Our end's address. */
  hostAddr: string;
  /** The peer's address. */
  peerAddr: string;
}

async function ip(args: string[]): Promise<void> {
  const out = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/** Makes a fresh peer namespace with a /24 of its own; disposing of it removes both. */
export async function peerNetns(): Promise<PeerNet> {
  const id = 10000 + Math.floor(Math.random() * 89999);
  const ns = `dcr${id}`, host = `dcr${id}a`, peer = `dcr${id}b`;
  const net = `10.${20 + (id % 200)}.${id % 250}`;
  await ip(["netns", "add", ns]);
  try {
    await ip(["link", "add", host, "type", "veth", "peer", "name", peer]);
    await ip(["link", "set", peer, "netns", ns]);
    await ip(["addr", "add", `${net}.1/24`, "dev", host]);
    await ip(["link", "set", host, "up"]);
    await ip(["-n", ns, "addr", "add", `${net}.2/24`, "dev", peer]);
    await ip(["-n", ns, "link", "set", peer, "up"]);
    await ip(["-n", ns, "link", "set", "lo", "up"]);
  } catch (e) {
    await ip(["netns", "del", ns]).catch(() => {});
    throw e;
  }
  return {
    ns,
    hostAddr: `${net}.1`,
    peerAddr: `${net}.2`,
    async [Symbol.asyncDispose]() {
      await ip(["link", "del", host]).catch(() => {});
      await ip(["netns", "del", ns]).catch(() => {});
    },
  };
}

/** PIDs of the processes below and including `root` (children of every thread, recursively). */
export function treePids(root: number): number[] {
  const out = [root];
  // A thread (or a process) may end while it is read: it has no children then.
  const read = (path: string) => {
    try {
      return Deno.readTextFileSync(path).trim();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return "";
      throw e;
    }
  };
  for (let i = 0; i < out.length; i++) {
    let tasks: Deno.DirEntry[];
    try {
      tasks = [...Deno.readDirSync(`/proc/${out[i]}/task`)];
    } catch (e) {
      if (e instanceof Deno.errors.NotFound && i > 0) continue;
      throw e;
    }
    for (const t of tasks) {
      const kids = read(`/proc/${out[i]}/task/${t.name}/children`);
      if (kids) out.push(...kids.split(/\s+/).map(Number));
    }
  }
  return [...new Set(out)];
}

/** The CRIU 4.2 oracle binary beside the project (../shared/oracle), if this machine has it. */
export const ORACLE: string = join(ROOT, "..", "shared", "oracle", "criu-4.2", "criu");

/** The oracle's path when present, else undefined. */
export function oracle(): string | undefined {
  try {
    Deno.statSync(ORACLE);
    return ORACLE;
  } catch {
    return undefined;
  }
}

/**
 * Where the CRIU 4.2 oracle is present: it refuses to restore `imgs`, saying `why` in its log,
 * and leaves none of `pids` behind.
 */
export async function oracleRefuses(imgs: string, why: RegExp, pids: number[]): Promise<void> {
  const o = oracle();
  if (!o) return;
  const run = await new Deno.Command(o, {
    args: ["restore", "-d", "-D", imgs, "-o", "oracle.log"],
    stdout: "null",
    stderr: "null",
  }).output();
  assert(run.code !== 0, `CRIU 4.2 restored what it should refuse (${why})`);
  assertMatch(Deno.readTextFileSync(`${imgs}/oracle.log`), why);
  for (const pid of pids) assert(await waitGone(pid), `task ${pid} left by CRIU 4.2`);
}

/**
 * Dumps the tree of victim `v` (killing it), waits until every task of it is gone, and
 * restores it detached; throws with criu's words when either fails. Returns the images dir.
 */
export async function roundTrip(
  v: Victim,
  opts: { dump?: string[]; restore?: string[] } = {},
): Promise<string> {
  const pids = treePids(v.pid);
  const imgs = tmpDir();
  const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, ...(opts.dump ?? [])]);
  if (d.code !== 0) throw new Error(`dump failed (${d.code}): ${d.stderr}`);
  await v.child.status;
  for (const pid of pids) await waitGone(pid);
  const r = await criu(["restore", "-d", "-D", imgs, ...(opts.restore ?? [])]);
  if (r.code !== 0) throw new Error(`restore failed (${r.code}): ${r.stderr}`);
  return imgs;
}

/**
 * The usual check of a victim: waits for its report, takes its tree round trip (roundTrip),
 * asks it to check itself (`signal`, SIGTERM unless given) and matches its verdict with `pass`;
 * every task of its tree goes after.
 */
export async function checkAcrossRoundTrip(
  v: Victim,
  pass: RegExp,
  opts: {
    dump?: string[];
    restore?: string[];
    signal?: Deno.Signal;
    timeoutMs?: number;
    /** Why the test is skipped when the victim reports SKIP (what the machine lacks). */
    skipped?: string;
  } = {},
): Promise<void> {
  let pids: number[] = [];
  try {
    await waitReport(v);
    if (opts.skipped && /^SKIP/m.test(Deno.readTextFileSync(v.out))) {
      console.log(`skipped: ${opts.skipped}`);
      return;
    }
    pids = treePids(v.pid);
    await roundTrip(v, { dump: opts.dump, restore: opts.restore });
    const report = await verdict(v, v.pid, opts.signal ?? "SIGTERM", opts.timeoutMs ?? 5000);
    assertMatch(report, pass);
  } finally {
    killAll(v.pid, ...pids);
    await stopVictim(v);
  }
}

/**
 * A dump of task `pid` that must be refused: exit code 1, an error matching `re`, and the task
 * left running as it was (no tracer, not stopped).
 */
export async function dumpRefused(pid: number, re: RegExp, args: string[] = []): Promise<void> {
  const run = await criu(["dump", "-t", `${pid}`, "-D", tmpDir(), ...args]);
  assertEquals(run.code, 1, run.stderr);
  assertMatch(run.stderr, re);
  assertEquals(tracerPid(pid), 0);
  // Running, or back in its sleep a moment after the dump let it go.
  assertMatch(procState(pid) ?? "gone", /^[SR]$/);
}
