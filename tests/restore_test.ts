/**
 * Restore end to end: a real process is dumped (and so killed), restored under the same PID,
 * and then checks itself from the inside; we check from the outside too.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { exists } from "../src/util/exists.ts";
import { spawnProgram } from "../src/syscalls/posix_spawn.ts";
import {
  close,
  NO_ZERO_PAGE,
  O,
  open,
  pipe2,
  tryRead,
  waitPid,
  zeroPagePfn,
} from "../src/syscalls/mod.ts";
import { readDump } from "../src/restore/images.ts";
import { ImagesDir } from "../src/images/images_dir.ts";
import { VMA } from "../src/pagemap/vma.ts";
import {
  buildVictim,
  checkAcrossRoundTrip,
  critDecodeAll,
  criu,
  criuArgv,
  killAll,
  procState,
  ROOT,
  safeRead,
  settledState,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  verdict,
  type Victim,
  waitGone,
  waitLine,
  waitReport,
} from "./helpers.ts";

/** Dumps the victim (killing it), reaps it and waits for its PID to be free. */
async function dumpAndKill(v: Victim, imgs: string): Promise<void> {
  const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-o", "dump.log", "-v4"]);
  assertEquals(run.code, 0, run.stderr);
  await v.child.status;
  assert(await waitGone(v.pid), `task ${v.pid} gone after dump`);
}

