/**
 * Terminals the program opened itself: pty pairs with their settings and unread bytes, a hung
 * up slave, a locked master in packet mode, a session's controlling terminal with /dev/tty and
 * its foreground group; what the images cannot carry refused, the tree left as it was.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  checkAcrossRoundTrip,
  critDecodeAll,
  criu,
  killAll,
  ROOT,
  roundTrip,
  startVictim,
  stopVictim,
  tmpDir,
  treePids,
  verdict,
  waitReport,
} from "./helpers.ts";

/** The fd links of every task of the tree, by task position. */
function fdLinks(pids: number[]): string[][] {
  return pids.map((pid) =>
    [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => {
      return `${e.name} -> ${Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`)}`;
    }).filter((l) => /\/dev\//.test(l)).sort()
  );
}

Deno.test("ptys come back whole: indices, settings, owner, unread input and output, hangup, packet and lock modes, a session's terminal with /dev/tty and its foreground group", async () => {
  const bin = await buildVictim("ptys");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pids: number[] = [];
  try {
    await waitReport(v);
    pids = treePids(v.pid);
    assertEquals(pids.length, 3);
    const before = fdLinks(pids);
    const imgs = await roundTrip(v);
    // From outside: the same terminals at the same descriptors (the hung up slave's node gone).
    assertEquals(fdLinks(pids), before);
    assert(before[0].some((l) => /\/dev\/pts\/\d+ \(deleted\)$/.test(l)), before[0].join("\n"));
    const img = await critDecodeAll(imgs);
    const types = img.get("tty-info.img")!.entries.map((e) => e.type).sort();
    // Pair A (both sides), B and E (masters), D (a hung up slave); /dev/tty.
    assertEquals(types, ["CTTY", "PTY", "PTY", "PTY", "PTY", "PTY"]);
    const data = img.get("tty-data.img")!.entries;
    assertEquals(data.length, 2);
    assertMatch(await verdict(v, v.pid, "SIGTERM", 3000), /PASS ptys/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
  }
});

Deno.test("a dump that leaves the tree running puts the unread bytes of its ptys back", async () => {
  const bin = await buildVictim("ptys");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pids: number[] = [];
  try {
    await waitReport(v);
    pids = treePids(v.pid);
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir(), "-R"]);
    assertEquals(d.code, 0, d.stderr);
    assertMatch(await verdict(v, v.pid, "SIGTERM", 3000), /PASS ptys/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
  }
});

Deno.test("ptys round trip with the queued data left out, as in the interop run", async () => {
  const bin = await buildVictim("ptys");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}", "interop"]), /PASS ptys/, {
    timeoutMs: 3000,
  });
});

Deno.test("an unread line ended by end-of-file is refused by name, and the pty keeps it", async () => {
  const v = startVictim(["setsid", "python3", `${ROOT}/tests/victims/ptyeof.py`, "{out}"]);
  try {
    await waitReport(v);
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()]);
    assertEquals(d.code, 1, d.stderr);
    assertMatch(d.stderr, /^Error: Cannot dump pty \/dev\/pts\/\d+: a line ended by end-of-file/m);
    assertMatch(await verdict(v, v.pid, "SIGTERM", 3000), /PASS ptyeof/);
  } finally {
    await stopVictim(v);
  }
});

Deno.test("a slave whose master is outside the tree is refused without --shell-job", async () => {
  // The victim's master stays with python (pty_run.py); the dumped tree holds only the slave.
  const out = `${tmpDir()}/report`;
  const py = new Deno.Command("setsid", {
    args: ["python3", `${ROOT}/tests/victims/pty_run.py`, out, "sleep", "100"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let pid = 0;
  try {
    for (let i = 0; i < 100 && !pid; i++) {
      await new Promise((r) => setTimeout(r, 20));
      try {
        pid = Number(Deno.readTextFileSync(out).match(/ready pid=(\d+)/)?.[1] ?? 0);
      } catch {
        // not yet
      }
    }
    assert(pid > 0);
    const d = await criu(["dump", "-t", `${pid}`, "-D", tmpDir()]);
    assertEquals(d.code, 1, d.stderr);
    assertMatch(d.stderr, /its master is not in the dumped tree; dump a shell job/);
    assert(Deno.statSync(`/proc/${pid}`).isDirectory);
  } finally {
    py.kill("SIGKILL");
    await py.status;
    if (pid) killAll(pid);
  }
});

Deno.test("a virtual console as a session's controlling terminal, and the console, are opened again", async () => {
  const bin = await buildVictim("vtctty");
  const v = startVictim([bin, "{out}", "{dir}"]);
  try {
    await waitReport(v);
    if (/SKIP/.test(Deno.readTextFileSync(v.out))) {
      console.log("skipped: this machine has no virtual console 7");
      return;
    }
    await roundTrip(v);
    assertMatch(await verdict(v, v.pid, "SIGTERM", 3000), /PASS vtctty/);
  } finally {
    await stopVictim(v);
    killAll(v.pid);
  }
});
