/**
 * Process trees and threads: a parent with children (their own process group, their own
 * session), threads in each child, a pipe they share and a zombie; dumped whole and restored
 * whole, then checked from the outside (ps-like) and from the inside (the tree's own checks).
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  critDecodeAll,
  criu,
  procMaps,
  procState,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  tracerPid,
  waitGone,
  waitReport,
} from "./helpers.ts";

interface Shape {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  threads: number;
  state: string;
}

/** The tree below `root` as /proc shows it. */
function shapeOf(root: number): Shape[] {
  const out: Shape[] = [];
  const visit = (pid: number) => {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    out.push({
      pid,
      ppid: pid === root ? 0 : Number(f[1]),
      pgid: Number(f[2]),
      sid: Number(f[3]),
      threads: Number(f[17]),
      state: f[0],
    });
    const tasks = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
    const kids = tasks.flatMap((t) =>
      Deno.readTextFileSync(`/proc/${pid}/task/${t}/children`).trim().split(/\s+/).filter(Boolean)
    );
    for (const k of kids.map(Number).sort((a, b) => a - b)) visit(k);
  };
  visit(root);
  return out;
}

function killTree(pids: number[]): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

Deno.test("a tree with threads, groups, sessions, a shared pipe and a zombie: dump, restore, check", async () => {
  const bin = await buildVictim("tree");
  const v = startVictim(["setsid", bin, "{out}", "3", "2"]);
  let pids: number[] = [];
  try {
    const r = await waitReport(v);
    const before = shapeOf(v.pid);
    pids = before.map((s) => s.pid);
    assertEquals(before.length, 5);
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-o", "dump.log", "-v4"]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after dump`);

    const img = await critDecodeAll(imgs);
    const pstree = img.get("pstree.img")!.entries;
    assertEquals(pstree.map((e: { pid: number }) => e.pid).sort(), [...pids].sort());
    const zombie = Number(r.zombie);
    assertEquals(img.get(`core-${zombie}.img`)!.entries[0].tc.exit_code, 42 << 8);
    for (const e of pstree) {
      for (const tid of e.threads) assert(img.has(`core-${tid}.img`), `core of thread ${tid}`);
    }

    const rest = await criu(["restore", "-D", imgs, "-d", "-o", "restore.log", "-v4"]);
    assertEquals(rest.code, 0, rest.stderr + Deno.readTextFileSync(`${imgs}/restore.log`));
    const after = shapeOf(v.pid);
    assertEquals(
      after.map(({ state: _, ...s }) => s),
      before.map(({ state: _, ...s }) => s),
      "same PIDs, parents, groups, sessions and thread counts",
    );
    assertEquals(after.find((s) => s.pid === zombie)!.state, "Z");
    assertEquals(Deno.readTextFileSync(`/proc/${zombie}/comm`), "tree\n");

    Deno.kill(v.pid, "SIGTERM");
    for (let i = 0; i < 100 && !/PASS|FAIL/.test(Deno.readTextFileSync(v.out)); i++) {
      await sleep(50);
    }
    assertMatch(Deno.readTextFileSync(v.out), /PASS tree/);
  } finally {
    await stopVictim(v);
    killTree(pids);
  }
});

Deno.test("a tree that keeps forking is frozen whole, and left running with -R", async () => {
  const bin = await buildVictim("forker");
  const v = startVictim(["setsid", bin, "{out}"]);
  try {
    await waitReport(v);
    await sleep(100);
    for (let i = 0; i < 3; i++) {
      const imgs = tmpDir();
      const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-R"]);
      assertEquals(run.code, 0, run.stderr);
      const img = await critDecodeAll(imgs);
      const pstree = img.get("pstree.img")!.entries;
      assert(pstree.length >= 1);
      assertEquals(pstree[0].pid, v.pid);
      for (const e of pstree.slice(1)) assertEquals(e.ppid, v.pid);
      assertEquals(tracerPid(v.pid), 0);
    }
    await sleep(100);
    assert(["S", "R"].includes(procState(v.pid)!), "still forking");
  } finally {
    await stopVictim(v);
  }
});

Deno.test("a failed dump of a tree leaves every task running untouched", async () => {
  const bin = await buildVictim("tree");
  const v = startVictim(["setsid", bin, "{out}", "3", "2"]);
  let pids: number[] = [];
  try {
    await waitReport(v);
    const before = shapeOf(v.pid);
    pids = before.map((s) => s.pid);
    const maps = pids.map(procMaps);
    for (const step of ["parasite", "mm", "sync"]) {
      const run = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()], { DENO_CRIU_FAULT: step });
      assertEquals(run.code, 1);
      assertEquals(pids.map(procMaps), maps, `no mapping left behind (${step})`);
      for (const pid of pids) {
        for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
          assertEquals(tracerPid(Number(t.name)), 0, `thread ${t.name} detached (${step})`);
        }
      }
    }
    Deno.kill(v.pid, "SIGTERM");
    for (let i = 0; i < 100 && !/PASS|FAIL/.test(Deno.readTextFileSync(v.out)); i++) {
      await sleep(50);
    }
    assertMatch(Deno.readTextFileSync(v.out), /PASS tree/);
  } finally {
    await stopVictim(v);
    killTree(pids);
  }
});
