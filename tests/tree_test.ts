/**
 * Process trees and threads: a parent with children (their own process group, their own
 * session), threads in each child, a pipe they share and a zombie; dumped whole and restored
 * whole, then checked from the outside (ps-like) and from the inside (the tree's own checks).
 */
import { close, O, open } from "../src/syscalls/mod.ts";
import { tryLseek } from "../src/syscalls/socket.ts";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  checkAcrossRoundTrip,
  critDecodeAll,
  criu,
  dumpRefused,
  killAll,
  num,
  procMaps,
  procState,
  roundTrip,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  tracerPid,
  treePids,
  verdict,
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

    assertMatch(await verdict(v), /PASS tree/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
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

/**
 * Dumps of the tree of `root` (tasks `pids`) made to fail at each of `steps`: each fails, and
 * leaves every task's mappings as they were and every thread detached.
 */
async function failedDumpsHarmless(root: number, pids: number[], steps: string[]): Promise<void> {
  const maps = pids.map(procMaps);
  for (const step of steps) {
    const run = await criu(["dump", "-t", `${root}`, "-D", tmpDir()], { DENO_CRIU_FAULT: step });
    assertEquals(run.code, 1);
    assertEquals(pids.map(procMaps), maps, `no mapping left behind (${step})`);
    for (const pid of pids) {
      for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
        assertEquals(tracerPid(Number(t.name)), 0, `thread ${t.name} detached (${step})`);
      }
    }
  }
}

