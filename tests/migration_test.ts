/**
 * Live migration: pre-dumps track the pages a tree writes (userfaultfd write-protection, no
 * soft-dirty), and a dump with `--track-mem --prev-images-dir` writes only those, the rest left
 * to its parents (PE_PARENT), which a restore (ours, and CRIU 4.2's) reads through the chain.
 *
 * @module
 */
import { join } from "node:path";
import { collectVmas, scanRanges } from "../src/dump/mm.ts";
import { DumpWorker } from "../src/dump/dump_worker.ts";
import { scanTask } from "../src/pagemap/pagemap.ts";
import { writePages } from "../src/pagemap/task_pages.ts";
import { exists } from "../src/util/exists.ts";
import { withFlagsOf } from "../src/dump/smaps_ahead.ts";
import { parseMaps, readProcText } from "../src/tree/proc.ts";
import { zeroPagePfn } from "../src/syscalls/mod.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "./assert.ts";
import {
  buildVictim,
  critDecodeAll,
  criu,
  criuArgv,
  killAll,
  oracle,
  procState,
  startVictim,
  stopVictim,
  tmpDir,
  tracerPid,
  verdict,
  type Victim,
  waitGone,
  waitLine,
  waitReport,
} from "./helpers.ts";

Deno.test("the dump's worker walks a stopped task's pages as the dump would itself (a walk of other mappings, or compared otherwise, is not taken) and writes its pages files as the dump would, the first into the spare file made before", async () => {
  const v = startVictim(["setsid", await buildVictim("dirty"), "{out}", "8", "1000"]);
  try {
    await waitReport(v);
    Deno.kill(v.pid, "SIGSTOP");
    const zeroPfn = Number(zeroPagePfn());
    const ranges = scanRanges(collectVmas(v.pid).vmas);
    const here = scanTask(v.pid, ranges, zeroPfn, undefined, true);
    assert(here.runs.reduce((n, r) => n + r.nrPages, 0) >= 8 * 256, "the 8 MiB written");
    using worker = await DumpWorker.start();
    worker.post(v.pid, v.pid, ranges, false, true, zeroPfn);
    const there = await worker.take(v.pid, ranges, false, true);
    assert(there, "the worker's walk is taken");
    assertEquals(there.runs, here.runs);
    assertEquals(there.scanned, here.scanned);
    assertEquals(there.frames, here.frames);
    // Taken once only; other ranges, another parent or recording: the dump walks itself.
    assertEquals(await worker.take(v.pid, ranges, false, true), undefined);
    worker.post(v.pid, v.pid, ranges, false, true, zeroPfn);
    assertEquals(await worker.take(v.pid, ranges.slice(1), false, true), undefined);
    worker.post(v.pid, v.pid, ranges, false, true, zeroPfn);
    assertEquals(await worker.take(v.pid, ranges, true, true), undefined);
    worker.post(v.pid, v.pid, ranges, false, true, zeroPfn);
    assertEquals(await worker.take(v.pid, ranges, false, false), undefined);

    // Pages files: the worker's (the first in the spare, larger than needed) are the dump's.
    const dir = tmpDir();
    const spare = join(dir, "spare");
    using writer = await DumpWorker.start(undefined, { path: spare, bytes: 64 << 20 });
    assertEquals(Deno.statSync(spare).size, 64 << 20);
    const runs = here.runs.slice(0, 3);
    const bytes = runs.reduce((n, r) => n + r.nrPages * 4096, 0);
    writePages(v.pid, runs, join(dir, "here.img"));
    const first = await writer.writePages(v.pid, runs, join(dir, "first.img"), false);
    const second = await writer.writePages(v.pid, runs, join(dir, "second.img"), false);
    assertEquals([first.pages, second.pages], [bytes / 4096, bytes / 4096]);
    assert(!exists(spare), "the spare taken");
    const want = Deno.readFileSync(join(dir, "here.img"));
    assertEquals(want.length, bytes);
    assertEquals(Deno.readFileSync(join(dir, "first.img")), want);
    assertEquals(Deno.readFileSync(join(dir, "second.img")), want);
    await assertRejects(
      () => writer.writePages(v.pid, runs, join(dir, "no/such.img"), false),
      Error,
      /^Cannot open .*no\/such\.img: no such file/,
    );
  } finally {
    await stopVictim(v);
  }
});

