/**
 * criu's RPC (`criu swrk FD`), as runc, podman, go-criu and pycriu drive it: requests sent
 * with CRIU's own Python messages (pycriu's rpc_pb2, tests/fixtures/rpc_client.py) and through
 * pycriu's client class; and the TypeScript client of mod.ts, against this criu and CRIU 4.2.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "./assert.ts";
import {
  buildVictim,
  criuArgv,
  criuOnPath,
  killAll,
  oracle,
  procState,
  ROOT,
  startVictim,
  stopVictim,
  tmpDir,
  tracerPid,
  verdict,
  type Victim,
  waitGone,
  waitReport,
} from "./helpers.ts";
import { CriuClient, CriuRpcError } from "../mod.ts";
import { close, O, open, ptyIndex, setPtyLocked, tryRead } from "../src/syscalls/mod.ts";
import { readable } from "../src/syscalls/socket.ts";
import { join } from "node:path";

const CLIENT = join(ROOT, "tests", "fixtures", "rpc_client.py");
const ESRCH = 3, EBADRQC = 56, EOPNOTSUPP = 95;

// deno-lint-ignore no-explicit-any
type Json = any;

/** Runs the Python client (`mode`, with `cfg` as its JSON); returns its JSON lines. */
async function python(mode: string, cfg: Json): Promise<Json[]> {
  const out = await new Deno.Command("/usr/bin/python3", {
    args: [CLIENT, mode, JSON.stringify({ criu: criuArgv([]), ...cfg })],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert(out.success, `rpc_client.py ${mode} failed: ${new TextDecoder().decode(out.stderr)}`);
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

/** Requests on one `criu swrk`: their responses, then criu's exit (`exit`, `stderr`). */
async function call(...requests: Json[]): Promise<{ resps: Json[]; exit: number }> {
  const lines = await python("call", { requests });
  const last = lines.pop();
  return { resps: lines, exit: last.exit };
}

/** A victim that checks its memory on SIGTERM (heap.c, 4 MiB), ready. */
async function heapVictim(): Promise<Victim> {
  const v = startVictim(["setsid", await buildVictim("heap"), "{out}", "4"]);
  await waitReport(v);
  return v;
}

/** The task runs on untouched: not traced, not stopped. */
function untouched(pid: number): void {
  assertEquals(tracerPid(pid), 0);
  assertMatch(procState(pid) ?? "gone", /^[SR]$/);
}

Deno.test("pycriu's own client (CHECK, DUMP by images_dir_fd, RESTORE) takes a task down and back: same PID, its memory checks out", async () => {
  const v = await heapVictim();
  try {
    const imgs = tmpDir();
    const [r] = await python("pycriu", { binary: criuOnPath().bin, images_dir: imgs, pid: v.pid });
    assertEquals(r, { restored: false, pid: v.pid, sibling_refused: null });
    await v.child.status;
    assert(Deno.statSync(join(imgs, "dump.log")).isFile);
    assert(Deno.statSync(join(imgs, "restore.log")).isFile);
    assertMatch(await verdict(v), /^PASS$/m);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("RPC notifications: the caller hears each action point in criu's order (the root's PID with post-restore), and the log goes to criu.log of the work directory", async () => {
  const v = await heapVictim();
  try {
    const imgs = tmpDir(), work = tmpDir();
    const opts = { notify_scripts: true, log_level: 4 };
    const d = await call({
      type: "DUMP",
      images_dir: imgs,
      work_dir: work,
      opts: { ...opts, pid: v.pid },
    });
    assertEquals(d.exit, 0);
    assertEquals(d.resps[0].success, true);
    assertEquals(d.resps[0].notes, [["pre-dump", 0], ["query-ext-files", 0], ["post-dump", 0]]);
    assertMatch(Deno.readTextFileSync(join(work, "criu.log")), /Dumping finished successfully/);
    await v.child.status;
    const r = await call({ type: "RESTORE", images_dir: imgs, opts });
    assertEquals(r.resps[0].restore, { pid: v.pid });
    assertEquals(r.resps[0].notes, [
      ["pre-restore", 0],
      ["post-restore", v.pid],
      ["pre-resume", 0],
      ["post-resume", 0],
    ]);
    assertMatch(await verdict(v), /^PASS$/m);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("RPC: a caller answering that its post-dump action failed fails the dump and the task runs on; one failing pre-restore fails the restore and leaves nothing", async () => {
  const v = await heapVictim();
  try {
    const imgs = tmpDir();
    const opts = { notify_scripts: true, pid: v.pid };
    const d = await call({ type: "DUMP", images_dir: imgs, opts, fail_notify: "post-dump" });
    assertEquals(d.resps[0].success, false);
    assertMatch(d.resps[0].cr_errmsg, /post-dump action failed/);
    assertEquals(d.exit, 1);
    untouched(v.pid);
    // Images of a dump left running, restored over a caller that says no: the task stays ours.
    const ok = await call({
      type: "DUMP",
      images_dir: imgs,
      opts: { pid: v.pid, leave_running: true },
    });
    assertEquals(ok.resps[0].success, true);
    untouched(v.pid);
    Deno.kill(v.pid, "SIGKILL");
    await v.child.status;
    assert(await waitGone(v.pid));
    const r = await call({
      type: "RESTORE",
      images_dir: imgs,
      opts: { notify_scripts: true },
      fail_notify: "pre-restore",
    });
    assertEquals(r.resps[0].success, false);
    assertMatch(r.resps[0].cr_errmsg, /pre-restore action failed/);
    assertEquals(procState(v.pid), undefined);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("RPC refusals come back as one line naming the field, with criu's errno, and leave the task as it was: an option deno-criu lacks (tls, ps-socket), no pid, an external resource the caller names that is none, an unknown PID, a descriptor the caller does not have, keep_open on a dump, a single pre-dump", async () => {
  const v = await heapVictim();
  try {
    const imgs = tmpDir();
    const refused = async (req: Json, errmsg: RegExp, errno: number) => {
      const { resps, exit } = await call(req);
      assertEquals(resps[0].success, false, JSON.stringify(resps[0]));
      assertMatch(resps[0].cr_errmsg, errmsg);
      assert(!resps[0].cr_errmsg.includes("\n"));
      assertEquals(resps[0].cr_errno ?? 0, errno);
      assertEquals(exit, 1);
      untouched(v.pid);
    };
    await refused(
      { type: "DUMP", images_dir: imgs, opts: { pid: v.pid, ps: { fd: 0 } } },
      /^RPC field ps: Option --ps-socket is not supported by deno-criu/,
      EBADRQC,
    );
    // In the log file the request names too (runc shows the errno and the log's name only).
    assertMatch(Deno.readTextFileSync(join(imgs, "criu.log")), /Error.*RPC field ps/);
    await refused(
      { type: "DUMP", images_dir: imgs, opts: { tls: true, pid: v.pid } },
      /^RPC field tls: Option --tls is not supported/,
      EBADRQC,
    );
    await refused(
      { type: "DUMP", images_dir: imgs, opts: {} },
      /RPC field pid is required by deno-criu/,
      EBADRQC,
    );
    await refused(
      { type: "DUMP", images_dir: imgs, opts: { pid: 4194000 } },
      /No process with PID 4194000/,
      ESRCH,
    );
    await refused(
      { type: "DUMP", opts: { pid: v.pid, images_dir_fd: 999 } },
      /^Cannot use the caller's images directory descriptor 999: /,
      EBADRQC,
    );
    // What the caller names external when asked (query-ext-files) is checked as --external.
    await refused(
      {
        type: "DUMP",
        images_dir: imgs,
        opts: { pid: v.pid, notify_scripts: true },
        ext_files: ["bogus"],
      },
      /^invalid argument for --external: bogus$/,
      EBADRQC,
    );
    await refused(
      { type: "DUMP", images_dir: imgs, keep_open: true, opts: { pid: v.pid } },
      /keep_open is not allowed with a DUMP request/,
      EBADRQC,
    );
    await refused(
      { type: "SINGLE_PRE_DUMP", images_dir: imgs, opts: { pid: v.pid } },
      /The SINGLE_PRE_DUMP request is not supported by deno-criu/,
      EOPNOTSUPP,
    );
    assertEquals([...Deno.readDirSync(imgs)].filter((e) => e.name.endsWith(".img")), []);
    assertMatch(await verdict(v), /^PASS$/m);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("RPC: VERSION and FEATURE_CHECK on one connection kept open, then CHECK: criu 4.2 with a GitID naming deno-criu, no feature claimed it lacks", async () => {
  const { resps, exit } = await call(
    { type: "VERSION", keep_open: true },
    { type: "FEATURE_CHECK", keep_open: true },
    { type: "CHECK" },
  );
  assertEquals(exit, 0);
  assertEquals(resps[0].version.major_number, 4);
  assertEquals(resps[0].version.minor_number, 2);
  assertMatch(resps[0].version.gitid, /^deno-criu-/);
  assertEquals(resps[1].success, true);
  // Memory tracking without soft-dirty (userfaultfd write-protection), and lazy pages
  // (userfaultfd's non-cooperative events), which this kernel has.
  assertEquals(resps[1].features, { mem_track: true, lazy_pages: true, pidfd_store: false });
  assertEquals(resps[2].type, "CHECK");
  assertEquals(resps[2].success, true);
});

Deno.test("RPC restore with inherit_fd and rst_sibling, as runc restores a container's stdio: the task comes back as the caller's child, writing its next line into the caller's new pipe", async () => {
  const bin = await buildVictim("ticker");
  const out = join(tmpDir(), "out");
  const [r] = await python("stdio", { victim: [bin, out], images_dir: tmpDir() });
  try {
    assertEquals(r.dump.success, true);
    assertEquals(r.restore.success, true, JSON.stringify(r.restore));
    assertEquals(r.restore.restore.pid, r.victim);
    const last = Number(r.before.at(-1).split(" ")[1]);
    assertEquals(r.after[0], `tick ${last + 1}`);
    // Reaped by the caller: its child. Exit 0: its stdout was a pipe (the new one).
    assertEquals(r.status, 0);
    assertMatch(Deno.readTextFileSync(out), /^PASS$/m);
  } finally {
    killAll(r.victim);
  }
});

Deno.test("RPC config_file: the options of the request's configuration file win over the request's (leave-running keeps the task), a missing one changes nothing", async () => {
  const v = await heapVictim();
  try {
    const cfg = join(tmpDir(), "runc.conf");
    Deno.writeTextFileSync(cfg, "# as runc's /etc/criu/runc.conf\nleave-running\n");
    const d = await call({
      type: "DUMP",
      images_dir: tmpDir(),
      opts: { pid: v.pid, config_file: cfg },
    });
    assertEquals(d.resps[0].success, true);
    untouched(v.pid);
    const gone = await call({
      type: "DUMP",
      images_dir: tmpDir(),
      opts: { pid: v.pid, leave_running: true, config_file: `${cfg}.missing` },
    });
    assertEquals(gone.resps[0].success, true);
    untouched(v.pid);
    assertMatch(await verdict(v), /^PASS$/m);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("mod.ts's CriuClient drives this criu through swrk: version, dump with notifications, restore, and a refusal as a CriuRpcError with criu's errno", async () => {
  const criu = new CriuClient({ command: criuArgv([]) });
  assertEquals((await criu.version()).major, 4);
  const v = await heapVictim();
  try {
    const imgs = tmpDir();
    await assertRejects(
      () => criu.dump({ pid: v.pid, imagesDir: imgs, tls: true }),
      CriuRpcError,
      /RPC field tls/,
    );
    const seen: string[] = [];
    await criu.dump({ pid: v.pid, imagesDir: imgs, notifyScripts: true }, (s) => {
      seen.push(s);
      return true;
    });
    assertEquals(seen, ["pre-dump", "query-ext-files", "post-dump"]);
    await v.child.status;
    assertEquals((await criu.restore({ imagesDir: imgs })).pid, v.pid);
    assertMatch(await verdict(v), /^PASS$/m);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("CriuClient hands the handler of orphan-pts-master the new master: a task whose terminal's master the caller held comes back on a new pty at the same index, its ticks readable there, its terminal and foreground group as they were", async () => {
  const criu = new CriuClient({ command: criuArgv([]) });
  const master = open("/dev/ptmx", O.RDWR | O.NOCTTY | O.CLOEXEC);
  let newMaster = -1;
  const index = ptyIndex(master, "the test's pty");
  setPtyLocked(master, false, "the test's pty");
  const tty = `/dev/pts/${index}`;
  const v = startVictim([
    "sh",
    "-c",
    `exec setsid -c ${await buildVictim("ticker")} {out} tty <${tty} >${tty} 2>&1`,
  ]);
  try {
    await waitReport(v);
    const opts = { imagesDir: tmpDir(), orphanPtsMaster: true, notifyScripts: true };
    await criu.dump({ ...opts, pid: v.pid });
    await v.child.status;
    close(master);
    const r = await criu.restore(opts, (script, _pid, fd) => {
      if (script === "orphan-pts-master") newMaster = fd ?? -2;
      return true;
    });
    assertEquals(r.pid, v.pid);
    assert(newMaster >= 0, `orphan-pts-master came with no descriptor (${newMaster})`);
    assertEquals(ptyIndex(newMaster, "the new master"), index);
    // Ticks go on through it (what came before the dump went with the old master), in the
    // terminal's settings (ONLCR).
    const buf = new Uint8Array(256);
    let text = "";
    while (!/tick \d+\r\n/.test(text)) {
      await readable(newMaster);
      const n = tryRead(newMaster, buf);
      assert(n > 0, `reading the new master: ${n}`);
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    assertMatch(await verdict(v), /^PASS$/m);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
    if (newMaster >= 0) close(newMaster);
  }
});

Deno.test({
  name:
    "mod.ts's CriuClient drives CRIU 4.2 too (where the oracle is): its version, and a task dumped and restored through it",
  ignore: oracle() === undefined,
  fn: async () => {
    const criu = new CriuClient({ command: [oracle()!] });
    const ver = await criu.version();
    assertEquals([ver.major, ver.minor], [4, 2]);
    const v = await heapVictim();
    try {
      const imgs = tmpDir();
      await criu.dump({ pid: v.pid, imagesDir: imgs, logLevel: 4, logFile: "dump.log" });
      await v.child.status;
      assertEquals((await criu.restore({ imagesDir: imgs, logFile: "restore.log" })).pid, v.pid);
      assertMatch(await verdict(v), /^PASS$/m);
    } finally {
      killAll(v.pid);
      await stopVictim(v);
    }
  },
});

Deno.test("criu service -d --pidfile: in the background at once, it serves pycriu's client on its socket (CHECK, DUMP, RESTORE; rst_sibling refused, the caller not being its parent) and CriuClient's, one worker per connection, each started before its connection came, until SIGTERM", async () => {
  const dir = tmpDir("service-");
  const address = join(dir, "criu.sock"), pidfile = join(dir, "criu.pid");
  const log = join(dir, "service.log");
  const run = await new Deno.Command(criuArgv([])[0], {
    args: [
      ...criuArgv([]).slice(1),
      "service",
      "--address",
      address,
      "-d",
      "--pidfile",
      pidfile,
      "-v4",
      "-o",
      log,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(run.code, 0, new TextDecoder().decode(run.stderr));
  const daemon = Number(Deno.readTextFileSync(pidfile));
  const v = await heapVictim();
  try {
    // In a session of its own, its socket open to anyone, as criu's.
    assertEquals(
      Deno.readTextFileSync(`/proc/${daemon}/stat`).split(") ")[1].split(" ")[3],
      `${daemon}`,
    );
    assertEquals(Deno.statSync(address).mode! & 0o777, 0o666);
    const imgs = tmpDir();
    const [r] = await python("pycriu", { socket: address, images_dir: imgs, pid: v.pid });
    assertEquals(r, { restored: false, pid: v.pid, sibling_refused: EBADRQC });
    assertMatch(await verdict(v), /^PASS$/m);
    await v.child.status;
    const criu = new CriuClient({ address });
    assertEquals((await criu.version()).minor, 2);
    // Each connection went to a worker already running (pycriu's make several).
    const handed = Deno.readTextFileSync(log).match(/\(started ahead\) took the connection/g);
    assert((handed?.length ?? 0) >= 2, Deno.readTextFileSync(log));
  } finally {
    killAll(v.pid);
    await stopVictim(v);
    Deno.kill(daemon, "SIGTERM");
    assert(await waitGone(daemon));
  }
});

Deno.test("RPC PAGE_SERVER starts a page server in the background on a free port (its PID and port answered); a dump sends it the pages, and the task comes back from them", async () => {
  const v = await heapVictim();
  let restored = 0;
  try {
    const srv = tmpDir(), dump = tmpDir();
    const { resps } = await call({ type: "PAGE_SERVER", images_dir: srv, opts: { ps: {} } });
    assertEquals(resps[0].success, true, JSON.stringify(resps[0]));
    const { pid, port } = resps[0].ps;
    assert(pid > 0 && port > 0, JSON.stringify(resps[0].ps));
    const d = await call({
      type: "DUMP",
      images_dir: dump,
      opts: { pid: v.pid, ps: { address: "127.0.0.1", port } },
    });
    assertEquals(d.resps[0].success, true, JSON.stringify(d.resps[0]));
    assert(await waitGone(v.pid), "gone after the dump");
    for (const e of Deno.readDirSync(srv)) {
      if (e.name.endsWith(".img")) Deno.copyFileSync(join(srv, e.name), join(dump, e.name));
    }
    const r = await call({ type: "RESTORE", images_dir: dump, opts: {} });
    assertEquals(r.resps[0].success, true, JSON.stringify(r.resps[0]));
    restored = r.resps[0].restore.pid;
    assertEquals(restored, v.pid);
    assertMatch(await verdict(v), /^PASS$/m);
  } finally {
    if (restored) killAll(restored);
    killAll(v.pid);
    await stopVictim(v);
  }
});