Deno.test("a failed dump of a tree leaves every task running untouched", async () => {
  const bin = await buildVictim("tree");
  const v = startVictim(["setsid", bin, "{out}", "3", "2"]);
  let pids: number[] = [];
  try {
    await waitReport(v);
    const before = shapeOf(v.pid);
    pids = before.map((s) => s.pid);
    await failedDumpsHarmless(v.pid, pids, ["parasite", "mm", "sync"]);
    assertMatch(await verdict(v), /PASS tree/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
  }
});

Deno.test("a process's pages move while the next is collected; a dump failing meanwhile leaves every task as it was", async () => {
  const bin = await buildVictim("tree");
  const v = startVictim(["setsid", bin, "{out}", "2", "1", "256"]);
  let pids: number[] = [];
  try {
    const r = await waitReport(v, "ready", 60000);
    // The children fill their memory before they start their threads (after "ready").
    const kids = [Number(r.child1), Number(r.child2)];
    for (
      let i = 0;
      i < 600 && shapeOf(v.pid).some((t) => kids.includes(t.pid) && t.threads < 2);
      i++
    ) {
      await sleep(50);
    }
    await sleep(100);
    const before = shapeOf(v.pid);
    pids = before.map((s) => s.pid);
    // Failing at a process's start and at the images' end, while the pages of the children
    // dumped before are still on their way, their parasites in.
    await failedDumpsHarmless(v.pid, pids, ["process", "collect"]);
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-o", "dump.log", "-v4"]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after dump`);
    // Each child fills 256 MiB: the second is collected while the first one's pages move.
    const log = Deno.readTextFileSync(`${imgs}/dump.log`);
    const firstPages = log.search(new RegExp(`task ${r.child1}: \\d+ pages in`));
    const secondCollected = log.search(
      new RegExp(`Task ${r.child2}: collected mappings and files`),
    );
    assert(firstPages > 0 && secondCollected > 0, "both in the log");
    assert(secondCollected < firstPages, "the second child collected before the first's pages");
    const rest = await criu(["restore", "-D", imgs, "-d"]);
    assertEquals(rest.code, 0, rest.stderr);
    assertEquals(
      shapeOf(v.pid).map(({ state: _, ...s }) => s),
      before.map(({ state: _, ...s }) => s),
    );
    assertMatch(await verdict(v), /PASS tree/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
  }
});

Deno.test("shared anonymous memory stays one object for parent and child", async () => {
  const bin = await buildVictim("shm");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pids: number[] = [];
  try {
    const r = await waitReport(v);
    pids = [v.pid, Number(r.child)];
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after dump`);
    const img = await critDecodeAll(imgs);
    const shmImg = [...img.keys()].find((k) => k.startsWith("pagemap-shmem-"));
    assert(shmImg, "pagemap-shmem image written");
    const entries = img.get(shmImg)!.entries.slice(1);
    assertEquals(entries.map((e: { vaddr: string }) => num(e.vaddr)), [0n, 5n * 4096n, 9n * 4096n]);
    const stats = img.get("stats-dump")!.entries[0].dump;
    const pagesBytes = [...Deno.readDirSync(imgs)].filter((e) => e.name.startsWith("pages-"))
      .reduce((n, e) => n + Deno.statSync(`${imgs}/${e.name}`).size, 0);
    assertEquals((Number(stats.pages_written) + Number(stats.shpages_written)) * 4096, pagesBytes);

    const rest = await criu(["restore", "-D", imgs, "-d"]);
    assertEquals(rest.code, 0, rest.stderr);
    const shm = BigInt("0x" + r.shm);
    const range = `${shm.toString(16)}-${(shm + 16n * 4096n).toString(16)}`;
    const ino = (pid: number) => Deno.statSync(`/proc/${pid}/map_files/${range}`).ino;
    assertEquals(ino(pids[0]), ino(pids[1]), "one object for both");
    // Only the three written pages are allocated in it: walk it with SEEK_DATA / SEEK_HOLE.
    const fd = open(`/proc/${pids[0]}/map_files/${range}`, O.RDONLY);
    const allocated: bigint[] = [];
    for (let off = 0n; off < 16n * 4096n;) {
      const d = tryLseek(fd, off, 3);
      if (d < 0n) break;
      const h = tryLseek(fd, d, 4);
      for (let p = d; p < h; p += 4096n) allocated.push(p / 4096n);
      off = h;
    }
    close(fd);
    assertEquals(allocated, [0n, 5n, 9n]);
    assertMatch(await verdict(v, v.pid, "SIGUSR1", 3000), /PASS shm/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
  }
});

/** The descriptors of task `pid` with what they are (pipe and socket numbers left out). */
function fdKinds(pid: number): string[] {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => Number(e.name)).sort((a, b) => a - b)
    .map((fd) => `${fd} ${Deno.readLinkSync(`/proc/${pid}/fd/${fd}`).replace(/:\[\d+\]$/, "")}`);
}

for (const mib of [0, 512]) {
  // With a parent of 512 MiB, its pages are still on their way while the child is collected
  // (the dump lets them go on, its parasite in): the child must not meet the parasite's pipes
  // in the table they share.
  const name = "a child sharing its parent's descriptor table and fs info (CLONE_FILES | " +
    `CLONE_FS)${mib ? `, the parent's ${mib} MiB dumped first` : ""}`;
  Deno.test(name, async () => {
    const bin = await buildVictim("clonefiles");
    const v = startVictim(["setsid", bin, "{out}", "{dir}", ...(mib ? [`${mib}`] : [])]);
    let pids: number[] = [];
    try {
      const r = await waitReport(v, "ready", 60000);
      pids = [v.pid, Number(r.child)];
      const fds = fdKinds(v.pid);
      const imgs = tmpDir();
      const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
      assertEquals(run.code, 0, run.stderr);
      await v.child.status;
      for (const pid of pids) assert(await waitGone(pid));
      const img = await critDecodeAll(imgs);
      const ids = pids.map((p) => img.get(`ids-${p}.img`)!.entries[0]);
      assertEquals(ids[0].files_id, ids[1].files_id);
      assertEquals(ids[0].fs_id, ids[1].fs_id);
      const rest = await criu(["restore", "-D", imgs, "-d"]);
      assertEquals(rest.code, 0, rest.stderr);
      assertEquals(fdKinds(v.pid), fds, "the shared table as it was");
      assertEquals(fdKinds(pids[1]), fds, "the child's is the same table");
      assertMatch(await verdict(v, v.pid, "SIGTERM", 10000), /PASS clonefiles/);
    } finally {
      await stopVictim(v);
      killAll(...pids);
    }
  });
}

Deno.test("a System V attachment mapped in part (a page unmapped since) is refused by name, the task left running", async () => {
  const bin = await buildVictim("sysv");
  const v = startVictim(["setsid", bin, "{out}", "partial"]);
  try {
    await waitReport(v);
    await dumpRefused(v.pid, /System V segment \d+ is mapped there in part/);
  } finally {
    await stopVictim(v);
  }
});

Deno.test("System V shared memory: a keyed segment and a removed one, shared with a child", async () => {
  const bin = await buildVictim("sysv");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pids: number[] = [];
  let ida = -1;
  try {
    const r = await waitReport(v);
    pids = [v.pid, Number(r.child)];
    ida = Number(r.ida);
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    for (const pid of pids) assert(await waitGone(pid));
    const shm = (await critDecodeAll(imgs)).get("ipcns-shm-0.img")!.entries;
    assertEquals(
      shm.map((e: { desc: { id: number } }) => e.desc.id).sort(),
      [Number(r.ida), Number(r.idb)].sort(),
    );
    assert(
      !Deno.readTextFileSync("/proc/sysvipc/shm").includes(` ${r.idb} `),
      "segment B died with the tree",
    );
    const rest = await criu(["restore", "-D", imgs, "-d"]);
    assertEquals(rest.code, 0, rest.stderr);
    assertMatch(await verdict(v, v.pid, "SIGTERM", 3000), /PASS sysv/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
    if (ida >= 0) {
      await new Deno.Command("ipcrm", { args: ["-m", `${ida}`], stderr: "null" }).output();
    }
  }
});

Deno.test("copy-on-write memory stays shared by a parent, its child and grandchild", async () => {
  const bin = await buildVictim("cow");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pids: number[] = [];
  try {
    const r = await waitReport(v);
    pids = [v.pid, Number(r.child), Number(r.grandchild)];
    assertEquals(r.shared, "22", "pages the three share before the dump");
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after dump`);
    // A file mapped by all three is one file entry, as criu writes it.
    const img = await critDecodeAll(imgs);
    const fileIds = (pid: number) =>
      img.get(`mm-${pid}.img`)!.entries[0].vmas
        .filter((m: { status: string }) => m.status.includes("FILE_PRIVATE"))
        .map((m: { shmid: number }) => m.shmid).join();
    assertEquals(fileIds(pids[1]), fileIds(pids[0]));
    assertEquals(fileIds(pids[2]), fileIds(pids[0]));

    const rest = await criu(["restore", "-D", imgs, "-d", "--display-stats"]);
    assertEquals(rest.code, 0, rest.stderr);
    // The pages each child shares with its parent are compared and left alone, not written.
    const kept = Number(rest.stdout.match(/Pages skipped COW: (\d+)/)?.[1]);
    assert(kept >= 2 * 22, rest.stdout);
    const stats = (await critDecodeAll(imgs)).get("stats-restore")!.entries[0].restore;
    assertEquals(Number(stats.pages_skipped_cow), kept);
    assertMatch(await verdict(v, v.pid, "SIGTERM"), /PASS cow 22 pages shared/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
  }
});

Deno.test("one descriptor table shared along parent links (a grandchild, a parent's other child) stays one", async () => {
  const bin = await buildVictim("fdshare");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pids: number[] = [];
  try {
    await waitReport(v);
    pids = treePids(v.pid);
    assertEquals(pids.length, 5);
    await roundTrip(v);
    assertMatch(await verdict(v, v.pid, "SIGTERM", 3000), /PASS fdshare/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
  }
});

Deno.test("/proc files of the tree's own tasks name the restored tasks", async () => {
  const bin = await buildVictim("procfiles");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS procfiles/, {
    timeoutMs: 3000,
  });
});

/** A cgroup directory with a freezer (v1 freezer hierarchy, or cgroup v2), made for a test. */
function freezerCgroup(): string | undefined {
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const [left, right] = line.split(" - ");
    if (!right) continue;
    const [fstype, , opts] = right.split(" ");
    const dir = left.split(" ")[4];
    const v1 = fstype === "cgroup" && opts.split(",").includes("freezer");
    const v2 = fstype === "cgroup2";
    if (!v1 && !v2) continue;
    const mine = `${dir}/deno-criu-freeze-${Deno.pid}`;
    try {
      Deno.mkdirSync(mine);
    } catch {
      continue;
    }
    if (v1 || Deno.statSync(`${mine}/cgroup.freeze`).isFile) return mine;
    Deno.removeSync(mine);
  }
  return undefined;
}

