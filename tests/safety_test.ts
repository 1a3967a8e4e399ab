/**
 * A failed or refused dump leaves the task running untouched: tracer detached, no mapping
 * left behind, registers and memory as they were.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { task_kobj_ids_entrySchema } from "../proto/gen/core_pb.ts";
import { ImageWriter, readImage } from "../src/images/image.ts";
import { addressOf, close, inMemoryFs, O, open, rawSyscall } from "../src/syscalls/mod.ts";
import {
  buildVictim,
  criu,
  criuArgv,
  dumpRefused,
  killAll,
  procMaps,
  procState,
  settledState,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  tracerPid,
  treePids,
  verdict,
  waitGone,
  waitLine,
  waitReport,
} from "./helpers.ts";

for (const step of ["parasite", "collect", "mm", "pages", "sync"]) {
  Deno.test(`a dump failing at "${step}" leaves the task running untouched`, async () => {
    const bin = await buildVictim("regs");
    const v = startVictim([bin, "{out}"]);
    try {
      await waitReport(v);
      await sleep(50);
      const maps = procMaps(v.pid);
      const run = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()], {
        DENO_CRIU_FAULT: step,
      });
      assertEquals(run.code, 1);
      assertMatch(run.stderr.trim().split("\n").at(-1)!, new RegExp(`Fault injected at ${step}`));
      assertEquals(procMaps(v.pid), maps, "no mapping added or left behind");
      assertEquals(tracerPid(v.pid), 0, "tracer detached");
      await sleep(200);
      assertEquals(procState(v.pid), "R", "still spinning");
      assert(!Deno.readTextFileSync(v.out).includes("FAIL"), "registers intact");
    } finally {
      await stopVictim(v);
    }
  });
}

Deno.test("a failed dump leaves memory, signals and pipe data intact", async () => {
  const bin = await buildVictim("state");
  const v = startVictim([bin, "{out}", "{dir}"]);
  try {
    await waitReport(v);
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()], {
      DENO_CRIU_FAULT: "pages",
    });
    assertEquals(run.code, 1);
    assertEquals(tracerPid(v.pid), 0);
    assertMatch(await verdict(v), /PASS/);
  } finally {
    await stopVictim(v);
  }
});

Deno.test("a dump into a full file system fails naming the pages file that could not grow (its log, there too, left short), and the task goes on with every page", async () => {
  const bin = await buildVictim("heap");
  const mnt = tmpDir();
  const m = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt],
  })
    .output();
  assert(m.success, new TextDecoder().decode(m.stderr));
  // 32 MiB: its pages go through the copiers, a chunk in three through the file's mapping.
  const v = startVictim(["setsid", bin, "{out}", "32"]);
  try {
    await waitReport(v);
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", mnt, "-o", "dump.log"]);
    assertEquals(run.code, 1, run.stderr);
    assertEquals(run.stderr.trim().split("\n").length, 1, run.stderr);
    assertMatch(run.stderr, /Cannot pwrite .*\/pages-1\.img .*\(ENOSPC\)/);
    assertEquals(tracerPid(v.pid), 0);
    assertMatch(await verdict(v), /^PASS$/m);
  } finally {
    await stopVictim(v);
    await new Deno.Command("umount", { args: [mnt] }).output();
  }
});

Deno.test("an unsupported resource is refused by name and the task keeps running", async () => {
  const bin = await buildVictim("sockets");
  const v = startVictim([bin, "{out}"]);
  try {
    const r = await waitReport(v);
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(run.code, 1);
    const last = run.stderr.trim().split("\n").at(-1)!;
    assertMatch(
      last,
      new RegExp(
        `mapping ${r.ring}-[0-9a-f]+ of task ${v.pid} \\(socket:\\[\\d+\\]\\): its TPACKET_V3 ring`,
      ),
    );
    assertEquals(tracerPid(v.pid), 0);
    assert((await settledState(v.pid, "S")) === "S", "still running (sleeping in pause)");
  } finally {
    await stopVictim(v);
  }
});

Deno.test("inotify: events waiting, or a watched deleted file held outside the tree: refused", async () => {
  const bin = await buildVictim("inotify");
  for (const mode of ["queued", "unheld"]) {
    const v = startVictim(["setsid", bin, "{out}", "{dir}", mode]);
    let outside: Deno.FsFile | undefined;
    try {
      const r = await waitReport(v);
      if (mode === "unheld") {
        outside = Deno.openSync(`/proc/${v.pid}/fd/${r.g}`);
        Deno.kill(v.pid, "SIGUSR1");
        await waitLine(v.out, /^closed/);
      }
      await dumpRefused(
        v.pid,
        mode === "queued"
          ? new RegExp(
            `fd ${r.in} of task ${v.pid} \\(inotify\\): \\d+ bytes of events are waiting`,
          )
          : new RegExp(`fd ${r.in} of task ${v.pid} \\(inotify\\): it watches a deleted file`),
      );
      assertMatch(await verdict(v), /inotify/, "still running, and answers");
    } finally {
      outside?.close();
      await stopVictim(v);
    }
  }
});

Deno.test("bad input: one clear line, exit code 1, no stack trace", async () => {
  const dir = tmpDir();
  const cases: [string[], RegExp][] = [
    [["dump", "-t", "999999", "-D", dir], /No process with PID 999999/],
    [
      ["dump", "-t", `${Deno.pid}`, "-D", `${dir}/missing`],
      /images directory .*missing.*does not exist/,
    ],
    [["dump", "-t", "1", "-D", "/proc/1"], /Cannot write to images directory \/proc\/1/],
    [["dump", "-D", dir], /dump needs a process: -t\/--tree PID/],
    [["dump", "--bogus"], /unrecognized option '--bogus'/],
    [["dump", "--tls", "-t", "1"], /--tls is not supported/],
    [["pre-dump", "--lazy-pages", "-t", "1"], /Lazy pages are not supported with pre-dump/],
    [["dump", "--network-lock", "pf", "-t", "1"], /invalid argument for --network-lock: pf/],
    [["frobnicate"], /unknown command: frobnicate/],
  ];
  for (const [args, re] of cases) {
    const run = await criu(args);
    assertEquals(run.code, 1, args.join(" "));
    assertMatch(run.stderr, re);
    assert(!/\n\s+at /.test(run.stderr), `no stack trace for ${args.join(" ")}`);
  }
});

Deno.test("a dump without CAP_SYS_ADMIN (pagemap hides frame numbers) keeps every page", async () => {
  const bin = await buildVictim("heap");
  const v = startVictim(["setsid", bin, "{out}", "8"]);
  let pid = 0;
  try {
    await waitReport(v);
    const imgs = tmpDir();
    // What a user dumping its own process meets: /proc/PID/pagemap opened without
    // CAP_SYS_ADMIN shows every frame number as 0, so no page can be told to be the zero page.
    const out = await new Deno.Command("setpriv", {
      args: [
        "--bounding-set",
        "-sys_admin",
        ...criuArgv(["dump", "-t", `${v.pid}`, "-D", imgs]),
      ],
      stderr: "piped",
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    await v.child.status;
    assert(Deno.statSync(`${imgs}/pages-1.img`).size >= 8 << 20, "every written page is in");
    const res = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(res.code, 0, res.stderr);
    pid = v.pid;
    assertMatch(await verdict(v), /PASS/);
  } finally {
    killAll(pid);
    await stopVictim(v);
  }
});

Deno.test("a task that cannot stop (in vfork()) fails the dump after --timeout, and goes on", async () => {
  const bin = await buildVictim("vfork");
  const v = startVictim([bin, "{out}"]);
  let pids: number[] = [];
  try {
    const r = await waitReport(v);
    pids = [Number(r.pid), Number(r.child)];
    const t0 = performance.now();
    const run = await criu(["dump", "-t", r.pid, "-D", tmpDir(), "--timeout", "1"]);
    const took = performance.now() - t0;
    assertEquals(run.code, 1);
    assertMatch(
      run.stderr.trim().split("\n").at(-1)!,
      new RegExp(`task ${r.pid}: it did not stop in time \\(state D.*vfork`),
    );
    assert(took > 900 && took < 10_000, `gave up after the timeout (${took} ms)`);
    // Once its child dies the task goes on, untraced: it reaps the child and reports.
    Deno.kill(pids[1], "SIGTERM");
    await waitLine(v.out, /^(PASS|FAIL)/);
    assertMatch(Deno.readTextFileSync(v.out), /PASS vfork/);
  } finally {
    await stopVictim(v);
    killAll(...pids);
  }
});

Deno.test("namespaces of its own: refused at dump by name, and at restore from criu's images", async () => {
  // A task in a user namespace of its own without maps, or in one nested in another, would
  // come back changed; one in a mount namespace of its own holding files of criu's mounts
  // (opened before it unshared) could not have them again there.
  const nested = ["--user", "--map-root-user", "unshare", "--user", "--map-root-user"];
  for (
    const [flags, why] of [
      [["--user"], /its user namespace has no uid map/],
      [nested, /its user namespace is nested in another one than criu's/],
      [["--mount"], /it is on mount \d+, which the tree's mount namespace does not have/],
    ] as const
  ) {
    const v = startVictim(["unshare", ...flags, "sleep", "30"]);
    try {
      await sleep(200);
      const run = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()]);
      assertEquals(run.code, 1);
      assertMatch(run.stderr, why);
      assertEquals(await settledState(v.pid, "S"), "S", "it goes on");
    } finally {
      await stopVictim(v);
    }
  }
  // Images whose task had its own namespace (as criu writes a container's): refused.
  const bin = await buildVictim("counter");
  const c = startVictim(["setsid", bin, "{out}"]);
  try {
    await waitLine(c.out, /^count 1 /);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${c.pid}`, "-D", imgs]);
    assertEquals(d.code, 0, d.stderr);
    await c.child.status;
    await waitGone(c.pid);
    const file = `ids-${c.pid}.img`;
    const [ids] = readImage(`${imgs}/${file}`, "IDS", task_kobj_ids_entrySchema);
    const w = new ImageWriter(imgs, file, "IDS");
    w.entry(task_kobj_ids_entrySchema, { ...ids.message, userNsId: ids.message.userNsId + 100 });
    w.close();
    const r = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /userns-\d+\.img is missing: task \d+ had a user namespace of its own/);
    assert(!procState(c.pid), "nothing made");
  } finally {
    await stopVictim(c);
  }
});

Deno.test("a file, or a unix socket's name, on a mount another mount hides is refused by name (made again by its name it would be on the other), and the task goes on", async () => {
  const run = (args: string[]) => new Deno.Command(args[0], { args: args.slice(1) }).outputSync();
  const cases = [
    {
      // Its file's mount hidden under a bind of itself: the same file, another mount.
      hold: (dir: string) =>
        `f=open(${JSON.stringify(`${dir}/file`)},"w+"); f.write("x"); f.flush()`,
      over: (dir: string) => ["mount", "--bind", dir, dir],
      refusal: /which mount \d+ hides at .*\/file/,
    },
    {
      // A listener's name hidden under a tmpfs mounted over its directory.
      hold: (dir: string) =>
        `import socket; s=socket.socket(socket.AF_UNIX); s.bind(${
          JSON.stringify(`${dir}/s.sock`)
        }); s.listen()`,
      over: (dir: string) => ["mount", "-t", "tmpfs", "over", dir],
      refusal: /unix socket bound at .*\/s\.sock: another mount now hides its name/,
    },
  ];
  for (const c of cases) {
    const dir = tmpDir("overmount-");
    assert(run(["mount", "-t", "tmpfs", "under", dir]).success, "mount tmpfs");
    let mounted = 1;
    const v = startVictim([
      "python3",
      "-c",
      "import os,sys,signal\n" + c.hold(dir) + "\n" +
      "open(sys.argv[1],'a').write(f'ready pid={os.getpid()}\\n')\n" +
      "signal.pause()",
      "{out}",
    ]);
    try {
      await waitReport(v);
      assert(run(c.over(dir)).success, "mount over");
      mounted++;
      const refused = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()]);
      assertEquals(refused.code, 1, refused.stderr);
      assertMatch(refused.stderr, c.refusal);
      assertEquals(tracerPid(v.pid), 0);
      assert((await settledState(v.pid, "S")) === "S", "still running (sleeping in pause)");
    } finally {
      await stopVictim(v);
      for (; mounted > 0; mounted--) run(["umount", dir]);
    }
  }
});

/** A directory for images beside the repository's checkout (on a disk, unlike /dev/shm). */
const ON_DISK = new URL("./.build/", import.meta.url).pathname;
/** Whether ON_DISK is on a file system in memory (the test below would prove nothing there). */
const diskInMemory = (() => {
  Deno.mkdirSync(ON_DISK, { recursive: true });
  const fd = open(ON_DISK, O.RDONLY | O.DIRECTORY | O.CLOEXEC, 0);
  try {
    return inMemoryFs(fd, ON_DISK);
  } finally {
    close(fd);
  }
})();

