/**
 * Lazy restore: `criu restore --lazy-pages` leaves the lazy pages (PE_LAZY) out, hands a
 * userfaultfd of each process to `criu lazy-pages`, which brings every page in on first touch
 * and the rest in the background, from the images or from a page server (`criu page-server
 * --lazy-pages`, or the frozen tree itself: `criu dump --lazy-pages --port`). The victim
 * forks, moves and drops memory while pages are still to come, then checks every page.
 *
 * @module
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  criu,
  criuArgv,
  freePort,
  has,
  killAll,
  oracle,
  procState,
  ROOT,
  safeRead,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  tracerPid,
  treePids,
  type Victim,
  waitFile,
  waitGone,
  waitLine,
  waitReport,
} from "./helpers.ts";

type Who = "ours" | "CRIU 4.2";

const spawned: Deno.ChildProcess[] = [];

/**
 * `criu args` of `who` (logging all), started in the background (its output kept), with
 * `env`; killed by {@link cleanUp} if still there.
 */
function spawn(who: Who, args: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  const [cmd, ...pre] = who === "ours" ? criuArgv([]) : [oracle()!];
  const child = new Deno.Command(cmd, {
    args: [...pre, ...args, "-v4"],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  spawned.push(child);
  return child;
}

/**
 * Our lazy dump of task `pid` into `dir` (`--lazy-pages --port`, its log dump.log there),
 * once it serves its lazy pages.
 */
async function startLazyDump(pid: number, dir: string, port: string): Promise<Deno.ChildProcess> {
  const d = spawn("ours", [
    "dump",
    "-t",
    `${pid}`,
    "-D",
    dir,
    "--lazy-pages",
    "--port",
    port,
    "-o",
    "dump.log",
  ]);
  await waitLine(join(dir, "dump.log"), /Serving \d+ lazy pages on port/, 30_000);
  return d;
}

/** Kills what {@link spawn} started and is still there, and the victim. */
async function cleanUp(v: Victim, ...pids: number[]): Promise<void> {
  for (const c of spawned.splice(0)) {
    try {
      c.kill("SIGKILL");
    } catch {
      // done
    }
    await c.output().catch(() => {});
  }
  killAll(v.pid, ...pids);
  await stopVictim(v);
}

/** Waits for `child`, which must succeed within `ms`; says who it was on failure. */
async function succeeds(child: Deno.ChildProcess, what: string, ms = 60_000): Promise<void> {
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  const o = await child.output();
  clearTimeout(timer);
  assertEquals(o.code, 0, `${what}: ${new TextDecoder().decode(o.stderr)}`);
}

/** The host PID of the process whose PID in its own namespace is `vpid`, other than `not`. */
function hostPidOf(vpid: number, not: number): number | undefined {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === not) continue;
    const ns = /^NSpid:\s+(.*)$/m.exec(safeRead(`/proc/${e.name}/status`))?.[1].split(/\s+/);
    if (ns && ns.length > 1 && Number(ns.at(-1)) === vpid) return Number(e.name);
  }
  return undefined;
}

/**
 * While pages are still to come: a fork whose child checks every page, the memory reshaped
 * (mremap, munmap), a second fork, each after the other is through; then the final check.
 */
async function exercise(v: Victim, pid: number): Promise<void> {
  Deno.kill(pid, "SIGUSR2");
  await waitLine(v.out, /^forked/, 20_000);
  Deno.kill(pid, "SIGUSR1");
  await waitLine(v.out, /^reshaped/, 20_000);
  Deno.kill(pid, "SIGUSR2");
  const end = Date.now() + 20_000;
  while (safeRead(v.out).split("\n").filter((l) => l === "forked").length < 2) {
    assert(Date.now() < end, `no second fork: ${safeRead(v.out)}`);
    await sleep(20);
  }
  Deno.kill(pid, "SIGTERM");
  await waitLine(v.out, /^(PASS|FAIL) dirty/, 20_000);
  const out = safeRead(v.out);
  assert(!/^FAIL/m.test(out), out);
  assertMatch(out, /^PASS dirty/m);
  assertEquals(out.split("\n").filter((l) => l === "PASS child").length, 2, out);
}

// A pause between background chunks: the victim forks, moves and drops memory meanwhile.
const PACED = { DENO_CRIU_LAZY_PACE_MS: "40" };

/** `criu lazy-pages` of `who` for images `dir`, its pages from the page server on `port`. */
function remoteDaemon(who: Who, dir: string, port: string): Deno.ChildProcess {
  return spawn(who, [
    "lazy-pages",
    "-D",
    dir,
    "--page-server",
    "--address",
    "127.0.0.1",
    "--port",
    port,
    "-o",
    "lazy.log",
  ], PACED);
}