async function restoreDetached(
  imgs: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<number> {
  const pidfile = `${imgs}/restored.pid`;
  const run = await criu([
    "restore",
    "-D",
    imgs,
    "-d",
    "-o",
    "restore.log",
    "-v4",
    "--pidfile",
    pidfile,
    ...extra,
  ], env);
  assertEquals(run.code, 0, run.stderr + safeRead(`${imgs}/restore.log`));
  return Number(Deno.readTextFileSync(pidfile));
}

Deno.test("restore gives a process back its memory, files, signals, timers and limits", async () => {
  const bin = await buildVictim("state");
  const v = startVictim(["setsid", bin, "{out}", "{dir}"]);
  let pid = 0;
  try {
    const r = await waitReport(v);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    pid = await restoreDetached(imgs);
    assertEquals(pid, v.pid, "same PID");
    assertEquals(await settledState(pid, "S"), "S");
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    // SIGHUP and SIGRTMIN+1 (35) blocked and pending (queued 300 times to the process and
    // 300 times to the thread).
    assertMatch(status, /SigBlk:\s+0*400000001\n/);
    assertMatch(status, /ShdPnd:\s+0*400000001\n/);
    assertMatch(status, /SigPnd:\s+0*400000000\n/);
    const fdinfo = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${r.datafd}`);
    assertMatch(fdinfo, /pos:\s+1234/);
    assertEquals(Deno.readLinkSync(`/proc/${pid}/exe`), bin);
    assertEquals(Deno.readTextFileSync(`/proc/${pid}/comm`), "state\n");
    // An untouched page is still not allocated.
    const pm = Deno.openSync(`/proc/${pid}/pagemap`);
    const entry = new BigUint64Array(1);
    const present = (addr: bigint) => {
      pm.seekSync(Number(addr / 4096n) * 8, Deno.SeekMode.Start);
      pm.readSync(new Uint8Array(entry.buffer));
      return (entry[0] >> 63n) === 1n;
    };
    const anon = BigInt("0x" + r.anon);
    assert(present(anon), "written page present");
    // Only read: the zero page's, so not dumped; on a kernel without it, a page of zeros dumped.
    const readOnly = present(anon + 4096n);
    assertEquals(readOnly, zeroPagePfn() === NO_ZERO_PAGE, "read-only page allocated");
    assert(!present(anon + BigInt((Number(r.npages) - 1) * 4096)), "untouched page not allocated");
    pm.close();
    // The images of a restore are CRIU's: crit reads stats-restore too.
    const img = await critDecodeAll(imgs);
    assert(Number(img.get("stats-restore")!.entries[0].restore.pages_restored) > 0);
    // From the inside.
    assertMatch(await verdict(v, pid), /PASS/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("a process's memory is filled by two threads, the second one of its own that is gone before the restore goes on: every page comes back where it was", async () => {
  // 96 MiB: over the restorer's threshold (2 MiB), split unevenly among its mappings.
  const bin = await buildVictim("heap");
  const v = startVictim(["setsid", bin, "{out}", "96"]);
  let pid = 0;
  try {
    await waitReport(v);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    pid = await restoreDetached(imgs);
    const log = Deno.readTextFileSync(`${imgs}/restore.log`);
    assertMatch(log, /start a thread to fill 48 MiB/);
    assertMatch(log, /wait for the thread filling memory/);
    assertEquals([...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name), [`${pid}`]);
    // The victim reads every page: its number at its start, its pattern at its end.
    assertMatch(await verdict(v, pid), /^PASS$/m);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("large private anonymous memory is copied in by a userfaultfd, the rest read: every page, every hole and every mapping as it was (one made inaccessible once written, dumped past its protection); with no userfaultfd to be had, all of it read", async () => {
  const bin = await buildVictim("anonfill");
  for (const taken of [false, true]) {
    const v = startVictim(["setsid", bin, "{out}"]);
    let pid = 0;
    try {
      await waitReport(v);
      const imgs = tmpDir();
      await dumpAndKill(v, imgs);
      // The fault: the source's place is taken (the restorer area's), so none is opened.
      pid = await restoreDetached(imgs, [], taken ? { DENO_CRIU_FAULT: "copy-source-taken" } : {});
      const log = Deno.readTextFileSync(`${imgs}/restore.log`);
      // whole (8 MiB), the written chunks of holes (512 KiB each), split (three ranges).
      const copies = log.match(/copy \d+ pages to/g) ?? [];
      assert(copies.length >= 3, `copies planned:\n${log}`);
      assertMatch(log, /map pages to copy from at/);
      assertMatch(log, /read 16 pages at/, `the small range is read:\n${log}`);
      const said = await verdict(v, pid);
      assertMatch(said, /^PASS$/m, `${taken ? "all read" : "copied"}: ${said}`);
    } finally {
      await stopVictim(v);
      if (pid) killAll(pid);
    }
  }
});

Deno.test("a process whose cgroup has no room for another task (pids.max 1) has its memory filled by the restorer alone, every page right", async () => {
  const top = "/sys/fs/cgroup/pids";
  if (!exists(`${top}/cgroup.procs`)) {
    console.log("skipped: no pids cgroup v1 hierarchy");
    return;
  }
  const cg = `${top}/deno-criu-fill-${Deno.pid}`;
  Deno.mkdirSync(cg);
  const v = startVictim(["setsid", await buildVictim("heap"), "{out}", "64"]);
  let pid = 0;
  try {
    await waitReport(v);
    Deno.writeTextFileSync(`${cg}/cgroup.procs`, `${v.pid}`);
    Deno.writeTextFileSync(`${cg}/pids.max`, "1");
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    pid = await restoreDetached(imgs);
    const log = Deno.readTextFileSync(`${imgs}/restore.log`);
    assertMatch(log, /start a thread to fill 32 MiB/);
    assertMatch(log, /no thread to fill memory beside the restorer, which filled it alone/);
    assertMatch(Deno.readTextFileSync(`/proc/${pid}/cgroup`), /:pids:\/deno-criu-fill-/);
    assertMatch(await verdict(v, pid), /^PASS$/m);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
    for (let i = 0; i < 100; i++) {
      try {
        Deno.removeSync(cg);
        break;
      } catch {
        await sleep(50);
      }
    }
  }
});

Deno.test("registers and FPU/AVX state survive dump and restore", async () => {
  const bin = await buildVictim("regs");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pid = 0;
  try {
    await waitReport(v);
    await sleep(50);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    pid = await restoreDetached(imgs);
    await sleep(300);
    assertEquals(procState(pid), "R", "still spinning");
    assert(!Deno.readTextFileSync(v.out).includes("FAIL"), Deno.readTextFileSync(v.out));
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("a process sleeping in nanosleep continues counting, twice over", async () => {
  const bin = await buildVictim("counter");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pid = 0;
  try {
    await waitLine(v.out, /^count 3 /);
    let imgs = tmpDir();
    await dumpAndKill(v, imgs);
    pid = await restoreDetached(imgs);
    assertEquals(pid, v.pid);
    let before = Deno.readTextFileSync(v.out).trim().split("\n").length;
    await waitLine(v.out, new RegExp(`^count ${before + 2} `));
    // Second cycle: dump the restored process and restore it again.
    imgs = tmpDir();
    const run = await criu(["dump", "-t", `${pid}`, "-D", imgs]);
    assertEquals(run.code, 0, run.stderr);
    assert(await waitGone(pid), "restored task gone after the second dump");
    pid = await restoreDetached(imgs);
    before = Deno.readTextFileSync(v.out).trim().split("\n").length;
    await waitLine(v.out, new RegExp(`^count ${before + 2} `));
    const lines = Deno.readTextFileSync(v.out).trim().split("\n");
    lines.forEach((l, i) =>
      assertEquals(l, `count ${i + 1} (pid ${v.pid})`, "no count lost or repeated")
    );
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

/** The exiter victim (it sleeps 1.5 s, then exits with 7), dumped and gone. */
async function dumpedExiter(): Promise<{ v: Victim; imgs: string }> {
  const bin = await buildVictim("exiter");
  const v = startVictim(["setsid", bin, "{out}", "1500"]);
  try {
    await waitReport(v);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    return { v, imgs };
  } catch (e) {
    await stopVictim(v);
    throw e;
  }
}

Deno.test("restore without -d waits for the process and returns its exit code", async () => {
  const { v, imgs } = await dumpedExiter();
  try {
    const t = Date.now();
    const run = await criu(["restore", "-D", imgs]);
    assertEquals(run.code, 7, run.stderr);
    assert(Date.now() - t > 300, "it slept the rest of its nanosleep");
    assertMatch(Deno.readTextFileSync(v.out), /exiting/);
  } finally {
    await stopVictim(v);
  }
});

function copyDir(src: string): string {
  const dst = tmpDir("imgs-copy-");
  for (const e of Deno.readDirSync(src)) Deno.copyFileSync(`${src}/${e.name}`, `${dst}/${e.name}`);
  return dst;
}

Deno.test("bad images and changed files: one clear line, exit 1, nothing left running", async () => {
  const bin = await buildVictim("state");
  const v = startVictim(["setsid", bin, "{out}", "{dir}"]);
  try {
    await waitReport(v);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    const pid = v.pid;
    const data = `${v.dir}/data.txt`;
    const cases: [string, (dir: string) => void, RegExp][] = [
      [
        "missing image",
        (d) => Deno.removeSync(`${d}/core-${pid}.img`),
        /Missing image .*core-\d+\.img/,
      ],
      ["wrong magic", (d) => {
        const b = Deno.readFileSync(`${d}/mm-${pid}.img`);
        b[4] ^= 0xff;
        Deno.writeFileSync(`${d}/mm-${pid}.img`, b);
      }, /mm-\d+\.img has magic 0x[0-9a-f]+ at offset 4, expected 0x[0-9a-f]+ \(MM\)/],
      ["truncated entry", (d) => {
        const b = Deno.readFileSync(`${d}/files.img`);
        Deno.writeFileSync(`${d}/files.img`, b.subarray(0, b.length - 3));
      }, /files\.img is truncated at offset \d+/],
      ["impossible size", (d) => {
        const b = Deno.readFileSync(`${d}/pstree.img`);
        new DataView(b.buffer).setUint32(8, 0xfffffff0, true);
        Deno.writeFileSync(`${d}/pstree.img`, b);
      }, /pstree\.img has an entry of impossible size/],
      ["short pages file", (d) => {
        const b = Deno.readFileSync(`${d}/pages-1.img`);
        Deno.writeFileSync(`${d}/pages-1.img`, b.subarray(0, b.length - 4096));
      }, /pages-1\.img does not match .*pagemap-\d+\.img: \d+ bytes, the pagemap says \d+/],
      ["pagemap cut at an entry boundary", (d) => {
        // Still a well-formed image, with its last run gone: its pages are unclaimed.
        const path = `${d}/pagemap-${pid}.img`;
        const b = Deno.readFileSync(path);
        const view = new DataView(b.buffer);
        const starts: number[] = [];
        for (let off = 8; off < b.length; off += 4 + view.getUint32(off, true)) starts.push(off);
        assert(starts.length > 2, "the victim's pagemap has runs");
        Deno.writeFileSync(path, b.subarray(0, starts.at(-1)));
      }, /pages-1\.img does not match .*pagemap-\d+\.img/],
      [
        "missing pipes-data.img",
        (d) => Deno.removeSync(`${d}/pipes-data.img`),
        /pipes-data\.img has no entry for pipe \d+ \(the image is missing\)/,
      ],
    ];
    for (const [name, corrupt, re] of cases) {
      const d = copyDir(imgs);
      corrupt(d);
      const run = await criu(["restore", "-D", d, "-d"]);
      assertEquals(run.code, 1, name);
      assertMatch(run.stderr.trim().split("\n").at(-1)!, re, name);
      assert(!/\n\s+at /.test(run.stderr), `no stack trace (${name})`);
      assertEquals(procState(pid), undefined, `nothing restored (${name})`);
    }
    // Files the process had open must be there, with their size.
    const saved = Deno.readFileSync(data);
    Deno.writeFileSync(data, new Uint8Array(10), { append: true });
    let run = await criu(["restore", "-D", copyDir(imgs), "-d"]);
    assertEquals(run.code, 1);
    assertMatch(
      run.stderr,
      /file .*data\.txt changed size since the dump \(2010 bytes, was 2000\)/,
    );
    Deno.removeSync(data);
    run = await criu(["restore", "-D", copyDir(imgs), "-d"]);
    assertEquals(run.code, 1);
    assertMatch(run.stderr, /file .*data\.txt no longer exists/);
    Deno.writeFileSync(data, saved);
    // An existing pidfile is not overwritten.
    const pidfile = `${tmpDir()}/pid`;
    Deno.writeTextFileSync(pidfile, "1");
    run = await criu(["restore", "-D", copyDir(imgs), "-d", "--pidfile", pidfile]);
    assertEquals(run.code, 1);
    assertMatch(run.stderr, /pidfile .* exists already/);
    assertEquals(Deno.readTextFileSync(pidfile), "1");
    // The images are still good after all that; the pidfile is criu's: 0600.
    const fresh = `${tmpDir()}/pid`;
    run = await criu(["restore", "-D", copyDir(imgs), "-d", "--pidfile", fresh]);
    assertEquals(run.code, 0, run.stderr);
    assertEquals(Deno.readTextFileSync(fresh), `${pid}`);
    assertEquals(Deno.statSync(fresh).mode! & 0o777, 0o600);
    killAll(pid);
  } finally {
    await stopVictim(v);
  }
});

Deno.test("restoring onto a PID in use is refused by name", async () => {
  const bin = await buildVictim("counter");
  const v = startVictim(["setsid", bin, "{out}"]);
  try {
    await waitLine(v.out, /^count 1 /);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-R"]);
    assertEquals(d.code, 0, d.stderr);
    const run = await criu(["restore", "-D", imgs, "-d"]);
    assertEquals(run.code, 1);
    assertMatch(run.stderr, new RegExp(`PID ${v.pid} is in use`));
    assertEquals(await settledState(v.pid, "S"), "S", "the running process is untouched");
  } finally {
    await stopVictim(v);
  }
});

for (const stage of ["files", "memory", "state"]) {
  Deno.test(`a restore failing at "${stage}" kills what it made`, async () => {
    const bin = await buildVictim("counter");
    const v = startVictim(["setsid", bin, "{out}"]);
    try {
      await waitLine(v.out, /^count 1 /);
      const imgs = tmpDir();
      await dumpAndKill(v, imgs);
      const lines = Deno.readTextFileSync(v.out);
      const run = await criu(["restore", "-D", imgs], { DENO_CRIU_FAULT: stage });
      assertEquals(run.code, 1);
      assertMatch(run.stderr.trim().split("\n").at(-1)!, new RegExp(`Fault injected at ${stage}`));
      assert(await waitGone(v.pid), "nothing half-restored left");
      await sleep(300);
      assertEquals(Deno.readTextFileSync(v.out), lines, "it never ran");
    } finally {
      await stopVictim(v);
    }
  });
}

Deno.test("a task from another session needs --shell-job, and restores with it", async () => {
  const bin = await buildVictim("counter");
  const v = startVictim([bin, "{out}"]); // in the test runner's session
  let pid = 0;
  try {
    await waitLine(v.out, /^count 1 /);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    const run = await criu(["restore", "-D", imgs, "-d"]);
    assertEquals(run.code, 1);
    assertMatch(run.stderr, /session \d+, which is not in the images; .* --shell-job/);
    pid = await restoreDetached(imgs, ["-j"]);
    const n = Deno.readTextFileSync(v.out).trim().split("\n").length;
    await waitLine(v.out, new RegExp(`^count ${n + 2} `));
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

/**
 * `criu restore -D imgs ARGS` run on a terminal of its own (pty_run.py): what it shows goes to
 * the victim's report file + ".tty", what is appended to + ".in" is typed.
 */
function restoreOnTerminal(imgs: string, args: string[]): Victim {
  return startVictim([
    "python3",
    `${ROOT}/tests/victims/pty_run.py`,
    "{out}",
    ...criuArgv(["restore", "-D", imgs, ...args]),
  ], tmpDir());
}

Deno.test("--external tty: a session leader's terminal outside the tree is replaced by the one --inherit-fd gives", async () => {
  const bin = await buildVictim("counter");
  const dir = tmpDir("victim-");
  const out = `${dir}/count.log`;
  const v = startVictim(["python3", `${ROOT}/tests/victims/pty_run.py`, "{out}", bin, out], dir);
  let holder: Victim | undefined;
  let pid = 0;
  try {
    pid = Number((await waitReport(v)).pid);
    await waitLine(out, /^count 2 /);
    const st = Deno.statSync(`/proc/${pid}/fd/0`);
    const key = `tty[${st.rdev!.toString(16)}:${st.dev.toString(16)}]`;
    const imgs = tmpDir();
    let run = await criu(["dump", "-t", `${pid}`, "-D", imgs]);
    assertEquals(run.code, 1);
    run = await criu(["dump", "-t", `${pid}`, "-D", imgs, "--external", key]);
    assertEquals(run.code, 0, run.stderr);
    const tty = (await critDecodeAll(imgs)).get("tty-info.img")!.entries;
    assertEquals(tty.map((t: { type: string }) => t.type), ["EXT_TTY"]);
    assert(await waitGone(pid), "dumped task gone");
    // A fresh terminal, nobody's controlling one yet, given as the external one.
    holder = startVictim([
      "python3",
      `${ROOT}/tests/victims/pty_hold.py`,
      "{out}",
      ...criuArgv(["restore", "-d", "-D", imgs, "--inherit-fd", `fd[0]:${key}`]),
    ], tmpDir());
    await waitReport(holder, "slave=");
    const slave = Deno.readTextFileSync(holder.out).match(/slave=(\S+)/)![1];
    await waitReport(holder, "exit=");
    assertMatch(Deno.readTextFileSync(holder.out), /exit=0/);
    assertEquals(Deno.readLinkSync(`/proc/${pid}/fd/0`), slave);
    assertEquals(Deno.readLinkSync(`/proc/${pid}/fd/2`), slave);
    // It is the session's controlling terminal now.
    const ttyNr = Number(Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ")[4]);
    assertEquals(ttyNr, Deno.statSync(slave).rdev);
    const n = Deno.readTextFileSync(out).trim().split("\n").length;
    await waitLine(out, new RegExp(`^count ${n + 2} `));
  } finally {
    if (pid) killAll(pid);
    await stopVictim(v);
    if (holder) await stopVictim(holder);
  }
});

Deno.test("a shell job on a terminal: dump -j and restore -j onto the restorer's terminal", async () => {
  const bin = await buildVictim("counter");
  const py = `${ROOT}/tests/victims/pty_run.py`;
  const dir = tmpDir("victim-");
  const out = `${dir}/count.log`;
  const v = startVictim(["python3", py, "{out}", bin, out], dir);
  let restorer: Victim | undefined;
  let pid = 0;
  try {
    const r = await waitReport(v);
    pid = Number(r.pid);
    await waitLine(out, /^count 2 /);
    assertMatch(Deno.readLinkSync(`/proc/${pid}/fd/0`), /^\/dev\/pts\/\d+$/);
    const imgs = tmpDir();
    let run = await criu(["dump", "-t", `${pid}`, "-D", imgs]);
    assertEquals(run.code, 1);
    assertMatch(
      run.stderr,
      /terminal \/dev\/pts\/\d+: its master is not in the dumped tree; .*--shell-job/,
    );
    run = await criu(["dump", "-t", `${pid}`, "-D", imgs, "-j"]);
    assertEquals(run.code, 0, run.stderr);
    const img = await critDecodeAll(imgs);
    const tty = img.get("tty-info.img")!.entries[0];
    assertEquals(tty.type, "PTY");
    assertEquals(
      img.get("fdinfo-2.img")!.entries.find((f: { fd: number }) => f.fd === 0).type,
      "TTY",
    );
    assert(await waitGone(pid), "dumped task gone");
    // Restore from another terminal: the task gets that one.
    restorer = restoreOnTerminal(imgs, ["-j", "-d"]);
    await waitReport(restorer, "exit=");
    assertMatch(Deno.readTextFileSync(restorer.out), /exit=0/, safeRead(`${restorer.out}.tty`));
    assertMatch(Deno.readLinkSync(`/proc/${pid}/fd/0`), /^\/dev\/pts\/\d+$/);
    const n = Deno.readTextFileSync(out).trim().split("\n").length;
    await waitLine(out, new RegExp(`^count ${n + 2} `));
  } finally {
    await stopVictim(v);
    if (restorer) await stopVictim(restorer);
    if (pid) killAll(pid);
  }
});

for (const mode of ["leader", "job"]) {
  Deno.test(`a shell job (session ${mode}) on a terminal: restore -j onto another terminal, then it reads what is typed`, async () => {
    const bin = await buildVictim("ttyecho");
    const py = `${ROOT}/tests/victims/pty_run.py`;
    const dir = tmpDir();
    const log = `${dir}/echo.log`;
    const v = startVictim(["python3", py, "{out}", bin, log, mode], dir);
    let restorer: Victim | undefined;
    let pid = 0;
    try {
      const ready = (await waitLine(log, /^ready pid=\d+ sid=\d+/)).match(/(\d+) sid=(\d+)/)!;
      pid = Number(ready[1]);
      // A session leader stays one (a session of its own, as criu restores it); a job of the
      // shell's session joins the restorer's session, in a group of its own.
      assertEquals(Number(ready[2]) === pid, mode === "leader");
      Deno.writeTextFileSync(`${v.out}.in`, "one\n", { append: true });
      await waitLine(log, /^got one/);
      const imgs = tmpDir();
      const run = await criu(["dump", "-t", `${pid}`, "-D", imgs, "-j"]);
      assertEquals(run.code, 0, run.stderr);
      assert(await waitGone(pid), "dumped task gone");
      // From another terminal, waiting for the task: it reads that terminal (a job: as the
      // terminal's foreground group; else SIGTTIN would stop it).
      restorer = restoreOnTerminal(imgs, ["-j"]);
      // Restored once it runs in its own group (criu made it in criu's).
      const ids = () => {
        const st = safeRead(`/proc/${pid}/stat`).split(") ")[1]?.split(" ") ?? [];
        return [Number(st[2]), Number(st[3]), st[0]] as const;
      };
      for (let i = 0; i < 300 && (ids()[0] !== pid || ids()[2] === "t"); i++) await sleep(10);
      const [pgid, sid] = ids();
      assertEquals(pgid, pid, "its own process group");
      if (mode === "leader") assertEquals(sid, pid, "its own session");
      else assert(sid !== pid, "in the restorer's session");
      Deno.writeTextFileSync(`${restorer.out}.in`, "two\n", { append: true });
      await waitLine(log, /^got two/, 5000).catch((e) => {
        throw new Error(`${e.message} (task state ${procState(pid)})`);
      });
      // End of input: the task exits with 3, and so does criu restore, which waited for it.
      Deno.writeTextFileSync(`${restorer.out}.in`, "\x04", { append: true });
      await waitReport(restorer, "exit=");
      assertMatch(Deno.readTextFileSync(restorer.out), /exit=3/, safeRead(`${restorer.out}.tty`));
    } finally {
      await stopVictim(v);
      if (restorer) await stopVictim(restorer);
      if (pid) killAll(pid);
    }
  });
}

Deno.test("eventfd, signalfd, timerfd and an epoll set watching them survive dump and restore", async () => {
  const bin = await buildVictim("fdkinds");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pid = 0;
  try {
    const r = await waitReport(v);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    const img = await critDecodeAll(imgs);
    const files = img.get("files.img")!.entries;
    const byType = (t: string) => files.find((f: { type: string }) => f.type === t);
    assertEquals(Number(byType("EVENTFD").efd.counter), 5);
    assertEquals(Number(byType("SIGNALFD").sgfd.sigmask), 1 << 9);
    assertEquals(Number(byType("TIMERFD").tfd.insec), 50_000_000);
    const tfds = byType("EVENTPOLL").epfd.tfd.map((t: { tfd: number }) => t.tfd).sort();
    assertEquals(tfds, [Number(r.efd), Number(r.tfd)].sort());
    pid = await restoreDetached(imgs);
    assertMatch(await verdict(v, pid), /PASS fds/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("unix sockets whose names are gone: a connection whose listener closed, datagram sockets bound in turn at one deleted name, their directories removed", async () => {
  const bin = await buildVictim("unixgone");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}", "{dir}"]), /PASS unixgone/);
});

Deno.test("unix sockets: pairs of every type with queued data, listeners with accepted and pending connections, an abstract datagram socket, a pair shared with a child", async () => {
  const bin = await buildVictim("unixsk");
  const v = startVictim(["setsid", bin, "{out}", "{dir}"]);
  let pids: number[] = [];
  try {
    const r = await waitReport(v);
    pids = [v.pid, Number(r.child)];
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    assert(await waitGone(pids[1]), "child gone after dump");
    const img = await critDecodeAll(imgs);
    const socks = img.get("files.img")!.entries.filter((f: { type: string }) =>
      f.type === "UNIXSK"
    );
    assertEquals(
      socks.length,
      14,
      "four pairs, two listeners, an abstract datagram socket, two clients, accepted",
    );
    // The client still waiting to be accepted names the listener as its peer, as criu writes
    // it: the socket in the listener's queue has no descriptor and no entry.
    const inos = new Set(socks.map((f: { usk: { ino: number } }) => f.usk.ino));
    const listeners = socks.filter((f: { usk: { state: string } }) => f.usk.state === "LISTEN")
      .map((f: { usk: { ino: number } }) => f.usk.ino);
    assert(
      socks.some((f: { usk: { peer: number } }) => listeners.includes(f.usk.peer)),
      "a client's peer is a listener",
    );
    for (const f of socks) {
      assert(
        !f.usk.peer || inos.has(f.usk.peer),
        `peer ${f.usk.peer} of ${f.usk.ino} has an entry`,
      );
    }
    const queues = img.get("sk-queues.img")!.entries;
    assertEquals(
      queues.length,
      11,
      "both ways on a pair, 3 datagrams, 2 packets, 2 abstract datagrams, both ways accepted",
    );
    await restoreDetached(imgs);
    assertMatch(await verdict(v), /PASS unix/);
  } finally {
    await stopVictim(v);
    for (const pid of pids) killAll(pid);
  }
});

Deno.test("a unix socket whose peer is outside the tree is refused by name", async () => {
  const py = startVictim([
    "python3",
    "-c",
    "import socket,time,os\na,b=socket.socketpair()\npid=os.fork()\nif pid==0:\n  a.close()\n  open('{out}','a').write(f'ready pid={os.getpid()} fd={b.fileno()}\\n')\n  time.sleep(60)\nelse:\n  time.sleep(60)\n",
  ]);
  try {
    const r = await waitReport(py);
    const run = await criu(["dump", "-t", r.pid, "-D", tmpDir()]);
    assertEquals(run.code, 1);
    assertMatch(
      run.stderr,
      new RegExp(
        `fd ${r.fd} of task ${r.pid} \\(socket:\\[\\d+\\]\\): its peer socket:\\[\\d+\\] is outside the dumped tree`,
      ),
    );
    assertEquals(await settledState(Number(r.pid), "S"), "S");
  } finally {
    killAll(Number((await waitReport(py)).pid));
    await stopVictim(py);
  }
});

Deno.test("POSIX timers keep their ids, clocks, signals and times", async () => {
  const bin = await buildVictim("ptimer");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pid = 0;
  try {
    const r = await waitReport(v);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    const core = (await critDecodeAll(imgs)).get(`core-${v.pid}.img`)!.entries[0];
    const posix = core.tc.timers.posix as { it_id: number; clock_id: number }[];
    assertEquals(posix.map((p) => p.it_id).sort(), [Number(r.a), Number(r.b)].sort());
    pid = await restoreDetached(imgs);
    const timers = Deno.readTextFileSync(`/proc/${pid}/timers`);
    assertMatch(timers, new RegExp(`ID: ${r.b}\\nsignal: 10/0*b\\n`));
    assertMatch(await verdict(v, pid), /PASS ptimer/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("an open deleted file is carried in the images and deleted again after restore", async () => {
  const bin = await buildVictim("ghost");
  const v = startVictim(["setsid", bin, "{out}", "{dir}", "2000000"]);
  let pid = 0;
  try {
    const r = await waitReport(v);
    let imgs = tmpDir();
    const big = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(big.code, 1, "2 MB is over the default ghost limit");
    assertMatch(
      big.stderr,
      new RegExp(`fd ${r.fd} of task ${v.pid} .*ghost\\.txt \\(deleted\\).*--ghost-limit`),
    );
    imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "--ghost-limit", "4M"]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    assert(await waitGone(v.pid));
    const img = await critDecodeAll(imgs);
    assertEquals(img.get("remap-fpath.img")!.entries[0].remap_type, "GHOST");
    const ghost = [...img.keys()].find((k) => k.startsWith("ghost-file-"))!;
    assertEquals(Number(img.get(ghost)!.entries[0].size), 14 + 2000000);
    pid = await restoreDetached(imgs);
    assertMatch(Deno.readLinkSync(`/proc/${pid}/fd/${r.fd}`), /ghost\.txt \(deleted\)$/);
    assert(
      ![...Deno.readDirSync(v.dir)].some((e) => e.name.startsWith("ghost.txt")),
      "deleted again",
    );
    assertMatch(await verdict(v, pid), /PASS ghost/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("a named pipe between parent and child keeps its queued data", async () => {
  const bin = await buildVictim("fifo");
  const v = startVictim(["setsid", bin, "{out}", "{dir}"]);
  let pids: number[] = [];
  try {
    const r = await waitReport(v);
    pids = [v.pid, Number(r.child)];
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    assert(await waitGone(pids[1]));
    const img = await critDecodeAll(imgs);
    assertEquals(img.get("fifo-data.img")!.entries[0].bytes, 11);
    assert(img.get("files.img")!.entries.some((f: { type: string }) => f.type === "FIFO"));
    await restoreDetached(imgs);
    assertMatch(await verdict(v), /PASS fifo/);
  } finally {
    await stopVictim(v);
    for (const pid of pids) killAll(pid);
  }
});

Deno.test("file locks need -l, and come back with it", async () => {
  const bin = await buildVictim("locks");
  const v = startVictim(["setsid", bin, "{out}", "{dir}"]);
  let pid = 0;
  try {
    await waitReport(v);
    const refused = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()]);
    assertEquals(refused.code, 1);
    assertMatch(refused.stderr, /holds a (FLOCK|POSIX|OFDLCK) lock; dump with --file-locks \(-l\)/);
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-l"]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    assert(await waitGone(v.pid));
    const locks = (await critDecodeAll(imgs)).get("filelocks.img")!.entries;
    // criu's FL_POSIX, FL_FLOCK, FL_OFD.
    assertEquals(locks.map((l: { flag: number }) => l.flag).sort((a: number, b: number) => a - b), [
      1,
      2,
      4,
    ]);
    pid = await restoreDetached(imgs);
    assertMatch(await verdict(v, pid), /PASS locks/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("inotify watches, one on a deleted file, come back with their numbers and no stray event", async () => {
  const bin = await buildVictim("inotify");
  const v = startVictim(["setsid", bin, "{out}", "{dir}"]);
  let pid = 0;
  try {
    const r = await waitReport(v);
    assertEquals([r.w1, r.w3, r.w4], ["1", "3", "4"]);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    const ify = (await critDecodeAll(imgs)).get("files.img")!.entries
      .find((f: { type: string }) => f.type === "INOTIFY").ify;
    type Wd = { wd: number; f_handle: { path?: string } };
    assertEquals(ify.wd.map((w: Wd) => w.wd).sort(), [1, 3, 4]);
    assertMatch(ify.wd.find((w: Wd) => w.wd === 3).f_handle.path, /\/file$/);
    // As criu writes it: a deleted file's watch has only its inode and handle.
    assertEquals(ify.wd.find((w: Wd) => w.wd === 4).f_handle.path, undefined);
    pid = await restoreDetached(imgs);
    assertMatch(await verdict(v, pid), /PASS inotify/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("a sealed memfd open twice and mapped shared and private keeps contents, seals, offsets", async () => {
  const bin = await buildVictim("memfd");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pid = 0;
  try {
    await waitReport(v);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    const img = await critDecodeAll(imgs);
    const inode = img.get("memfd.img")!.entries[0];
    assertEquals([inode.name, Number(inode.size)], ["criu-test", 10000]);
    const shm = img.get(`pagemap-shmem-${inode.shmid}.img`)!.entries.slice(1);
    assertEquals(
      shm.map((e: { nr_pages: string }) => Number(e.nr_pages)).reduce((a, b) => a + b, 0),
      2,
      "only the written pages",
    );
    pid = await restoreDetached(imgs);
    assertMatch(await verdict(v, pid), /PASS memfd/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("descriptors in flight in a unix queue (SCM_RIGHTS), held by no task, come back in their messages", async () => {
  const bin = await buildVictim("inflight");
  const v = startVictim(["setsid", bin, "{out}", "{dir}"]);
  let pid = 0;
  try {
    await waitReport(v);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    const img = await critDecodeAll(imgs);
    const scm = img.get("sk-queues.img")!.entries.filter((e: { scm?: unknown[] }) => e.scm?.length);
    assertEquals(scm.length, 2, "two messages carry descriptors");
    pid = await restoreDetached(imgs);
    assertMatch(await verdict(v, pid), /PASS inflight/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("an epoll set in flight in a unix queue comes back with its targets, keyed by the numbers they were added under", async () => {
  const bin = await buildVictim("epollflight");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pid = 0;
  try {
    const r = await waitReport(v);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    const img = await critDecodeAll(imgs);
    const ep = img.get("files.img")!.entries.find((f: { type: string }) => f.type === "EVENTPOLL")
      .epfd;
    // Targets as this task holds them: the one added under a closed number through E.
    assertEquals(
      ep.tfd.map((t: { tfd: number }) => t.tfd).sort(),
      [Number(r.sk), Number(r.e), Number(r.e)].sort(),
    );
    pid = await restoreDetached(imgs);
    assertMatch(await verdict(v, pid), /PASS epollflight/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("--ext-unix-sk: a datagram socket connected to a named socket outside the tree is connected again", async () => {
  // Outside: a named datagram socket that writes down what it receives.
  const dir = tmpDir();
  const outside = startVictim([
    "python3",
    "-c",
    `import socket\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind('${dir}/ext.sock')\nopen('{out}','a').write('ready\\n')\nwhile True:\n  open('{out}','a').write('got '+s.recv(64).decode()+'\\n')\n`,
  ]);
  await waitReport(outside);
  // The victim: connected to it; on SIGTERM it sends its pid through the connected socket.
  const v = startVictim([
    "setsid",
    "python3",
    "-c",
    `import socket,signal,os,time\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.connect('${dir}/ext.sock')\nsignal.signal(signal.SIGTERM, lambda *a: s.send(b'from %d' % os.getpid()))\nopen('{out}','a').write('ready pid=%d\\n' % os.getpid())\nwhile True: time.sleep(1)\n`,
  ]);
  try {
    await waitReport(v);
    const refused = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()]);
    assertEquals(refused.code, 1);
    assertMatch(refused.stderr, /outside the dumped tree; dump with --ext-unix-sk/);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "--ext-unix-sk"]);
    assertEquals(d.code, 0, d.stderr);
    await v.child.status;
    await waitGone(v.pid);
    const r = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(r.code, 0, r.stderr);
    // The name may go now: the restored socket is connected already, as it was.
    Deno.removeSync(`${dir}/ext.sock`);
    Deno.kill(v.pid, "SIGTERM");
    await waitLine(outside.out, new RegExp(`^got from ${v.pid}$`));
  } finally {
    killAll(v.pid);
    await stopVictim(v);
    await stopVictim(outside);
  }
});

Deno.test("one shared memory object seen through several mappings (one at an offset, one whose start was unmapped) stays one, in parent and child", async () => {
  const bin = await buildVictim("shmparts");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS shmparts/, {
    timeoutMs: 3000,
  });
});

Deno.test("a private mapping of shared anonymous memory keeps its copied pages and reads the object through the others", async () => {
  const bin = await buildVictim("shmpriv");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS shmpriv/);
});

Deno.test("hugetlb memory, anonymous shared and private, a hugetlb memfd, and a System V segment of huge pages (marked for removal), comes back", async () => {
  const bin = await buildVictim("hugetlb");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS hugetlb/, {
    timeoutMs: 3000,
    skipped: "this machine has no free huge pages",
  });
});

Deno.test("guard regions (MADV_GUARD_INSTALL) in anonymous and file mappings come back, in a child too", async () => {
  const bin = await buildVictim("guards");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}", "{dir}"]), /PASS guards/, {
    skipped: "this kernel has no MADV_GUARD_INSTALL",
  });
});

Deno.test("a file on a hugetlbfs mount mapped shared and privately stays the file, the private copy its own", async () => {
  const dir = tmpDir("hugetlbfs-");
  const mount = await new Deno.Command("mount", { args: ["-t", "hugetlbfs", "none", dir] })
    .output();
  if (!mount.success) {
    console.log("skipped: hugetlbfs cannot be mounted here");
    return;
  }
  try {
    const bin = await buildVictim("hugefile");
    await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}", dir]), /PASS hugefile/, {
      skipped: "this machine has no free huge pages",
    });
  } finally {
    await new Deno.Command("umount", { args: ["-l", dir] }).output();
  }
});

Deno.test("unix sockets in flight come back in their messages: a pair bound at names after it was made, each end sent over itself and its peer (zdtm's scm06), and a stream socket no task holds any more, with its own bytes queued", async () => {
  const script = `
import os, signal, socket, sys
out = open(sys.argv[1], "a", buffering=1)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
names = [f"\\0scm-{n}-{os.getpid()}".encode() for n in "ab"]
a.bind(names[0])
b.bind(names[1])
for s in (a, b):
    socket.send_fds(s, [b"x"], [a.fileno(), b.fileno()])
c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
socket.send_fds(a, [b"c"], [c.fileno()])
d.send(b"to c")
c.close()
def check(*_):
    why = None
    ino = lambda s: os.fstat(s if isinstance(s, int) else s.fileno()).st_ino
    if [a.getsockname(), b.getsockname()] != names:
        why = "the names the pair was bound at after it was made"
    # Each of a and b holds a and b in flight (what its peer sent); b then holds c, alone now.
    for s in (b, a):
        msg, fds, _, _ = socket.recv_fds(s, 16, 4)
        if msg != b"x" or [ino(f) for f in fds] != [ino(a), ino(b)]:
            why = "the pair in flight"
    msg, fds, _, _ = socket.recv_fds(b, 16, 4)
    if not why and (msg != b"c" or len(fds) != 1):
        why = "the socket no task held"
    if not why:
        got = socket.socket(fileno=fds[0])
        if got.recv(16) != b"to c":
            why = "the bytes queued in the socket no task held"
        elif got.send(b"back") != 4 or d.recv(16) != b"back":
            why = "the socket no task held, connected to its peer"
    out.write(f"FAIL scm: {why}\\n" if why else "PASS scm\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, check)
out.write(f"ready pid={os.getpid()}\\n")
while True:
    signal.pause()
`;
  const v = startVictim(["setsid", "python3", "-c", script, "{out}"]);
  await checkAcrossRoundTrip(v, /PASS scm/);
});

Deno.test("a vast PROT_NONE reservation (8 TiB, as mariadb keeps) with pages written inside is dumped in moments, its pages whole", async () => {
  const bin = await buildVictim("reserve");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pid = 0;
  try {
    await waitReport(v);
    const imgs = tmpDir();
    const t0 = performance.now();
    await dumpAndKill(v, imgs);
    const ms = performance.now() - t0;
    // The kernel walks the reservation for its pages; read page by page it took 18 s.
    assert(ms < 8000, `dump took ${ms.toFixed(0)} ms`);
    pid = await restoreDetached(imgs);
    assertMatch(await verdict(v, pid), /PASS reserve/);
  } finally {
    await stopVictim(v);
    if (pid) killAll(pid);
  }
});

Deno.test("restore -d -S (--restore-sibling, as LXC restores): the tree is born the caller's child, which waits for its exit status", async () => {
  const { v, imgs } = await dumpedExiter();
  try {
    // The caller: restores, checks it is the parent, and reaps the task's exit status (7).
    const caller = [
      "import os, subprocess, sys",
      "pidfile = sys.argv[1] + '/sibling.pid'",
      "r = subprocess.run(sys.argv[2:] + ['--pidfile', pidfile], capture_output=True, text=True)",
      "if r.returncode: print('FAIL restore', r.stderr); sys.exit(1)",
      "pid = int(open(pidfile).read())",
      "ppid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])",
      "got, status = os.waitpid(pid, 0)",
      "print('PASS sibling' if ppid == os.getpid() and os.WEXITSTATUS(status) == 7 else",
      "      f'FAIL ppid {ppid} (we are {os.getpid()}), status {status:#x}')",
    ].join("\n");
    const out = await new Deno.Command("python3", {
      args: ["-c", caller, imgs, ...criuArgv(["restore", "-d", "-S", "-D", imgs])],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertMatch(new TextDecoder().decode(out.stdout), /PASS sibling/);
  } finally {
    await stopVictim(v);
  }
});

Deno.test("criu's helpers start with every signal unblocked, SIGPIPE at its default", () => {
  // Deno ignores SIGPIPE, and an ignored signal survives exec: the helpers (and the tasks the
  // restore helper makes) must not inherit that, nor a blocked mask.
  const [r, w] = pipe2(O.CLOEXEC);
  const nul = open("/dev/null", O.RDONLY | O.CLOEXEC);
  let pid: number;
  try {
    pid = spawnProgram("/bin/cat", ["cat", "/proc/self/status"], { LC_ALL: "C" }, {
      stdin: nul,
      stdout: w,
    });
  } finally {
    close(w);
    close(nul);
  }
  let text = "";
  const buf = new Uint8Array(4096);
  for (let n; (n = tryRead(r, buf)) > 0;) text += new TextDecoder().decode(buf.subarray(0, n));
  close(r);
  const st = waitPid(pid, 0);
  assertEquals(st.exitCode, 0, "cat ran");
  const field = (name: string) =>
    BigInt("0x" + new RegExp(`^${name}:\\s*([0-9a-f]+)`, "m").exec(text)![1]);
  assertEquals(field("SigBlk"), 0n, "no signal blocked");
  assertEquals(field("SigIgn") & (1n << 12n), 0n, "SIGPIPE not ignored");
});

Deno.test("images whose vDSO code differs from this kernel's are refused before anything is made", async () => {
  const bin = await buildVictim("counter");
  const v = startVictim(["setsid", bin, "{out}"]);
  try {
    await waitLine(v.out, /^count 1 /);
    const imgs = tmpDir();
    await dumpAndKill(v, imgs);
    const task = readDump(new ImagesDir(imgs)).tasks[0];
    const vdso = task.mm.vmas.find((x) => x.status & VMA.AREA_VDSO)!;
    const i = task.pagemap.findIndex((e) => e.vaddr === vdso.start);
    assert(i >= 0, "the images carry the vDSO's pages");
    // One byte of its code changed, as another kernel's build would differ.
    using pages = Deno.openSync(task.pagesPaths[task.pageFile[i]] ?? task.pagesPath, {
      read: true,
      write: true,
    });
    const at = task.pageOffsets[i] + 0x100;
    const b = new Uint8Array(1);
    pages.seekSync(at, Deno.SeekMode.Start);
    pages.readSync(b);
    b[0] ^= 0xff;
    pages.seekSync(at, Deno.SeekMode.Start);
    pages.writeSync(b);
    const res = await criu(["restore", "-d", "-D", imgs]);
    assert(res.code !== 0, "refused");
    assertMatch(res.stderr, /vDSO .*its code differs from this kernel's vDSO/);
    assert(!exists(`/proc/${v.pid}`), "nothing made");
  } finally {
    await stopVictim(v);
  }
});

Deno.test("a helper gets its pipes as stdin and stdout even where they are criu's descriptors 0 and 1 (criu started with its standard ones closed)", async () => {
  // With 0 and 1 closed, criu's pipes may take them: here the output's write end is 0 and the
  // input's read end 1, which the child's dup2 onto 0 (its stdin first) would overwrite.
  const script = `
    import { libc } from "${ROOT}/src/syscalls/ffi.ts";
    import { NR, O, pipe2, rawSyscall, tryRead, waitPid } from "${ROOT}/src/syscalls/mod.ts";
    import { spawnProgram } from "${ROOT}/src/syscalls/posix_spawn.ts";
    const [inR, inW] = pipe2(O.CLOEXEC);
    const [outR, outW] = pipe2(O.CLOEXEC);
    rawSyscall(NR.dup3, outW, 0, O.CLOEXEC);
    rawSyscall(NR.dup3, inR, 1, O.CLOEXEC);
    libc.close(outW);
    libc.close(inR);
    const pid = spawnProgram("/bin/sh", ["sh", "-c", "read x; echo got $x"], {}, {
      stdin: 1,
      stdout: 0,
    });
    libc.close(0);
    libc.close(1);
    libc.write(inW, new TextEncoder().encode("hello\\n"), 6n);
    const buf = new Uint8Array(64);
    const n = tryRead(outR, buf);
    waitPid(pid, 0);
    Deno.stderr.writeSync(new TextEncoder().encode(new TextDecoder().decode(buf.subarray(0, Math.max(n, 0)))));
  `;
  const file = `${tmpDir()}/low_fds.ts`;
  Deno.writeTextFileSync(file, script);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", file],
    stdout: "null",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  assertMatch(text, /^got hello/, text);
});