/** Pages of file `path` in the page cache not yet on the disk: dirty or being written (cachestat). */
function pagesNotOnDisk(path: string): number {
  const NR_CACHESTAT = 451;
  const fd = open(path, O.RDONLY | O.CLOEXEC, 0);
  try {
    const range = new BigUint64Array(2); // the whole file
    // nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted
    const cs = new BigUint64Array(5);
    const r = rawSyscall(NR_CACHESTAT, fd, addressOf(range), addressOf(cs), 0);
    if (r !== 0n) throw new Error(`cachestat ${path}: ${r}`);
    return Number(cs[1] + cs[2]);
  } finally {
    close(fd);
  }
}

Deno.test({
  name:
    "a dump onto a disk: when the tree dies every image is on the disk (synced together at the end, none left dirty or being written), and they restore it",
  ignore: diskInMemory,
  async fn() {
    const bin = await buildVictim("tree");
    // Children of 4 MiB (their pages written by the copiers), a parent of a few pages (by
    // the dumper), 3 threads each, and the images of all: core, mm, pagemap, files ...
    const v = startVictim(["setsid", bin, "{out}", "3", "3", "4"]);
    const imgs = Deno.makeTempDirSync({ dir: ON_DISK, prefix: "durable-" });
    try {
      await waitReport(v, "ready", 60000);
      const pids = treePids(v.pid);
      // criu dies right after the tree (CRIU_TEST_DIE_AT=killed): what is on the disk then
      // is what a crash of the machine would leave.
      const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-o", "dump.log"], {
        CRIU_TEST_DIE_AT: "killed",
      });
      assertEquals(run.code, 137, run.stderr);
      await v.child.status;
      const images = [...Deno.readDirSync(imgs)].map((e) => e.name).filter((n) =>
        n.endsWith(".img")
      );
      assert(images.filter((n) => /^pages-\d+\.img$/.test(n)).length >= 4, `${images}`);
      for (const name of images) {
        assertEquals(pagesNotOnDisk(`${imgs}/${name}`), 0, `${name}: pages not on the disk`);
      }
      for (const pid of pids) assert(await waitGone(pid, 15000), `${pid} is gone`);
      const res = await criu(["restore", "-d", "-D", imgs]);
      assertEquals(res.code, 0, res.stderr);
      Deno.kill(v.pid, "SIGTERM");
      await waitReport(v, "PASS", 30000);
    } finally {
      killAll(v.pid);
      Deno.removeSync(imgs, { recursive: true });
    }
  },
});