/** The daemon's summary in its log: processes, forks, faults. */
function summary(log: string): { processes: number; forks: number; faults: number } {
  const m = /Lazy pages done: (\d+) processes \((\d+) forked\), (\d+) faults/.exec(safeRead(log));
  assert(m, `no summary in ${log}: ${safeRead(log).slice(-2000)}`);
  return { processes: Number(m[1]), forks: Number(m[2]), faults: Number(m[3]) };
}

/** The dirty victim (`mib` MiB), dumped by our criu with `dumpArgs` into a new directory. */
async function dumped(mib: number): Promise<{ v: Victim; dir: string }> {
  const v = startVictim(["setsid", await buildVictim("dirty"), "{out}", `${mib}`, "200"]);
  await waitReport(v);
  const dir = tmpDir();
  const r = await criu(["dump", "-t", `${v.pid}`, "-D", dir, "-o", "dump.log"]);
  assertEquals(r.code, 0, r.stderr);
  assert(await waitGone(v.pid), "gone after the dump");
  return { v, dir };
}

for (
  const [daemon, restorer] of [["ours", "ours"], ["CRIU 4.2", "ours"], [
    "ours",
    "CRIU 4.2",
  ]] as const
) {
  Deno.test(
    `lazy restore by ${restorer === "ours" ? "our" : "CRIU 4.2's"} restore with ${
      daemon === "ours" ? "our" : "CRIU 4.2's"
    } criu lazy-pages: the process runs before its pages are in, forks (its child lacks the same pages and gets them), moves and drops memory meanwhile, and finds every page right`,
    async () => {
      if ((daemon !== "ours" || restorer !== "ours") && !oracle()) {
        console.log("skipped: no CRIU 4.2 oracle");
        return;
      }
      const { v, dir } = await dumped(128);
      try {
        const lazy = spawn(daemon, ["lazy-pages", "-D", dir, "-o", "lazy.log"], PACED);
        await waitFile(join(dir, "lazy-pages.socket"));
        const r = spawn(restorer, ["restore", "-d", "-D", dir, "--lazy-pages", "-o", "rst.log"]);
        await succeeds(r, "restore --lazy-pages");
        await exercise(v, v.pid);
        await succeeds(lazy, "lazy-pages");
        if (daemon === "ours") {
          const s = summary(join(dir, "lazy.log"));
          assert(s.faults > 0, "no fault was served");
          assert(s.forks >= 1, `the fork went unseen: ${JSON.stringify(s)}`);
        }
      } finally {
        await cleanUp(v);
      }
    },
  );
}

for (const [server, daemon] of [["ours", "ours"], ["ours", "CRIU 4.2"]] as const) {
  Deno.test(
    `lazy restore from a page server: ${
      server === "ours" ? "our" : "CRIU 4.2's"
    } criu page-server --lazy-pages hands the images' pages to ${
      daemon === "ours" ? "our" : "CRIU 4.2's"
    } criu lazy-pages --page-server; every page right`,
    async () => {
      if (daemon !== "ours" && !oracle()) {
        console.log("skipped: no CRIU 4.2 oracle");
        return;
      }
      const { v, dir } = await dumped(64);
      try {
        const port = `${freePort()}`;
        const ps = spawn(server, [
          "page-server",
          "-D",
          dir,
          "--port",
          port,
          "--lazy-pages",
          "-o",
          "ps.log",
        ]);
        await waitLine(join(dir, "ps.log"), /Starting page server/, 15_000);
        const lazy = remoteDaemon(daemon, dir, port);
        await waitFile(join(dir, "lazy-pages.socket"));
        await succeeds(
          spawn("ours", ["restore", "-d", "-D", dir, "--lazy-pages", "-o", "rst.log"]),
          "restore --lazy-pages",
        );
        await exercise(v, v.pid);
        await succeeds(lazy, "lazy-pages");
        await succeeds(ps, "page-server --lazy-pages");
        assertMatch(safeRead(join(dir, "ps.log")), /Page server: \d+ pages served/);
      } finally {
        await cleanUp(v);
      }
    },
  );
}