Deno.test("--freeze-cgroup: a tree is frozen at once through its cgroup's freezer, then dumped and restored into it; one outside the cgroup is refused, left running", async () => {
  const dir = freezerCgroup();
  if (!dir) {
    console.log("skipped: no cgroup freezer here");
    return;
  }
  const bin = await buildVictim("tree");
  const v = startVictim([
    "sh",
    "-c",
    `echo $$ > ${dir}/cgroup.procs && exec setsid ${bin} {out} 3 2`,
  ]);
  const outside = startVictim(["setsid", "sleep", "30"]);
  let pids: number[] = [];
  try {
    await waitReport(v);
    pids = treePids(v.pid);
    const thawed = () =>
      ["freezer.state", "cgroup.freeze"].map((f) => {
        try {
          return Deno.readTextFileSync(`${dir}/${f}`).trim();
        } catch {
          return "";
        }
      }).join("");
    // criu killed with the cgroup frozen: its guard thaws it, and the tree runs on.
    const killed = await criu(
      ["dump", "-t", `${v.pid}`, "-D", tmpDir(), "--freeze-cgroup", dir],
      { CRIU_TEST_DIE_AT: "frozen" },
    );
    assert(killed.code !== 0, "criu died");
    for (let i = 0; i < 50 && !["THAWED", "0"].includes(thawed()); i++) await sleep(20);
    assert(["THAWED", "0"].includes(thawed()), `thawed by the guard: ${thawed()}`);
    assertEquals(tracerPid(v.pid), 0);
    const imgs = tmpDir();
    const run = await criu([
      "dump",
      "-t",
      `${v.pid}`,
      "-D",
      imgs,
      "--freeze-cgroup",
      dir,
      "-o",
      "dump.log",
      "-v4",
    ]);
    assertEquals(run.code, 0, run.stderr);
    assertMatch(Deno.readTextFileSync(`${imgs}/dump.log`), /frozen in [\d.]+ ms: \d+ tasks seized/);
    assert(["THAWED", "0"].includes(thawed()), `the cgroup is thawed after: ${thawed()}`);
    await v.child.status;
    for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after dump`);
    const rest = await criu(["restore", "-D", imgs, "-d"]);
    assertEquals(rest.code, 0, rest.stderr);
    const procs = Deno.readTextFileSync(`${dir}/cgroup.procs`).split("\n").filter(Boolean);
    assert(procs.includes(`${v.pid}`), "back in its cgroup");
    assertMatch(await verdict(v), /PASS tree/);

    const refused = await criu([
      "dump",
      "-t",
      `${outside.pid}`,
      "-D",
      tmpDir(),
      "--freeze-cgroup",
      dir,
    ]);
    assertEquals(refused.code, 1);
    assertMatch(refused.stderr, new RegExp(`task ${outside.pid}: it is not in cgroup`));
    assertEquals(tracerPid(outside.pid), 0);
    assertMatch(procState(outside.pid) ?? "gone", /^[SR]$/);
  } finally {
    await stopVictim(v);
    killAll(...pids, outside.pid);
    await stopVictim(outside);
    for (let i = 0; i < 50; i++) {
      try {
        Deno.removeSync(dir);
        break;
      } catch {
        await sleep(100);
      }
    }
  }
});

Deno.test("sessions and groups whose leaders are gone (a daemon's double fork under a subreaper), and a child left in the session its parent then left, come back as they were", async () => {
  const bin = await buildVictim("sessions");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pids: number[] = [];
  try {
    await waitReport(v);
    pids = treePids(v.pid);
    const before = shapeOf(v.pid);
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after dump`);
    const rest = await criu(["restore", "-D", imgs, "-d"]);
    assertEquals(rest.code, 0, rest.stderr);
    // No helper is left behind: the same tasks, each with its parent, group and session.
    assertEquals(shapeOf(v.pid), before);
    assertMatch(await verdict(v), /PASS sessions/);
  } finally {
    killAll(...pids);
    await stopVictim(v);
  }
});