/** A figure of `--display-stats`' block. */
function stat(out: string, name: string): number {
  const m = new RegExp(`^${name}: (\\d+)`, "m").exec(out);
  assert(m, `no "${name}" in: ${out}`);
  return Number(m[1]);
}

/** Runs criu `args` (its stats displayed), which must succeed; returns its output. */
async function ok(args: string[]): Promise<string> {
  const r = await criu([...args, "--display-stats"]);
  assertEquals(r.code, 0, `criu ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

const MIB = 64, PAGES = MIB * 256;

/**
 * The dirty victim (`mib` MiB, a page rewritten every `us` microseconds) taken through `body`,
 * which dumps it and returns the images to restore it from: restored by this criu, it must
 * find every page right. Everything is cleaned up after.
 */
async function dirtyRoundTrip(
  mib: number,
  us: number,
  body: (v: Victim) => Promise<string>,
): Promise<void> {
  const v = startVictim(["setsid", await buildVictim("dirty"), "{out}", `${mib}`, `${us}`]);
  let restored = 0;
  try {
    await waitReport(v);
    const dir = await body(v);
    assert(await waitGone(v.pid), "gone after the dump");
    const r = await criu(["restore", "-d", "-D", dir]);
    assertEquals(r.code, 0, r.stderr);
    restored = v.pid;
    assertMatch(await verdict(v, v.pid, "SIGTERM", 10000), /^PASS dirty/m);
  } finally {
    if (restored) killAll(restored);
    await stopVictim(v);
  }
}

for (const restorer of ["ours", "CRIU 4.2"] as const) {
  Deno.test(
    `pre-dumps track what a task writes while it runs (and moves, unmaps, maps again); the last dump writes only that, and ${
      restorer === "ours" ? "our" : "CRIU 4.2's"
    } restore reads the rest through the chain of parents: every page right`,
    async () => {
      if (restorer !== "ours" && !oracle()) {
        console.log("skipped: no CRIU 4.2 oracle");
        return;
      }
      const bin = await buildVictim("dirty");
      const v = startVictim(["setsid", bin, "{out}", `${MIB}`]);
      let restored = 0;
      try {
        await waitReport(v);
        const base = tmpDir();
        for (const d of ["1", "2", "3"]) Deno.mkdirSync(join(base, d));
        // The first pre-dump copies everything; the tree runs on, untraced.
        const first = await ok(["pre-dump", "-t", `${v.pid}`, "-D", join(base, "1")]);
        assert(stat(first, "Memory pages written") >= PAGES, first);
        assertEquals(tracerPid(v.pid), 0);
        assertMatch(procState(v.pid) ?? "gone", /^[SR]$/);
        // It reshapes its memory between pre-dumps.
        Deno.kill(v.pid, "SIGUSR1");
        await waitLine(v.out, /^reshaped$/, 5000);
        const second = await ok([
          "pre-dump",
          "-t",
          `${v.pid}`,
          "-D",
          join(base, "2"),
          "--track-mem",
          "--prev-images-dir",
          "../1",
        ]);
        // The moved regions' pages (2 MiB) and the new one's (1 MiB) again, and those written.
        assert(stat(second, "Memory pages written") >= 3 * 256, second);
        assert(stat(second, "Memory pages skipped from parent") > PAGES / 2, second);
        const last = await ok([
          "dump",
          "-t",
          `${v.pid}`,
          "-D",
          join(base, "3"),
          "--track-mem",
          "--prev-images-dir",
          "../2",
        ]);
        const written = stat(last, "Memory pages written");
        assert(written < PAGES / 4, `the last dump wrote ${written} of ${PAGES} pages`);
        assert(stat(last, "Memory pages skipped from parent") > PAGES / 2, last);
        assert(await waitGone(v.pid), "gone after the dump");
        // As criu links and marks them: `parent`, and PE_PARENT entries crit decodes.
        assertEquals(Deno.readLinkSync(join(base, "3", "parent")), "../2");
        const pm = (await critDecodeAll(join(base, "3"))).get(`pagemap-${v.pid}.img`)!;
        assert(
          pm.entries.some((e: { flags?: string }) => e.flags === "PE_PARENT"),
          JSON.stringify(pm.entries.slice(0, 5)),
        );
        const restore = ["restore", "-d", "-D", join(base, "3")];
        const r = restorer === "ours" ? await criu(restore) : await new Deno.Command(oracle()!, {
          args: [...restore, "-o", "oracle.log"],
          stdout: "piped",
          stderr: "piped",
        }).output().then((o) => ({ code: o.code, stderr: new TextDecoder().decode(o.stderr) }));
        assertEquals(r.code, 0, r.stderr);
        restored = v.pid;
        assertMatch(await verdict(v, v.pid, "SIGTERM", 10000), /^PASS dirty/m);
      } finally {
        if (restored) killAll(restored);
        await stopVictim(v);
      }
    },
  );
}

Deno.test("smaps read before the freeze is taken only while the task's mappings stay as they were (the mmap lock's count): a flag turned meanwhile that /proc/PID/maps does not show makes it read again, and a dump after pre-dumps carries the flag either way", async () => {
  const v = startVictim(["setsid", await buildVictim("vmflags"), "{out}"]);
  let restored = 0;
  try {
    const mem = BigInt("0x" + (await waitReport(v)).mem);
    const region = () =>
      parseMaps(readProcText(v.pid, "smaps")).find((m) => m.start <= mem && mem < m.end)!;
    // Unchanged: the text read ahead, with the names /proc/PID/maps shows now, is smaps now.
    {
      using worker = await DumpWorker.start(undefined, undefined, [v.pid]);
      Deno.kill(v.pid, "SIGSTOP");
      const text = await worker.smapsAhead(v.pid);
      assert(text !== undefined, "taken");
      const maps = withFlagsOf(parseMaps(readProcText(v.pid, "maps")), parseMaps(text));
      const now = parseMaps(readProcText(v.pid, "smaps"));
      assertEquals(
        maps?.map((m) => [m.start, m.end, m.path, [...m.vmFlags]]),
        now.map((m) => [m.start, m.end, m.path, [...m.vmFlags]]),
      );
      assert(!region().vmFlags.has("dc"));
      Deno.kill(v.pid, "SIGCONT");
    }
    // MADV_DONTFORK turned on between the read and the stop: not taken.
    {
      using worker = await DumpWorker.start(undefined, undefined, [v.pid]);
      Deno.kill(v.pid, "SIGUSR1");
      await waitLine(v.out, /^toggled 1 on=1/);
      Deno.kill(v.pid, "SIGSTOP");
      assert(region().vmFlags.has("dc"));
      assertEquals(await worker.smapsAhead(v.pid), undefined);
      // Asked once: a second ask has nothing.
      assertEquals(await worker.smapsAhead(v.pid), undefined);
      Deno.kill(v.pid, "SIGCONT");
    }
    // Mappings listed otherwise, or a ring mapping among them: not grafted.
    const now = parseMaps(readProcText(v.pid, "smaps"));
    assertEquals(withFlagsOf(now.slice(1), now), undefined);
    const ring = { ...now[0], path: `socket:[${now[0].inode}]`, perms: "r--s" };
    assertEquals(withFlagsOf([ring, ...now.slice(1)], [ring, ...now.slice(1)]), undefined);

    // Through the command line: a pre-dump, then the last dump takes what it read ahead.
    const base = tmpDir();
    for (const d of ["p", "d"]) Deno.mkdirSync(join(base, d));
    await ok(["pre-dump", "-t", `${v.pid}`, "-D", join(base, "p"), "--track-mem"]);
    const log = join(base, "dump.log");
    await ok([
      "dump",
      "-t",
      `${v.pid}`,
      "-D",
      join(base, "d"),
      "--track-mem",
      "--prev-images-dir",
      "../p",
      "-v4",
      "--log-file",
      log,
    ]);
    assertMatch(
      Deno.readTextFileSync(log),
      new RegExp(`Task ${v.pid}: mappings as read before the freeze \\(unchanged\\)`),
    );
    assert(await waitGone(v.pid), "gone after the dump");
    assertEquals((await criu(["restore", "-d", "-D", join(base, "d")])).code, 0);
    restored = v.pid;
    assertMatch(await verdict(v, v.pid, "SIGTERM", 10000), /^PASS vmflags \(dc on\)/m);
  } finally {
    if (restored) killAll(restored);
    await stopVictim(v);
  }
});

Deno.test("a dump with --track-mem and no parent tracks from then on; without --track-mem, a pre-dumped task's tracking is left out of its images", async () => {
  const bin = await buildVictim("dirty");
  const v = startVictim(["setsid", bin, "{out}", "4"]);
  let restored = 0;
  try {
    await waitReport(v);
    const base = tmpDir();
    for (const d of ["1", "2"]) Deno.mkdirSync(join(base, d));
    await ok(["dump", "-R", "-t", `${v.pid}`, "-D", join(base, "1"), "--track-mem"]);
    // The tracker is criu's, at a high number: not among the task's files in the images.
    const fds = Deno.readDirSync(`/proc/${v.pid}/fd`).toArray().map((e) => Number(e.name));
    assert(fds.some((fd) => fd >= 900), `no tracker: ${fds}`);
    await ok(["dump", "-t", `${v.pid}`, "-D", join(base, "2")]);
    const img = await critDecodeAll(join(base, "2"));
    const fdinfo = [...img.entries()].find(([n]) => n.startsWith("fdinfo-"))![1];
    assert(fdinfo.entries.every((e: { fd: number }) => e.fd < 900), JSON.stringify(fdinfo));
    assert(await waitGone(v.pid), "gone after the dump");
    assertEquals((await criu(["restore", "-d", "-D", join(base, "2")])).code, 0);
    restored = v.pid;
    assertEquals(
      Deno.readDirSync(`/proc/${v.pid}/fd`).toArray().filter((e) => Number(e.name) >= 900).length,
      0,
    );
    assertMatch(await verdict(v, v.pid, "SIGTERM", 10000), /^PASS dirty/m);
  } finally {
    if (restored) killAll(restored);
    await stopVictim(v);
  }
});

/** A free TCP port of the local host. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The command line of each criu: ours, or CRIU 4.2's. */
function criuCommand(who: "ours" | "CRIU 4.2"): string[] {
  return who === "ours" ? criuArgv([]) : [oracle()!];
}

/** Runs `criu args` of `who`, which must succeed. */
async function run(who: "ours" | "CRIU 4.2", args: string[]): Promise<void> {
  const [cmd, ...pre] = criuCommand(who);
  const o = await new Deno.Command(cmd, {
    args: [...pre, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  assertEquals(o.code, 0, `${who}: criu ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
}

const pairs = [["ours", "ours"], ["CRIU 4.2", "ours"], ["ours", "CRIU 4.2"]] as const;
for (const [dumper, server] of pairs) {
  Deno.test(
    `${dumper === "ours" ? "our" : "CRIU 4.2's"} dump sends its pages to ${
      server === "ours" ? "our" : "CRIU 4.2's"
    } page server (criu page-server -d): restored from the server's pagemap and pages beside the dump's other images, every page right`,
    async () => {
      if ((dumper !== "ours" || server !== "ours") && !oracle()) {
        console.log("skipped: no CRIU 4.2 oracle");
        return;
      }
      await dirtyRoundTrip(16, 1000, async (v) => {
        const dump = tmpDir(), srv = tmpDir(), port = `${freePort()}`;
        await run(server, ["page-server", "-d", "-D", srv, "--port", port, "-o", "ps.log"]);
        await run(dumper, [
          "dump",
          "-t",
          `${v.pid}`,
          "-D",
          dump,
          "--page-server",
          "--address",
          "127.0.0.1",
          "--port",
          port,
        ]);
        // The pages are the server's alone: they go beside the dump's other images.
        const names = (d: string) => Deno.readDirSync(d).toArray().map((e) => e.name);
        assertEquals(names(dump).filter((n) => /^(pagemap|pages)-/.test(n)), []);
        for (const n of names(srv).filter((n) => n.endsWith(".img"))) {
          Deno.copyFileSync(join(srv, n), join(dump, n));
        }
        return dump;
      });
    },
  );
}

Deno.test("a pre-dump and the last dump both through the page server, which keeps the chain (its --prev-images-dir): the last sends only the pages written since", async () => {
  await dirtyRoundTrip(16, 2000, async (v) => {
    const base = tmpDir();
    for (const d of ["d1", "d2", "s1", "s2"]) Deno.mkdirSync(join(base, d));
    const port1 = `${freePort()}`;
    await run("ours", ["page-server", "-d", "-D", join(base, "s1"), "--port", port1]);
    const ps = ["--page-server", "--address", "127.0.0.1"];
    await ok(["pre-dump", "-t", `${v.pid}`, "-D", join(base, "d1"), ...ps, "--port", port1]);
    const port2 = `${freePort()}`;
    await run("ours", [
      "page-server",
      "-d",
      "-D",
      join(base, "s2"),
      "--port",
      port2,
      "--prev-images-dir",
      "../s1",
    ]);
    const last = await ok([
      "dump",
      "-t",
      `${v.pid}`,
      "-D",
      join(base, "d2"),
      ...ps,
      "--port",
      port2,
      "--track-mem",
      "--prev-images-dir",
      "../d1",
    ]);
    assert(stat(last, "Memory pages written") < 16 * 256 / 4, last);
    // The server's images and chain, with the dump's others.
    for (const e of Deno.readDirSync(join(base, "d2"))) {
      if (e.name.endsWith(".img")) {
        Deno.copyFileSync(join(base, "d2", e.name), join(base, "s2", e.name));
      }
    }
    return join(base, "s2");
  });
});

Deno.test("a pre-dump killed at any moment (SIGKILL) leaves the task running, untraced, its memory whole; a later pre-dump and dump still work", async () => {
  await dirtyRoundTrip(256, 200, async (v) => {
    const [cmd, ...pre] = criuArgv([]);
    for (const ms of [150, 300, 450, 600, 800]) {
      const child = new Deno.Command(cmd, {
        args: [...pre, "pre-dump", "-t", `${v.pid}`, "-D", tmpDir()],
        stdout: "null",
        stderr: "null",
      }).spawn();
      await new Promise((r) => setTimeout(r, ms));
      try {
        child.kill("SIGKILL");
      } catch {
        // done already
      }
      await child.status;
      await new Promise((r) => setTimeout(r, 100));
      assertEquals(tracerPid(v.pid), 0, `killed after ${ms} ms: still traced`);
      assertMatch(procState(v.pid) ?? "gone", /^[SR]$/, `killed after ${ms} ms`);
    }
    const base = tmpDir();
    for (const d of ["1", "2"]) Deno.mkdirSync(join(base, d));
    await ok(["pre-dump", "-t", `${v.pid}`, "-D", join(base, "1")]);
    await ok([
      "dump",
      "-t",
      `${v.pid}`,
      "-D",
      join(base, "2"),
      "--track-mem",
      "--prev-images-dir",
      "../1",
    ]);
    return join(base, "2");
  });
});

/** Bytes the pages files of images `dir` take on disk (holes left out). */
function pagesOnDisk(dir: string): number {
  return Deno.readDirSync(dir).toArray().filter((e) => /^pages-\d+\.img$/.test(e.name))
    .reduce((n, e) => n + (Deno.statSync(join(dir, e.name)).blocks ?? 0) * 512, 0);
}

for (const how of ["--auto-dedup", "criu dedup"] as const) {
  Deno.test(
    `${how}: the pages a dump holds itself are punched out of its parents' pages files (sizes kept), and the chain still restores every page, by us and CRIU 4.2`,
    async () => {
      const bin = await buildVictim("dirty");
      const base = tmpDir();
      for (const d of ["1", "2", "3"]) Deno.mkdirSync(join(base, d));
      const v = startVictim(["setsid", bin, "{out}", "16", "300"]);
      let restored = 0;
      try {
        await waitReport(v);
        await ok(["pre-dump", "-t", `${v.pid}`, "-D", join(base, "1")]);
        const full = pagesOnDisk(join(base, "1"));
        const size = Deno.readDirSync(join(base, "1")).toArray()
          .filter((e) => /^pages-\d+\.img$/.test(e.name))
          .map((e) => Deno.statSync(join(base, "1", e.name)).size);
        // The task rewrites ~3000 pages a second: the next images hold many pages again.
        await new Promise((r) => setTimeout(r, 1500));
        const chain = (dir: string, prev: string) => [
          "-t",
          `${v.pid}`,
          "-D",
          join(base, dir),
          "--track-mem",
          "--prev-images-dir",
          prev,
          ...(how === "--auto-dedup" ? ["--auto-dedup"] : []),
        ];
        await ok(["pre-dump", ...chain("2", "../1")]);
        await ok(["dump", ...chain("3", "../2")]);
        assert(await waitGone(v.pid), "gone after the dump");
        const report = Deno.readTextFileSync(v.out);
        if (how === "criu dedup") {
          assertEquals((await criu(["dedup", "-D", join(base, "2")])).code, 0);
          assertEquals((await criu(["dedup", "-D", join(base, "3")])).code, 0);
        }
        const after = pagesOnDisk(join(base, "1"));
        assert(after < full * 0.8, `${after} of ${full} bytes left in the first images`);
        assertEquals(
          Deno.readDirSync(join(base, "1")).toArray()
            .filter((e) => /^pages-\d+\.img$/.test(e.name))
            .map((e) => Deno.statSync(join(base, "1", e.name)).size),
          size,
        );
        // Ours, then CRIU 4.2's, from the same images (its report put back as dumped between).
        for (const who of ["ours", ...(oracle() ? ["CRIU 4.2"] : [])]) {
          Deno.writeTextFileSync(v.out, report);
          const args = ["restore", "-d", "-D", join(base, "3")];
          const r = who === "ours" ? await criu(args) : await new Deno.Command(oracle()!, {
            args: [...args, "-o", "oracle.log"],
            stdout: "null",
            stderr: "piped",
          }).output().then((o) => ({ code: o.code, stderr: new TextDecoder().decode(o.stderr) }));
          assertEquals(r.code, 0, `${who}: ${r.stderr}`);
          restored = v.pid;
          assertMatch(await verdict(v, v.pid, "SIGTERM", 10000), /^PASS dirty/m, who);
          assert(await waitGone(v.pid), `${who}: the restored task is gone after its verdict`);
          restored = 0;
        }
      } finally {
        if (restored) killAll(restored);
        await stopVictim(v);
      }
    },
  );
}