for (const [daemon, restorer] of [["ours", "ours"], ["CRIU 4.2", "CRIU 4.2"]] as const) {
  Deno.test(
    `lazy migration: our criu dump --lazy-pages --port keeps the tree frozen and serves its lazy pages to ${
      daemon === "ours" ? "our" : "CRIU 4.2's"
    } criu lazy-pages --page-server, restored by ${
      restorer === "ours" ? "our" : "CRIU 4.2's"
    } restore in a new PID namespace; the images hold only the other pages; the tree dies once all are fetched`,
    async () => {
      if (daemon !== "ours" && !oracle()) {
        console.log("skipped: no CRIU 4.2 oracle");
        return;
      }
      const v = startVictim(["setsid", await buildVictim("dirty"), "{out}", "64", "200"]);
      await waitReport(v);
      const dir = tmpDir(), port = `${freePort()}`;
      let restored: number | undefined;
      let rst: Deno.ChildProcess | undefined;
      try {
        const d = await startLazyDump(v.pid, dir, port);
        // Frozen, not gone: its lazy pages are still in it.
        Deno.kill(v.pid, "SIGCONT");
        assert(!(await waitGone(v.pid, 300)), "the tree went before its pages were fetched");
        const pagesBytes = Deno.readDirSync(dir).toArray()
          .filter((e) => /^pages-\d+\.img$/.test(e.name))
          .reduce((n, e) => n + Deno.statSync(join(dir, e.name)).size, 0);
        assert(pagesBytes < 1 << 20, `the lazy pages went into the images: ${pagesBytes} bytes`);
        const lazy = remoteDaemon(daemon, dir, port);
        await waitFile(join(dir, "lazy-pages.socket"));
        // The original still holds its PID: the copy comes back in a PID namespace of its own.
        const [cmd, ...pre] = restorer === "ours" ? criuArgv([]) : [oracle()!];
        rst = new Deno.Command("unshare", {
          args: [
            "--pid",
            "--fork",
            "--mount-proc",
            cmd,
            ...pre,
            "restore",
            "-D",
            dir,
            "--lazy-pages",
            "-o",
            "rst.log",
            "-v4",
          ],
          stdin: "null",
          stdout: "null",
          stderr: "piped",
        }).spawn();
        const end = Date.now() + 30_000;
        while (!(restored = hostPidOf(v.pid, v.pid))) {
          assert(Date.now() < end, `not restored: ${safeRead(join(dir, "rst.log")).slice(-1500)}`);
          await sleep(50);
        }
        await waitLine(join(dir, "rst.log"), /resumed|Restore finished/, 30_000);
        await exercise(v, restored);
        await succeeds(lazy, "lazy-pages");
        await succeeds(d, "dump --lazy-pages");
        assert(await waitGone(v.pid), "the original lives on after its pages were fetched");
        assertMatch(safeRead(join(dir, "dump.log")), /Page server: \d+ pages served/);
      } finally {
        await cleanUp(v, restored ?? 0);
        try {
          rst?.kill("SIGKILL");
        } catch {
          // ended
        }
        await rst?.output();
      }
    },
  );
}

