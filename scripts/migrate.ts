/**
 * `deno task migrate`: a live migration between two network namespaces standing for two hosts,
 * A and B, on one LAN (a bridge in a fourth namespace), while a client in a third keeps its TCP
 * connection to the service and measures how long it waited for an answer.
 *
 * ```
 *   client 10.77.0.3 ──┐
 *   host A 10.77.0.1 ──┼── bridge        service address 10.77.0.100: on A, then on B
 *   host B 10.77.0.2 ──┘
 * ```
 * 1. The service (tests/victims/echoer.c: a TCP echo server with MIB MiB it keeps rewriting,
 *    PCT percent a second) runs on A; the client talks to it.
 * 2. Pre-dumps on A (`--track-mem`), their pages sent to a page server on B, each chained to the
 *    last, until the pages written stop shrinking.
 * 3. The last dump (`--tcp-established`, only what was written since, through the page server):
 *    the service is frozen for this one alone, then killed.
 * 4. The service address moves from A to B, the dump's other images are copied over, and B
 *    restores the service lazily (`restore --lazy-pages` with `criu lazy-pages`): it runs at
 *    once, its pages coming in as it touches them and in the background.
 * 5. The address is announced on B (gratuitous ARP, or the client's neighbour entry renewed
 *    where there is no arping); the client's connection goes on.
 *
 * It prints each step's figures and the downtime: from the last dump's start until the restore
 * returned (the service frozen, then running again), and the client's longest wait.
 *
 * Usage: deno task migrate [--mib 256] [--pct 1] [--rounds 6]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { buildVictim, ROOT, safeRead, waitFile } from "../tests/helpers.ts";
import { DENO_RUN } from "../src/util/self.ts";

const { values } = parseArgs({
  options: {
    mib: { type: "string", default: "256" },
    pct: { type: "string", default: "1" },
    rounds: { type: "string", default: "6" },
  },
});
const CRIU = [Deno.execPath(), ...DENO_RUN, join(ROOT, "main.ts")];
const tag = `${Deno.pid % 100000}`;
const NS = { lan: `mig-lan-${tag}`, a: `mig-a-${tag}`, b: `mig-b-${tag}`, c: `mig-c-${tag}` };
const SERVICE_IP = "10.77.0.100", PORT = 7000, PS_PORT = 27000;
const HOST_IP = { a: "10.77.0.1", b: "10.77.0.2", c: "10.77.0.3" };

/**
 * `argv` in network namespace `ns`: joined alone (nsenter), the mounts staying criu's and the
 * service's (`ip netns exec` would give each a mount namespace of its own).
 */
function inNs(ns: string, argv: string[]): string[] {
  return ["nsenter", `--net=/run/netns/${ns}`, ...argv];
}

/** Runs `argv` (in namespace `ns`, if given); its stdout. Throws with its stderr on failure. */
async function run(ns: string | undefined, argv: string[]): Promise<string> {
  const full = ns ? inNs(ns, argv) : argv;
  const o = await new Deno.Command(full[0], { args: full.slice(1), stdin: "null" }).output();
  const text = new TextDecoder();
  if (!o.success) {
    throw new Error(`${argv.join(" ")}: ${text.decode(o.stderr).trim() || `exit ${o.code}`}`);
  }
  return text.decode(o.stdout);
}

/** `criu args` in namespace `ns`; its output. */
function criu(ns: string, args: string[]): Promise<string> {
  return run(ns, [...CRIU, ...args]);
}

/** A dump's options that send its pages to B's page server. */
const TO_B = ["--page-server", "--address", HOST_IP.b, "--port", `${PS_PORT}`];

/** A page server on B for one dump into `dir` (`parent`: its --prev-images-dir), ready. */
async function pageServer(dir: string, parent: string[]): Promise<void> {
  await criu(NS.b, [
    "page-server",
    "-d",
    "-D",
    dir,
    "--port",
    `${PS_PORT}`,
    ...parent,
    "-o",
    "ps.log",
  ]);
}

