/**
 * Task state beside memory and files survives dump and restore, or is refused by name:
 * capabilities and per-thread credentials, scheduling, oom_score_adj, THP, dumpable,
 * membarrier, interval timers, zombies, stopped tasks (victims/taskstate.c); and what criu
 * refuses on purpose (victims/refuse.c).
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  checkAcrossRoundTrip,
  criu,
  killAll,
  procState,
  startVictim,
  stopVictim,
  tmpDir,
  treePids,
  verdict,
  waitGone,
  waitReport,
} from "./helpers.ts";

Deno.test("capabilities, credentials, scheduling, oom, THP, dumpable, membarrier, timers, zombies, a stopped child, no SIGCHLD from the restore", async () => {
  const bin = await buildVictim("taskstate");
  const v = startVictim(["setsid", bin, "{out}"]);
  try {
    await waitReport(v);
    const pids = treePids(v.pid);
    assertEquals(pids.length, 7, "leader, two live children, four zombies");
    const before = Deno.readTextFileSync(`/proc/${v.pid}/status`);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(d.code, 0, d.stderr);
    await v.child.status;
    for (const pid of pids) assert(await waitGone(pid, 15000), `task ${pid} gone`);
    const r = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(r.code, 0, r.stderr);
    // From outside: the leader's capabilities and oom_score_adj as before.
    const after = Deno.readTextFileSync(`/proc/${v.pid}/status`);
    for (const field of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Uid", "Gid"]) {
      const line = (s: string) => s.split("\n").find((l) => l.startsWith(field + ":"));
      assertEquals(line(after), line(before), field);
    }
    assertEquals(Deno.readTextFileSync(`/proc/${v.pid}/oom_score_adj`).trim(), "400");
    assertEquals(procState(pids[2]), "T", "the stopped child is stopped");
    // From inside.
    assertMatch(await verdict(v), /^ready.*\nPASS\n$/);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

for (
  const [mode, message] of [
    ["sigtrap", /it has a SIGTRAP pending/],
    ["udpcork", /corked UDP socket \(UDP_CORK\)/],
    ["timens", /future children get another time namespace/],
  ] as const
) {
  Deno.test(`refused by name as criu refuses it: ${mode}; the task goes on untouched`, async () => {
    const bin = await buildVictim("refuse");
    const v = startVictim(["setsid", bin, "{out}", mode]);
    try {
      await waitReport(v);
      const run = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()]);
      assertEquals(run.code, 1);
      assertMatch(run.stderr.trim().split("\n").at(-1)!, message);
      assertMatch(await verdict(v), /PASS\n$/);
    } finally {
      await stopVictim(v);
    }
  });
}

Deno.test("a task in a root of its own, its working directory outside it, keeps both", async () => {
  const bin = await buildVictim("chrooted");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}", "{dir}"]), /PASS chrooted/);
});

Deno.test("a working directory in /proc/N of a child that is gone stays there", async () => {
  const bin = await buildVictim("deadcwd");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS deadcwd/);
});

Deno.test("seccomp: filters shared by threads (TSYNC), in their order, a child's own on top, and strict mode", async () => {
  const bin = await buildVictim("seccomp");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS seccomp/);
});

Deno.test("the login uid comes back, in a child too", async () => {
  // A login uid of its own (which criu's restore does not have), inherited by a child.
  const code = "import os,signal,sys,time\nopen('/proc/self/loginuid','w').write('4242')\n" +
    "pid=os.fork()\nif pid==0:\n  time.sleep(600)\n" +
    "def check(*_):\n  mine=open('/proc/self/loginuid').read()\n" +
    "  child=open(f'/proc/{pid}/loginuid').read()\n" +
    "  ok=mine=='4242' and child=='4242'\n" +
    "  open(sys.argv[1],'a').write(('PASS' if ok else 'FAIL')+f' loginuid {mine} {child}\\n')\n" +
    "  os.kill(pid,9)\n  sys.exit(0)\n" +
    "signal.signal(signal.SIGTERM,check)\nopen(sys.argv[1],'a').write('ready\\n')\n" +
    "while True: time.sleep(1)";
  await checkAcrossRoundTrip(
    startVictim(["setsid", "python3", "-c", code, "{out}"]),
    /PASS loginuid 4242 4242/,
  );
});