Deno.test("lazy restore of a tree (children in groups and sessions, threads, a zombie, shared memory, a pipe, sockets): each process's userfaultfd goes to the daemon (the zombie's record without one), their threads fault at once, every child finds its memory and threads right", async () => {
  const v = startVictim(["setsid", await buildVictim("tree"), "{out}", "4", "3", "8"]);
  let pids: number[] = [];
  try {
    await waitReport(v);
    pids = treePids(v.pid);
    const dir = tmpDir();
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", dir, "-o", "dump.log"]);
    assertEquals(d.code, 0, d.stderr);
    for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after the dump`);
    const lazy = spawn("ours", ["lazy-pages", "-D", dir, "-o", "lazy.log"], PACED);
    await waitFile(join(dir, "lazy-pages.socket"));
    await succeeds(
      spawn("ours", ["restore", "-d", "-D", dir, "--lazy-pages", "-o", "rst.log"]),
      "restore --lazy-pages",
    );
    Deno.kill(v.pid, "SIGTERM");
    await waitLine(v.out, /^(PASS|FAIL)/, 30_000);
    assertMatch(safeRead(v.out), /^PASS tree/m);
    await succeeds(lazy, "lazy-pages");
    // The parent and its four children (the zombie has no memory).
    assertEquals(summary(join(dir, "lazy.log")).processes, 5);
  } finally {
    await cleanUp(v, ...pids);
  }
});

Deno.test("criu lazy-pages killed (SIGKILL) while pages are still to come: the restored process dies with it (its guard), rather than run on with pages that would read as zeros", async () => {
  const { v, dir } = await dumped(64);
  try {
    const lazy = spawn("ours", ["lazy-pages", "-D", dir, "-o", "lazy.log"], {
      DENO_CRIU_LAZY_PACE_MS: "500",
    });
    await waitFile(join(dir, "lazy-pages.socket"));
    await succeeds(
      spawn("ours", ["restore", "-d", "-D", dir, "--lazy-pages", "-o", "rst.log"]),
      "restore --lazy-pages",
    );
    await waitLine(join(dir, "lazy.log"), /The restore has finished/, 10_000);
    lazy.kill("SIGKILL");
    assert(await waitGone(v.pid, 10_000), "the restored process runs on without its pages");
    assert(!/^(PASS|FAIL)/m.test(safeRead(v.out)), safeRead(v.out));
  } finally {
    await cleanUp(v);
  }
});

for (const how of ["leaves without closing the session", "is killed (SIGKILL)"] as const) {
  Deno.test(`a lazy dump (--lazy-pages --port) whose serving ${how}: the tree goes on as it was, untraced, every page right`, async () => {
    const v = startVictim(["setsid", await buildVictim("dirty"), "{out}", "16", "200"]);
    try {
      await waitReport(v);
      const dir = tmpDir(), port = freePort();
      const d = await startLazyDump(v.pid, dir, `${port}`);
      if (how === "is killed (SIGKILL)") {
        d.kill("SIGKILL");
        await d.status;
      } else {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        const o = await d.output();
        assertEquals(o.code, 1);
        assertMatch(new TextDecoder().decode(o.stderr), /^Error: Cannot serve the lazy pages: /m);
      }
      await sleep(200);
      assertEquals(tracerPid(v.pid), 0);
      assertMatch(procState(v.pid) ?? "gone", /^[SR]$/);
      Deno.kill(v.pid, "SIGTERM");
      await waitLine(v.out, /^(PASS|FAIL)/, 10_000);
      assertMatch(safeRead(v.out), /^PASS dirty/m);
    } finally {
      await cleanUp(v);
    }
  });
}

Deno.test("lazy restore refusals: no criu lazy-pages listening is one clear line and nothing made; criu lazy-pages whose restore fails exits non-zero; a pre-dump takes no --lazy-pages", async () => {
  const { v, dir } = await dumped(16);
  try {
    const r = await criu(["restore", "-d", "-D", dir, "--lazy-pages"]);
    assertEquals(r.code, 1);
    assertMatch(
      r.stderr,
      /^Error: Cannot reach criu lazy-pages in .*: nothing listens on lazy-pages.socket \(connect: ENOENT\)$/m,
    );
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert(await waitGone(v.pid, 500), "something was made");

    // The restore fails once the processes are handed over: the daemon hears it and fails too.
    const lazy = spawn("ours", ["lazy-pages", "-D", dir, "-o", "lazy.log"]);
    await waitFile(join(dir, "lazy-pages.socket"));
    const f = await criu(["restore", "-d", "-D", dir, "--lazy-pages"], {
      DENO_CRIU_FAULT: "state",
    });
    assertEquals(f.code, 1, f.stderr);
    const o = await lazy.output();
    assertEquals(o.code, 1);
    assertMatch(new TextDecoder().decode(o.stderr), /The restore ended before it had finished/);
    assert(await waitGone(v.pid, 2000), "a half-made process is left");

    const p = await criu(["pre-dump", "-t", `${Deno.pid}`, "-D", tmpDir(), "--lazy-pages"]);
    assertEquals(p.code, 1);
    assertMatch(p.stderr, /Lazy pages are not supported with pre-dump/);
  } finally {
    await cleanUp(v);
  }
});

Deno.test("criu check: userfaultfd and its non-cooperative events (uffd, uffd-noncoop) are there for lazy pages", async () => {
  for (const f of ["uffd", "uffd-noncoop"]) {
    const r = await criu(["check", "--feature", f]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    assertMatch(r.stdout, new RegExp(`${f} is supported`));
  }
});

Deno.test({
  name:
    "deno task migrate: a TCP service moves between two network namespaces standing for two hosts (pre-dumps through a page server, the last dump, the address moved, a lazy restore) while its client keeps the connection, no echo lost; the service finds every page right",
  ignore: !has("ip") || !has("nsenter"),
  fn: async () => {
    const [cmd, ...pre] = [Deno.execPath(), "run", "-A", join(ROOT, "scripts", "migrate.ts")];
    const o = await new Deno.Command(cmd, {
      args: [...pre, "--mib", "64", "--rounds", "4"],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(180_000),
    }).output();
    const out = new TextDecoder().decode(o.stdout);
    assertEquals(o.code, 0, out + new TextDecoder().decode(o.stderr));
    assertMatch(out, /^migrate: the connection held and every page came over$/m);
    assertMatch(out, /^== the service: PASS echoer/m);
    const client = JSON.parse(/^== the client: (.*)$/m.exec(out)![1]);
    assert(client.echoed > 100 && client.echoed === client.sent && !client.error, out);
    assertMatch(out, /^== downtime: \d+ ms/m);
  },
});