/** A process started in namespace `ns`, ours to reap, its stdout piped. */
function start(ns: string, argv: string[]): Deno.ChildProcess {
  const full = inNs(ns, argv);
  return new Deno.Command(full[0], {
    args: full.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** A figure of `--display-stats`' block. */
function stat(out: string, name: string): number {
  const m = new RegExp(`^${name}: (\\d+)`, "m").exec(out);
  if (!m) throw new Error(`no "${name}" in: ${out}`);
  return Number(m[1]);
}

async function waitFor(what: string, ok: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The LAN: a bridge, each host on it through a veth pair; the service address on A. */
async function setUp(): Promise<void> {
  for (const ns of Object.values(NS)) await run(undefined, ["ip", "netns", "add", ns]);
  const lan = (cmd: string) => run(NS.lan, ["sh", "-c", cmd]);
  await lan("ip link add br0 type bridge && ip link set br0 up && ip link set lo up");
  for (const h of ["a", "b", "c"] as const) {
    await run(undefined, [
      "ip",
      "link",
      "add",
      `mig${h}${tag}`,
      "netns",
      NS[h],
      "type",
      "veth",
      "peer",
      "name",
      `lan${h}`,
      "netns",
      NS.lan,
    ]);
    await lan(`ip link set lan${h} master br0 && ip link set lan${h} up`);
    await run(NS[h], [
      "sh",
      "-c",
      `ip link set lo up && ip link set mig${h}${tag} name eth0 && ` +
      `ip addr add ${HOST_IP[h]}/24 dev eth0 && ip link set eth0 up`,
    ]);
  }
  await run(NS.a, ["ip", "addr", "add", `${SERVICE_IP}/24`, "dev", "eth0"]);
}

async function tearDown(): Promise<void> {
  for (const ns of Object.values(NS)) {
    await run(undefined, ["ip", "netns", "del", ns]).catch(() => {});
  }
}

const work = Deno.makeTempDirSync({ prefix: "deno-criu-migrate-" });
const A = join(work, "host-a"), B = join(work, "host-b");
Deno.mkdirSync(A);
Deno.mkdirSync(B);
const children: Deno.ChildProcess[] = [];
let restoredPid = 0;
try {
  const mib = Number(values.mib), pct = values.pct!;
  console.log(`== two hosts (network namespaces ${NS.a}, ${NS.b}) and a client (${NS.c})`);
  await setUp();
  const echoer = await buildVictim("echoer");
  const out = join(work, "service.log");
  const service = start(NS.a, ["setsid", echoer, out, `${PORT}`, `${mib}`, pct]);
  children.push(service);
  await waitFor("the service", () => /^ready/m.test(safeRead(out)), 60_000);
  const pid = service.pid;
  console.log(`== the service runs on host A: pid ${pid}, ${mib} MiB, ${pct}% rewritten a second`);
  const client = start(NS.c, [
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    join(ROOT, "scripts", "migrate_client.ts"),
    SERVICE_IP,
    `${PORT}`,
  ]);
  children.push(client);
  await new Promise((r) => setTimeout(r, 1500));

  // 2. Pre-dumps until the pages written stop shrinking.
  let prev: string | undefined;
  let last = Infinity;
  const rounds = Number(values.rounds);
  for (let i = 1; i <= rounds; i++) {
    const name = `pre${i}`;
    Deno.mkdirSync(join(A, name));
    Deno.mkdirSync(join(B, name));
    const parent = prev ? ["--prev-images-dir", `../${prev}`] : [];
    await pageServer(join(B, name), parent);
    const stats = await criu(NS.a, [
      "pre-dump",
      "-t",
      `${pid}`,
      "-D",
      join(A, name),
      "--track-mem",
      ...parent,
      ...TO_B,
      "--display-stats",
      "-o",
      "pre-dump.log",
    ]);
    const written = stat(stats, "Memory pages written");
    console.log(
      `   pre-dump ${i}: ${written} pages sent to B, frozen ${
        (stat(stats, "Frozen time") / 1000).toFixed(0)
      } ms`,
    );
    prev = name;
    if (written >= last * 0.9) break;
    last = written;
  }

  // 3. The last dump.
  Deno.mkdirSync(join(A, "last"));
  Deno.mkdirSync(join(B, "last"));
  await pageServer(join(B, "last"), ["--prev-images-dir", `../${prev}`]);
  // B's lazy-pages daemon waits already: it reads the images once the restore comes.
  const lazy = start(NS.b, [...CRIU, "lazy-pages", "-D", join(B, "last"), "-o", "lazy.log", "-v4"]);
  children.push(lazy);
  await waitFile(join(B, "last", "lazy-pages.socket"));
  const stats = await criu(NS.a, [
    "dump",
    "-t",
    `${pid}`,
    "-D",
    join(A, "last"),
    "--tcp-established",
    "--track-mem",
    "--prev-images-dir",
    `../${prev}`,
    ...TO_B,
    "--display-stats",
    "-o",
    "dump.log",
    "-v4",
  ]);
  const tDumped = performance.now();
  await service.status;
  const frozenMs = stat(stats, "Frozen time") / 1000;
  console.log(
    `   last dump: ${stat(stats, "Memory pages written")} pages sent to B, ` +
      `${stat(stats, "Memory pages skipped from parent")} left to the pre-dumps, ` +
      `frozen ${frozenMs.toFixed(0)} ms; the service on A is gone`,
  );

  // 4. The address moves; the other images follow; B restores lazily.
  await run(NS.a, ["ip", "addr", "del", `${SERVICE_IP}/24`, "dev", "eth0"]);
  await run(NS.b, ["ip", "addr", "add", `${SERVICE_IP}/24`, "dev", "eth0"]);
  for (const e of Deno.readDirSync(join(A, "last"))) {
    if (e.isFile && e.name.endsWith(".img") && !/^(pagemap|pages)-/.test(e.name)) {
      Deno.copyFileSync(join(A, "last", e.name), join(B, "last", e.name));
    }
  }
  const tRestore = performance.now();
  await criu(NS.b, [
    "restore",
    "-d",
    "-D",
    join(B, "last"),
    "--tcp-established",
    "--lazy-pages",
    "-o",
    "restore.log",
    "-v4",
  ]);
  const tRestored = performance.now();
  restoredPid = pid;
  // 5. Announced: the client's packets go to B from now on.
  const arping = await run(undefined, ["sh", "-c", "command -v arping"]).catch(() => "");
  if (arping.trim()) {
    await run(NS.b, ["arping", "-U", "-c", "1", "-I", "eth0", SERVICE_IP]).catch(() => {});
  } else {
    // (No arping here: the client's neighbour entry is renewed as a gratuitous ARP would.)
    await run(NS.c, ["ip", "neigh", "flush", "to", SERVICE_IP]);
  }
  const restoreMs = tRestored - tRestore;
  console.log(
    `== restored lazily on host B in ${restoreMs.toFixed(0)} ms (pid ${pid}); ` +
      `between the dump's end and the restore: ${(tRestore - tDumped).toFixed(0)} ms ` +
      `(address moved, images copied)`,
  );
  const ls = await lazy.output();
  if (!ls.success) {
    throw new Error(`criu lazy-pages failed: ${new TextDecoder().decode(ls.stderr)}`);
  }
  const summary = /Lazy pages done: .*/.exec(safeRead(join(B, "last", "lazy.log")))?.[0] ?? "";
  console.log(
    `   ${summary} (${(performance.now() - tRestore).toFixed(0)} ms after the restore began)`,
  );
  await new Promise((r) => setTimeout(r, 1500));

  // The client's account, then the service's own check of its memory.
  client.kill("SIGTERM");
  const co = await client.output();
  const seen = JSON.parse(new TextDecoder().decode(co.stdout).trim() || "{}");
  Deno.kill(pid, "SIGTERM");
  await waitFor("the service's verdict", () => /^(PASS|FAIL)/m.test(safeRead(out)));
  restoredPid = 0;
  const verdict = safeRead(out).split("\n").find((l) => /^(PASS|FAIL)/.test(l));
  console.log(`== the client: ${JSON.stringify(seen)}`);
  console.log(`== the service: ${verdict}`);
  // The service stopped when the dump froze it (its frozen time ends as it is killed).
  const downMs = frozenMs + (tRestored - tDumped);
  console.log(
    `== downtime: ${downMs.toFixed(0)} ms from the freeze on A until the service ran again ` +
      `on B (frozen ${frozenMs.toFixed(0)} ms, then ${(tRestore - tDumped).toFixed(0)} ms, ` +
      `restore ${restoreMs.toFixed(0)} ms); the client's longest wait for an echo: ` +
      `${seen.maxGapMs} ms`,
  );
  if (!co.success || seen.error || !verdict?.startsWith("PASS")) {
    console.log("migrate: FAILED");
    Deno.exitCode = 1;
  } else {
    console.log("migrate: the connection held and every page came over");
  }
} finally {
  if (restoredPid) {
    try {
      Deno.kill(restoredPid, "SIGKILL");
    } catch {
      // gone
    }
  }
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      // done
    }
    await c.output().catch(() => {});
  }
  await tearDown();
  if (!Deno.env.get("DENO_CRIU_KEEP_TMP")) Deno.removeSync(work, { recursive: true });
}
