/**
 * Namespaces: a tree in namespaces of its own, made again at restore (the containers issue,
 * kind by kind), and nested ones refused by name.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  checkAcrossRoundTrip,
  criu,
  dumpRefused,
  killAll,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  verdict,
  waitGone,
  waitReport,
} from "./helpers.ts";

Deno.test("a UTS namespace of its own comes back with its host and domain names, the host's untouched", async () => {
  const host = Deno.hostname();
  const bin = await buildVictim("utsns");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS utsns/);
  assertEquals(Deno.hostname(), host);
});

Deno.test("a UTS namespace below the root's is refused by name", async () => {
  // The root (sh) in criu's namespace, its child in one of its own.
  const v = startVictim([
    "setsid",
    "sh",
    "-c",
    "unshare --uts sh -c 'hostname inner; sleep 30' & echo ready > {out}; wait",
  ]);
  try {
    await sleep(300);
    assertMatch(Deno.readTextFileSync(v.out), /ready/);
    await dumpRefused(v.pid, /in another uts namespace than task \d+/);
  } finally {
    await stopVictim(v);
  }
});

/** Dumps `v`, waits `pauseMs` with it gone, restores it; its /proc timens_offsets then. */
async function pausedRoundTrip(pid: number, pauseMs: number): Promise<string> {
  const imgs = tmpDir();
  const d = await criu(["dump", "-t", `${pid}`, "-D", imgs]);
  assertEquals(d.code, 0, d.stderr);
  assert(await waitGone(pid), "gone after the dump");
  await sleep(pauseMs);
  const r = await criu(["restore", "-d", "-D", imgs]);
  assertEquals(r.code, 0, r.stderr);
  return Deno.readTextFileSync(`/proc/${pid}/timens_offsets`);
}

Deno.test("as with criu, the monotonic and boot clocks go on from the dump (a time namespace hides the pause)", async () => {
  const bin = await buildVictim("timens");
  const v = startVictim(["setsid", bin, "{out}", "1000"]);
  try {
    await waitReport(v);
    const offsets = await pausedRoundTrip(v.pid, 1500);
    // Behind the host's clocks by the pause (at least).
    assertMatch(offsets, /monotonic\s+-[1-9]/);
    assertMatch(await verdict(v), /PASS timens/);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("a time namespace of its own comes back with its clocks where they were", async () => {
  const bin = await buildVictim("timens");
  // The root is made in a time namespace 100000 s ahead of the host's monotonic clock.
  const v = startVictim([
    "unshare",
    "--time",
    "--fork",
    "--monotonic",
    "100000",
    "--boottime",
    "200000",
    "setsid",
    bin,
    "{out}",
    "1000",
  ]);
  const r = await waitReport(v);
  const pid = Number(r.pid);
  try {
    const offsets = await pausedRoundTrip(pid, 1500);
    const mono = Number(/monotonic\s+(-?\d+)/.exec(offsets)![1]);
    const boot = Number(/boottime\s+(-?\d+)/.exec(offsets)![1]);
    // Less the pause (and the time the dump and restore took).
    assert(mono >= 99_900 && mono <= 99_999, `monotonic offset ${mono}`);
    assert(boot >= 199_900 && boot <= 199_999, `boottime offset ${boot}`);
    assertMatch(await verdict(v, pid), /PASS timens/);
  } finally {
    killAll(pid);
    await stopVictim(v);
  }
});
