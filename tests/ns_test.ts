/**
 * Namespaces: a tree in namespaces of its own, made again at restore (the containers issue,
 * kind by kind), and nested ones refused by name.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { dirname } from "node:path";
import { relatedNamespace } from "../src/syscalls/mod.ts";
import { exists } from "../src/util/exists.ts";
import { readSysctlsOutside } from "../src/dump/ipc_ns.ts";
import {
  buildVictim,
  checkAcrossRoundTrip,
  critDecodeAll,
  criu,
  criuArgv,
  dumpRefused,
  killAll,
  mntnsRoot,
  oracle,
  oracleRefuses,
  roundTrip,
  runTool,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  tracerPid,
  treePids,
  usernsRoot,
  verdict,
  type Victim,
  waitGone,
  waitLine,
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

/**
 * Dumps task `pid`, waits `pauseMs` with it gone, restores it (through the command `wrap`, when
 * given: criu run under it); its /proc timens_offsets then.
 */
async function pausedRoundTrip(
  pid: number,
  pauseMs: number,
  wrap: string[] = [],
  wrapDump: string[] = [],
): Promise<string> {
  const run = async (args: string[], w: string[]) => {
    if (!w.length) {
      const r = await criu(args);
      assertEquals(r.code, 0, r.stderr);
      return;
    }
    const r = await new Deno.Command(w[0], {
      args: [...w.slice(1), ...criuArgv(args)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
  };
  const imgs = tmpDir();
  await run(["dump", "-t", `${pid}`, "-D", imgs], wrapDump);
  assert(await waitGone(pid), "gone after the dump");
  await sleep(pauseMs);
  await run(["restore", "-d", "-D", imgs], wrap);
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
    // Dumped and restored by criu in a time namespace of its own too (as zdtm runs it): the
    // offsets count from the host's clocks, not from criu's.
    const inTimens = ["unshare", "--time", "--fork", "--monotonic", "7000", "--boottime", "9000"];
    const offsets = await pausedRoundTrip(pid, 1500, inTimens, inTimens);
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

/** Removes cgroup directories a test made (children first), once their tasks are gone. */
async function removeCgroups(...dirs: string[]): Promise<void> {
  await sleep(100);
  for (const dir of dirs) {
    try {
      Deno.removeSync(dir);
    } catch {
      // gone already
    }
  }
}

/** The cgroup of `pid` in hierarchy `name` (as /proc/PID/cgroup names it). */
function cgroupOf(pid: number, name: string): string | undefined {
  const line = Deno.readTextFileSync(`/proc/${pid}/cgroup`).split("\n")
    .find((l) => l.split(":")[1] === name);
  return line?.split(":")[2];
}

/**
 * The pids cgroup v1 hierarchy's directory, to make cgroups under, when criu sits at its top;
 * else undefined, the test skipped saying so.
 */
function pidsTop(): string | undefined {
  const base = "/sys/fs/cgroup/pids";
  if (cgroupOf(Deno.pid, "pids") === "/" && exists(`${base}/cgroup.procs`)) return base;
  console.log("skipped: no pids hierarchy with criu at its top");
  return undefined;
}

Deno.test("a task in a cgroup v1 hierarchy criu's namespace no longer mounts comes back in it: the restore mounts the hierarchy for the time of the restore, and lets it go", async () => {
  const sh = (script: string) => {
    const o = new Deno.Command("sh", { args: ["-ec", script], stderr: "piped" }).outputSync();
    assert(o.success, new TextDecoder().decode(o.stderr));
  };
  const name = `dcriu${Deno.pid % 100000}`;
  const dir = tmpDir("cghier-");
  sh(`mount -t cgroup -o none,name=${name} cgroup ${dir} && mkdir ${dir}/sub`);
  const v = startVictim(["setsid", "sh", "-c", "echo ready > {out}; exec sleep 1000"]);
  let back = 0;
  try {
    await waitReport(v);
    sh(`echo ${v.pid} > ${dir}/sub/cgroup.procs`);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "--manage-cgroups"]);
    assertEquals(d.code, 0, d.stderr);
    await v.child.status;
    assert(await waitGone(v.pid), "gone after the dump");
    // The hierarchy lives on (a cgroup in it), mounted nowhere.
    sh(`umount ${dir}`);
    const r = await criu(["restore", "-d", "-D", imgs, "--manage-cgroups"]);
    assertEquals(r.code, 0, r.stderr);
    back = v.pid;
    assertMatch(
      Deno.readTextFileSync(`/proc/${back}/cgroup`),
      new RegExp(`:name=${name}:/sub$`, "m"),
    );
    assert(!Deno.readTextFileSync("/proc/self/mountinfo").includes(`name=${name}`), "let go");
  } finally {
    killAll(v.pid);
    await stopVictim(v);
    // A zombie still holds its cgroup: the reaper takes it within seconds. Unmounted once
    // childless, the hierarchy goes.
    for (let i = 0; i < 100 && back && exists(`/proc/${back}`); i++) await sleep(100);
    sh(
      `mountpoint -q ${dir} || mount -t cgroup -o none,name=${name} cgroup ${dir}; ` +
        `rmdir ${dir}/sub; sleep 0.5; umount ${dir}`,
    );
  }
});

Deno.test("tasks come back in their cgroups (a child in one of its own, working in its directory and holding it open); one missing here is made again with its properties (soft), refused with none, removed should the restore fail; ignore leaves them in criu's", async () => {
  const hier = "pids", base = pidsTop();
  if (base === undefined) return;
  const name = `/deno-criu-cg-${Deno.pid}`;
  Deno.mkdirSync(`${base}${name}/child`, { recursive: true });
  Deno.writeTextFileSync(`${base}${name}/child/pids.max`, "77");
  const code =
    // The child works in its own cgroup's directory and holds it open (the restore makes it
    // before the child enters it).
    "import os,signal,sys,time\npid=os.fork()\nif pid==0:\n" +
    "  d=os.open(sys.argv[2], os.O_RDONLY); os.chdir(sys.argv[2]); time.sleep(600); os._exit(0)\n" +
    "signal.signal(signal.SIGTERM,lambda *_: (open(sys.argv[1],'a').write('PASS cg\\n')," +
    " os.kill(pid,9), sys.exit(0)))\n" +
    "open(sys.argv[1],'a').write(f'ready child={pid}\\n')\nwhile True: time.sleep(1)";
  const v = startVictim(["setsid", "python3", "-c", code, "{out}", `${base}${name}/child`]);
  let child = 0;
  try {
    const r = await waitReport(v);
    child = Number(r.child);
    Deno.writeTextFileSync(`${base}${name}/cgroup.procs`, `${v.pid}`);
    Deno.writeTextFileSync(`${base}${name}/child/cgroup.procs`, `${child}`);
    const imgs = await roundTrip(v);
    assertEquals([cgroupOf(v.pid, hier), cgroupOf(child, hier)], [name, `${name}/child`]);
    // Again, with the child's cgroup gone meanwhile.
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(d.code, 0, d.stderr);
    assert(await waitGone(v.pid) && await waitGone(child), "gone after the dump");
    Deno.removeSync(`${base}${name}/child`);
    const refused = await criu(["restore", "-d", "-D", imgs, "--manage-cgroups=none"]);
    assertEquals(refused.code, 1);
    assertMatch(
      refused.stderr,
      new RegExp(`pids cgroup ${name}/child of task ${child}: .* does not exist`),
    );
    const failed = await criu(["restore", "-d", "-D", imgs], { DENO_CRIU_FAULT: "state" });
    assertEquals(failed.code, 1);
    assert(!exists(`${base}${name}/child`), "a failed restore removes the cgroup it made");
    const made = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(made.code, 0, made.stderr);
    assertEquals([cgroupOf(v.pid, hier), cgroupOf(child, hier)], [name, `${name}/child`]);
    assertEquals(Deno.readTextFileSync(`${base}${name}/child/pids.max`).trim(), "77");
    // And with ignore: left in criu's cgroups.
    const again = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(again.code, 0, again.stderr);
    assert(await waitGone(v.pid) && await waitGone(child), "gone after the dump");
    const ignored = await criu(["restore", "-d", "-D", imgs, "--manage-cgroups=ignore"]);
    assertEquals(ignored.code, 0, ignored.stderr);
    assertEquals([cgroupOf(v.pid, hier), cgroupOf(child, hier)], ["/", "/"]);
    assertMatch(await verdict(v), /PASS cg/);
  } finally {
    killAll(v.pid, child);
    await stopVictim(v);
    await removeCgroups(`${base}${name}/child`, `${base}${name}`);
  }
});

Deno.test("a restore by a criu in a time namespace of its own sets the tree's clocks from the host's", async () => {
  // zdtm runs criu so: the offsets a new time namespace takes count from the host's clocks.
  const bin = await buildVictim("timens");
  const v = startVictim(["setsid", bin, "{out}", "0"]);
  try {
    await waitReport(v);
    const offsets = await pausedRoundTrip(v.pid, 0, [
      "unshare",
      "--time",
      "--fork",
      "--monotonic",
      "500000",
      "--boottime",
      "500000",
    ]);
    // The clocks went on from the dump's (a little behind the host's), not 500000 s ahead.
    const mono = Number(/monotonic\s+(-?\d+)/.exec(offsets)![1]);
    assert(mono <= 0 && mono > -60, `monotonic offset ${mono}`);
    assertMatch(await verdict(v), /PASS timens/);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

/** NSpid of task `pid`: its id in each PID namespace from criu's down to its own. */
function nsPids(pid: number): number[] {
  const line = /^NSpid:\s*(.*)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1] ?? "";
  return line.trim().split(/\s+/).map(Number);
}

Deno.test("a PID namespace of its own comes back new, with its init as 1 and every id inside kept", async () => {
  const bin = await buildVictim("pidns");
  const v = startVictim(["setsid", bin, "{out}"]);
  const init = Number((await waitReport(v)).pid);
  await v.child.status;
  const pids = treePids(init);
  let back = 0;
  try {
    assertEquals(nsPids(init), [init, 1]);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${init}`, "-D", imgs]);
    assertEquals(d.code, 0, d.stderr);
    for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after the dump`);
    // The images name the tasks as the namespace saw them.
    assert(exists(`${imgs}/core-1.img`) && exists(`${imgs}/core-2.img`), "core-1, core-2");
    const pidfile = `${tmpDir()}/pid`;
    const r = await criu(["restore", "-d", "-D", imgs, "--pidfile", pidfile]);
    assertEquals(r.code, 0, r.stderr);
    back = Number(Deno.readTextFileSync(pidfile));
    const ids = nsPids(back);
    assertEquals(ids.length, 2, `a namespace of its own: NSpid ${ids}`);
    assertEquals(ids[1], 1);
    assertMatch(await verdict(v, back), /PASS pidns/);
  } finally {
    killAll(...pids, ...(back ? [back] : []));
  }
});

Deno.test("a task of a PID namespace other than its init is refused by name, left running", async () => {
  const bin = await buildVictim("pidns");
  const v = startVictim(["setsid", bin, "{out}"]);
  const init = Number((await waitReport(v)).pid);
  await v.child.status;
  const pids = treePids(init);
  try {
    const child = pids.find((p) => p !== init)!;
    await dumpRefused(child, /in a PID namespace of its own \(as task 2\) but is not its init/);
  } finally {
    killAll(...pids);
  }
});

/** NSpid of every thread of the tree at `root`, one line each ("TID: IDS"), sorted. */
function nestedIds(root: number): string {
  return treePids(root).flatMap((pid) =>
    [...Deno.readDirSync(`/proc/${pid}/task`)].map((t) => `${t.name}: ${nsPids(+t.name).join(" ")}`)
  ).sort().join("\n");
}

/** The inode of a task's /proc/PID/ns/NAME. */
function nsIno(pid: number, name: string): number {
  return Number(Deno.statSync(`/proc/${pid}/ns/${name}`).ino);
}

Deno.test("a PID namespace nested in the tree's (unshare -pf) comes back with every id at every level, its parent's children still going there", async () => {
  const bin = await buildVictim("nestedpid");
  const v = startVictim(["setsid", bin, "{out}"]);
  const root = Number((await waitReport(v)).pid);
  const pids = treePids(root);
  try {
    const before = nestedIds(root);
    const init = pids.find((p) => nsPids(p).at(-1) === 1)!;
    assertEquals(nsIno(root, "pid_for_children"), nsIno(init, "pid"));
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${root}`, "-D", imgs]);
    assertEquals(d.code, 0, d.stderr);
    // The namespace's init lingers until its last task is reaped (by PID 1, in a while).
    for (const pid of pids) assert(await waitGone(pid, 15000), `task ${pid} gone after the dump`);
    // CRIU 4.2 refuses such images (a task in another PID namespace than the root's), leaving
    // nothing behind: never a flat tree.
    await oracleRefuses(imgs, /sub-task in NS/, pids);
    const r = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(r.code, 0, r.stderr);
    // From outside: every thread at every level, and where the root's children go.
    assertEquals(nestedIds(root), before);
    assertEquals(nsIno(root, "pid_for_children"), nsIno(init, "pid"));
    assert(nsIno(init, "pid") !== nsIno(root, "pid"));
    assertMatch(await verdict(v), /PASS nestedpid/);
  } finally {
    killAll(...pids);
    await stopVictim(v);
  }
});

for (const userns of [false, true]) {
  Deno.test(
    `a PID namespace nested in one of the tree's own comes back new around its ids${
      userns ? ", all in a user namespace of the tree's own" : ""
    }`,
    async () => {
      const bin = await buildVictim("nestedpid");
      const v = startVictim([
        "setsid",
        ...(userns ? ["unshare", "-U", "-r"] : []),
        bin,
        "{out}",
        "own",
      ]);
      const root = Number((await waitReport(v)).pid);
      await v.child.status;
      const pids = treePids(root);
      let back = 0;
      try {
        // Below criu's level, the ids the tree sees.
        const inside = () =>
          nestedIds(back || root).replace(/^\d+: \d+ /gm, "").split("\n").sort().join("\n");
        const before = inside();
        assertEquals(nsPids(root), [root, 1]);
        const imgs = tmpDir();
        const d = await criu(["dump", "-t", `${root}`, "-D", imgs]);
        assertEquals(d.code, 0, d.stderr);
        for (const pid of pids) {
          assert(await waitGone(pid, 15000), `task ${pid} gone after the dump`);
        }
        const pidfile = `${tmpDir()}/pid`;
        const r = await criu(["restore", "-d", "-D", imgs, "--pidfile", pidfile]);
        assertEquals(r.code, 0, r.stderr);
        back = Number(Deno.readTextFileSync(pidfile));
        assertEquals(inside(), before);
        assertMatch(await verdict(v, back), /PASS nestedpid/);
      } finally {
        killAll(...pids, ...(back ? treePids(back) : []));
        await stopVictim(v);
      }
    },
  );
}

Deno.test("a pidfd of a task its holder's nested PID namespace does not show is refused by name, left running", async () => {
  const bin = await buildVictim("nestedpid");
  const v = startVictim(["setsid", bin, "{out}", "pidfd"]);
  const root = Number((await waitReport(v)).pid);
  const pids = treePids(root);
  try {
    await dumpRefused(root, /a pidfd of task \d+, which the nested PID namespace of its holder/);
    for (const pid of pids) assertEquals(tracerPid(pid), 0);
    assertMatch(await verdict(v), /PASS nestedpid/);
  } finally {
    killAll(...pids);
    await stopVictim(v);
  }
});

Deno.test("a task whose children's PID namespace has no task yet is refused by name, left running", async () => {
  // unshare -p without --fork: sleep's children would go to a namespace nobody is in.
  const v = startVictim(["setsid", "unshare", "-p", "sleep", "1000"]);
  let pid = 0;
  try {
    for (let i = 0; i < 200 && !pid; i++) {
      await sleep(10);
      pid = treePids(v.pid).find((p) => /sleep/.test(procComm(p))) ?? 0;
    }
    assert(pid, "sleep started");
    await dumpRefused(pid, /future children get a PID namespace .* whose init is not a task/);
  } finally {
    killAll(v.pid, pid);
    await stopVictim(v);
  }
});

/** A task's comm, or "" once gone. */
function procComm(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
  } catch {
    return "";
  }
}

/** The System V objects of criu's IPC namespace, and two of its sysctls. */
function hostIpc(): string {
  const read = (p: string) => Deno.readTextFileSync(p);
  return ["shm", "msg", "sem"].map((k) => read(`/proc/sysvipc/${k}`)).join("") +
    read("/proc/sys/kernel/msgmax") + read("/proc/sys/kernel/shm_next_id");
}

Deno.test("an IPC namespace of its own comes back with its sysctls, segments (one of huge pages), queues and semaphores, the host's untouched", async () => {
  const before = hostIpc();
  const bin = await buildVictim("ipcns");
  const v = startVictim(["setsid", bin, "{out}"]);
  // Its segment of huge pages, where the machine has them free.
  const free = Number(
    /^HugePages_Free:\s*(\d+)/m.exec(Deno.readTextFileSync("/proc/meminfo"))?.[1],
  );
  await checkAcrossRoundTrip(v, /PASS ipcns/);
  if (free > 0) assertMatch(Deno.readTextFileSync(v.out), /^huge$/m, "a segment of huge pages");
  assertEquals(hostIpc(), before);
});

/** criu's own network namespace, as the tools print it. */
function hostNet(): string {
  const run = (cmd: string, args: string[]) =>
    new TextDecoder().decode(new Deno.Command(cmd, { args, stdout: "piped" }).outputSync().stdout);
  return run("ip", ["-o", "addr"]) + run("ip", ["route"]) + run("nft", ["list", "tables"]) +
    Deno.readTextFileSync("/proc/sys/net/ipv4/ip_forward");
}

/**
 * Takes victim `name` (`args` after its report file) round trip and checks its verdict, and
 * that criu's own network namespace is as it was.
 */
async function netnsRoundTrip(
  name: string,
  args: string[],
  pass: RegExp,
  opts?: { dump?: string[]; restore?: string[] },
) {
  const before = hostNet();
  const bin = await buildVictim(name);
  // Its check first waits up to 5 s for what settles by itself (DAD, a bridge's carrier).
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}", ...args]), pass, {
    ...opts,
    timeoutMs: 15000,
  });
  assertEquals(hostNet(), before);
}

Deno.test("a network namespace of its own comes back with its loopback, addresses, routes, rules, firewall and sysctls, the host's untouched", async () => {
  await netnsRoundTrip("netns", [], /PASS netns/);
});

Deno.test("devices inside a network namespace of its own: a bridge with one end of a veth pair as its port comes back with its index, settings and port, checked from inside", async () => {
  await netnsRoundTrip("netns", ["devices"], /PASS netns/);
});

Deno.test("tun and tap devices inside a network namespace of its own come back with their files: a tun attached and working, a multi-queue tap with a queue detached and its virtio header, a persistent tun with its owner and buffer that no file holds, a file attached to none", async () => {
  await netnsRoundTrip("tun", [], /PASS tun/);
});

Deno.test("tun and tap devices in a network namespace nested in the tree's (a child's own, below a root in criu's namespace) come back with their files, made in it; criu's namespace untouched", async () => {
  const bin = await buildVictim("tun");
  const before = hostNet();
  // The root: a shell that hands its SIGTERM on to the victim, and waits for it.
  const parent = `trap 'kill -TERM $c; wait $c' TERM; "$@" & c=$!; wait $c`;
  const v = startVictim(["setsid", "sh", "-c", parent, "sh", bin, "{out}"]);
  await checkAcrossRoundTrip(v, /PASS tun/);
  assertEquals(hostNet(), before);
});

Deno.test("a tun file attached to a device of criu's network namespace is refused by name, the task left running", async () => {
  const dev = `dct${Deno.pid % 100000}`;
  const v = startVictim([
    "setsid",
    "python3",
    "-c",
    `
import fcntl, os, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", sys.argv[2].encode(), 0x1001))
open(sys.argv[1], "w").write("ready\\n")
time.sleep(1000)
`,
    "{out}",
    dev,
  ]);
  try {
    await waitReport(v);
    await dumpRefused(
      v.pid,
      new RegExp(`attached to tun device ${dev} of criu's network namespace`),
    );
  } finally {
    await stopVictim(v);
  }
});

Deno.test("sockets inside a network namespace of its own: made in it again, a TCP connection with bytes in flight, UDP, an abstract unix name", async () => {
  const tcp = ["--tcp-established"];
  await netnsRoundTrip("netns", ["sockets"], /PASS netns/, { dump: tcp, restore: tcp });
});

Deno.test("a network namespace nested in the tree's (a service's own) comes back with its address, sysctl, abstract names and sockets, below a root in criu's network namespace or in one of its own: a listener held by a task back in the root's namespace is still of the nested one, a connection across the two namespaces keeps its bytes; criu's namespace untouched", async () => {
  await netnsRoundTrip("netsub", [], /PASS netsub root/);
  await netnsRoundTrip("netsub", ["own"], /PASS netsub root/);
});

Deno.test("TCP connections in a network namespace nested in the tree's come back established, their bytes unread both ways, below a root in criu's namespace or in one of its own: the namespace is locked whole (by nftables or iptables) from the dump to the end of the restore, a dump that leaves the tree running unlocks it; criu's namespace untouched", async () => {
  const tcp = ["--tcp-established"];
  const bin = await buildVictim("netsub");
  const before = hostNet();
  const tablesOf = (pid: number) =>
    new TextDecoder().decode(
      new Deno.Command("nsenter", {
        args: ["-t", `${pid}`, "-n", "nft", "list", "tables"],
        stdout: "piped",
      }).outputSync().stdout,
    );
  // The task in a namespace of its own below the root's (A).
  const nestedTask = (root: number) =>
    treePids(root).find((p) =>
      Deno.statSync(`/proc/${p}/ns/net`).ino !== Deno.statSync(`/proc/${root}/ns/net`).ino
    )!;
  const v = startVictim(["setsid", bin, "{out}", "conn"]);
  let pids: number[] = [];
  try {
    await waitReport(v);
    pids = treePids(v.pid);
    // criu killed with a connection in repair mode: its guard unlocks the namespace.
    const killed = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir(), ...tcp], {
      CRIU_TEST_DIE_AT: "in-repair",
    });
    assertEquals(killed.code, 137, killed.stderr);
    const locked = () => /CRIU-/.test(tablesOf(nestedTask(v.pid)));
    for (let k = 0; k < 50 && locked(); k++) await sleep(100);
    assert(!locked(), "the guard of a killed dump unlocks the namespace");
    const run = await criu([
      "dump",
      "-t",
      `${v.pid}`,
      "-D",
      tmpDir(),
      "--leave-running",
      ...tcp,
    ]);
    assertEquals(run.code, 0, run.stderr);
    assert(!locked(), "a tree left running is unlocked");
    // What the nested namespace holds while the restore ends (post-restore): the lock.
    const seen = `${tmpDir()}/tables`;
    const script = `${tmpDir()}/lock.sh`;
    Deno.writeTextFileSync(
      script,
      `#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] || exit 0\n` +
        `nsenter -t "$(pgrep -P "$CRTOOLS_INIT_PID")" -n nft list tables > ${seen}\n`,
      { mode: 0o755 },
    );
    await roundTrip(v, { dump: tcp, restore: [...tcp, "--action-script", script] });
    assertMatch(Deno.readTextFileSync(seen), new RegExp(`table inet CRIU-${v.pid}\\b`));
    assert(!/CRIU-/.test(tablesOf(nestedTask(v.pid))), "unlocked after the restore");
    assertMatch(await verdict(v, v.pid), /PASS netsub root/);
  } finally {
    killAll(v.pid, ...pids);
    await stopVictim(v);
  }
  assertEquals(hostNet(), before);
  // (Locked by iptables this time, in both namespaces.)
  const ipt = [...tcp, "--network-lock", "iptables"];
  await netnsRoundTrip("netsub", ["own,conn"], /PASS netsub root/, { dump: ipt, restore: tcp });
});

Deno.test("a veth pair between two of the tree's network namespaces (the root's own and a child's) comes back with each end at its index in its namespace, a connection through it accepted at the other end", async () => {
  await netnsRoundTrip("netsub", ["veth"], /PASS netsub root/);
});

Deno.test("a network namespace with what is not carried yet is refused by name: a device of another kind (vxlan), a persistent tun up with no file, a bridge or port setting, forwarding entry or queue length criu's images lack, a queueing discipline, a macvlan on a device inside, a sysctl criu does not carry", async () => {
  const cases: [string, RegExp][] = [
    [
      "ip link add vx0 type vxlan id 5 dstport 4789 && echo ready && exec sleep 60",
      /device vx0 \(vxlan\) is not supported yet/,
    ],
    [
      "ip tuntap add pt0 mode tun && ip link set pt0 up && echo ready && exec sleep 60",
      /tun device pt0: it is up with no file attached/,
    ],
    [
      "ip link add br0 type bridge ageing_time 1000 && echo ready && exec sleep 60",
      /device br0 has bridge setting ageing_time 1000 \(made afresh: 30000\), which is not carried/,
    ],
    [
      "ip link add br0 type bridge && ip link add p0 type veth peer name p1 && " +
      "ip link set p0 master br0 && ip link set p0 type bridge_slave cost 7 && " +
      "echo ready && exec sleep 60",
      /device p0 has bridge port setting cost 7 \(made afresh: 2\), which is not carried/,
    ],
    [
      "ip link add br0 type bridge && ip link add p0 type veth peer name p1 && " +
      "ip link set p0 master br0 && bridge fdb add 02:11:22:33:44:55 dev p0 master static && " +
      "echo ready && exec sleep 60",
      /bridge br0 has a static forwarding entry for 02:11:22:33:44:55 on p0, which is not carried/,
    ],
    [
      "ip link add p0 type veth peer name p1 && ip link set p0 txqueuelen 77 && " +
      "echo ready && exec sleep 60",
      /device p0 has txqlen 77 \(made afresh: 1000\), which is not carried/,
    ],
    [
      "ip link add p0 type veth peer name p1 && tc qdisc add dev p0 root pfifo && " +
      "echo ready && exec sleep 60",
      /device p0 has qdisc "pfifo" \(made afresh: "noop"\), which is not carried/,
    ],
    [
      "ip link add p0 type veth peer name p1 && ip link add mv0 link p0 type macvlan && " +
      "echo ready && exec sleep 60",
      /device mv0 is a macvlan on p0, a device of its own namespace/,
    ],
    [
      "echo 600 > /proc/sys/net/ipv4/tcp_keepalive_time && echo ready && exec sleep 60",
      /sysctl net\.ipv4\.tcp_keepalive_time is "600" .*not carried/,
    ],
  ];
  for (const [script, re] of cases) {
    const v = startVictim(["setsid", "unshare", "-n", "sh", "-c", `exec > {out}; ${script}`]);
    try {
      await waitReport(v);
      await dumpRefused(v.pid, re);
    } finally {
      await stopVictim(v);
    }
  }
});

Deno.test("a cgroup namespace of its own is unshared again at its root: the tree reads the same cgroups, criu sees them where they were", async () => {
  const hier = "pids", base = pidsTop();
  if (base === undefined) return;
  const name = `/deno-criu-cgns-${Deno.pid}`;
  Deno.mkdirSync(`${base}${name}/inner`, { recursive: true });
  const bin = await buildVictim("cgroupns");
  const v = startVictim(["setsid", bin, "{out}", `${base}${name}`]);
  let child = 0;
  try {
    child = Number((await waitReport(v)).child);
    await roundTrip(v);
    assertEquals([cgroupOf(v.pid, hier), cgroupOf(child, hier)], [
      `${name}/inner`,
      `${name}/inner`,
    ]);
    assertMatch(await verdict(v), /PASS cgroupns/);
  } finally {
    killAll(v.pid, child);
    await stopVictim(v);
    await removeCgroups(`${base}${name}/inner`, `${base}${name}`);
  }
});

Deno.test("--join-ns net: a tree in a named network namespace is dumped with the namespace locked whole, restored into it with its connection, and the lock taken away", async () => {
  const ns = `deno-criu-${Deno.pid}`;
  const run = (cmd: string, ...args: string[]) =>
    new TextDecoder().decode(new Deno.Command(cmd, { args, stdout: "piped" }).outputSync().stdout);
  run("ip", "netns", "add", ns);
  run("ip", "-n", ns, "link", "set", "lo", "up");
  const path = `/var/run/netns/${ns}`;
  const bin = await buildVictim("tcp");
  const v = startVictim(["nsenter", `--net=${path}`, "setsid", bin, "{out}", "pair", "4571"]);
  const tables = () => run("nsenter", `--net=${path}`, "nft", "list", "tables");
  let pids: number[] = [];
  try {
    const root = Number((await waitReport(v)).pid);
    pids = treePids(root);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${root}`, "-D", imgs, "--tcp-established"]);
    assertEquals(d.code, 0, d.stderr);
    for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after the dump`);
    assertMatch(tables(), /table inet CRIU-/, "the namespace stays locked for the restore");
    const r = await criu([
      "restore",
      "-d",
      "-D",
      imgs,
      "--tcp-established",
      "--join-ns",
      `net:${path}`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(Deno.statSync(`/proc/${root}/ns/net`).ino, Deno.statSync(path).ino);
    assert(!/CRIU-/.test(tables()), "unlocked after the restore");
    Deno.kill(root, "SIGTERM");
    await waitLine(v.out, /^(PASS|FAIL) server/, 8000);
    await waitLine(v.out, /^(PASS|FAIL) client/, 8000);
    const report = Deno.readTextFileSync(v.out).split("\n").filter((l) => /^(PASS|FAIL)/.test(l));
    assertMatch(report.join("\n"), /^PASS \w+ .*\nPASS \w+ /);
  } finally {
    killAll(...pids);
    await stopVictim(v);
    run("ip", "netns", "delete", ns);
  }
});

/** The output of shell `script` run in the network namespace of task `pid`. */
function inNetnsOf(pid: number, script: string): string {
  const o = new Deno.Command("nsenter", {
    args: ["-t", `${pid}`, "-n", "sh", "-c", script],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  assert(o.success, `${script}: ${new TextDecoder().decode(o.stderr)}`);
  return new TextDecoder().decode(o.stdout);
}

/**
 * Dumps victim `v` (its tree gone after), sees the restore refused without the outside device
 * its namespace's device hangs on (`refused`), then restores it with `--external ${external}`.
 */
async function roundTripWithOutside(v: Victim, refused: RegExp, external: string) {
  const pids = treePids(v.pid);
  const imgs = tmpDir();
  const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
  assertEquals(d.code, 0, d.stderr);
  await v.child.status;
  for (const pid of pids) assert(await waitGone(pid, 15000), `task ${pid} gone after the dump`);
  const without = await criu(["restore", "-d", "-D", imgs]);
  assertEquals(without.code, 1);
  assertMatch(without.stderr, refused);
  const r = await criu(["restore", "-d", "-D", imgs, "--external", external]);
  assertEquals(r.code, 0, r.stderr);
}

Deno.test("a veth device whose peer is outside the namespace comes back with its index, address and routes, its outside end named by --external veth[...]", async () => {
  const run = (cmd: string, ...args: string[]) => {
    const o = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
    assert(o.success, `${cmd} ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
    return new TextDecoder().decode(o.stdout);
  };
  const outside = `dcv${Deno.pid % 100000}`;
  const v = startVictim([
    "setsid",
    "unshare",
    "-n",
    "sh",
    "-c",
    // One process, no children coming and going: all of the tree is the one waited for.
    "echo ready > {out}; exec sleep 1000",
  ]);
  // What the namespace shows of itself (the peer's index, outside, left out).
  const show = (pid: number) =>
    inNetnsOf(
      pid,
      "ip -o link | sed 's/@if[0-9]*//; s/qlen [0-9]*//'; ip -o addr | sed 's/valid_lft.*//'; " +
        "ip route show table all",
    );
  try {
    await waitReport(v);
    // eth0 at index 5, not the next free one: the restore must ask for it.
    run(
      "nsenter",
      "-t",
      `${v.pid}`,
      "-n",
      "ip",
      "link",
      "add",
      "eth0",
      "index",
      "5",
      "type",
      "veth",
      "peer",
      "name",
      outside,
      "netns",
      `${Deno.pid}`,
    );
    run("ip", "link", "set", outside, "up");
    run(
      "nsenter",
      "-t",
      `${v.pid}`,
      "-n",
      "sh",
      "-c",
      "ip link set lo up && ip addr add 10.99.7.2/24 dev eth0 && ip link set eth0 up && " +
        "ip route add default via 10.99.7.1",
    );
    // Settled: the link-local address is no longer tentative.
    for (let i = 0; i < 50 && /tentative/.test(show(v.pid)); i++) await sleep(100);
    const before = show(v.pid);
    await roundTripWithOutside(v, /--external veth\[eth0\]:NAME/, `veth[eth0]:${outside}`);
    for (let i = 0; i < 50 && /tentative/.test(show(v.pid)); i++) await sleep(100);
    assertEquals(show(v.pid), before);
    // The outside end is there, up: a connection from inside reaches this side.
    run("ip", "addr", "add", "10.99.7.1/24", "dev", outside);
    const l = Deno.listen({ hostname: "10.99.7.1", port: 4572 });
    try {
      const c = new Deno.Command("nsenter", {
        args: ["-t", `${v.pid}`, "-n", "bash", "-c", "exec 3<>/dev/tcp/10.99.7.1/4572"],
      }).output();
      const conn = await l.accept();
      conn.close();
      assert((await c).success, "connected from inside");
    } finally {
      l.close();
    }
  } finally {
    killAll(v.pid);
    await stopVictim(v);
    try {
      run("ip", "link", "del", outside);
    } catch {
      // went with its peer
    }
  }
});

Deno.test("a bridge with a veth port and a macvlan on a device outside come back with their indices, addresses, modes, settings and master, the macvlan's lower device named by --external macvlan[...]; the bridge's link-local address still bound", async () => {
  const run = (cmd: string, ...args: string[]) => {
    const o = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
    assert(o.success, `${cmd} ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
    return new TextDecoder().decode(o.stdout);
  };
  // The lower device outside: one end of a veth pair whose other end answers here.
  const [lower, far] = [`dcl${Deno.pid % 100000}`, `dcm${Deno.pid % 100000}`];
  run("ip", "link", "add", lower, "type", "veth", "peer", "name", far);
  run("ip", "link", "set", lower, "up");
  run("ip", "addr", "add", "10.99.8.1/24", "dev", far);
  run("ip", "link", "set", far, "up");
  // A UDP socket bound to the bridge's link-local address, by its index (zdtm's bridge).
  const v = startVictim([
    "setsid",
    "unshare",
    "-n",
    "python3",
    "-c",
    `
import socket, sys, time
out = open(sys.argv[1], "w")
print("ready", file=out, flush=True)
while not open("/proc/net/if_inet6").read().count("fe804567"): time.sleep(0.05)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("fe80:4567::1", 0, 0, socket.if_nametoindex("br0")))
print("bound", s.getsockname()[1], file=out, flush=True)
while True:
    data, peer = s.recvfrom(100)
    s.sendto(b"PASS " + data, peer)
`,
    "{out}",
  ]);
  const show = (pid: number) =>
    inNetnsOf(
      pid,
      // Timers run on; the rest of each device is compared.
      "ip -d -o link | sed -E 's/(_timer|gc_timer) +[0-9.]+//g'; " +
        "ip -o addr | sed 's/valid_lft.*//' | sort; ip route show table all | sort",
    );
  try {
    await waitReport(v);
    run(
      "ip",
      "link",
      "add",
      "link",
      lower,
      "name",
      "mv0",
      "index",
      "9",
      "netns",
      `${v.pid}`,
      "type",
      "macvlan",
      "mode",
      "private",
    );
    run(
      "nsenter",
      "-t",
      `${v.pid}`,
      "-n",
      "sh",
      "-ec",
      "ip link set lo up; ip link add br0 index 4 type bridge; " +
        "ip link add p0 type veth peer name p1; ip link set p0 master br0; " +
        "ip addr add 10.99.9.1/24 dev br0; ip addr add fe80:4567::1/64 nodad dev br0; " +
        "ip link set br0 up; ip link set p0 up; ip link set p1 up; " +
        "ip addr add 10.99.8.2/24 dev mv0; ip link set mv0 up",
    );
    for (let i = 0; i < 100 && !/bound/.test(Deno.readTextFileSync(v.out)); i++) await sleep(50);
    for (let i = 0; i < 50 && /tentative/.test(show(v.pid)); i++) await sleep(100);
    const before = show(v.pid);
    assertMatch(before, /mv0@if\d+: .* macvlan mode private /);
    assertMatch(before, /p0@p1: .* master br0 /);
    await roundTripWithOutside(v, /--external macvlan\[mv0\]:NAME/, `macvlan[mv0]:${lower}`);
    for (let i = 0; i < 50 && /tentative/.test(show(v.pid)); i++) await sleep(100);
    assertEquals(show(v.pid), before);
    // The macvlan reaches the far end of its lower device; the bound socket answers.
    const port = /bound (\d+)/.exec(Deno.readTextFileSync(v.out))![1];
    const l = Deno.listen({ hostname: "10.99.8.1", port: 4573 });
    try {
      const client = `
import socket
socket.create_connection(("10.99.8.1", 4573), timeout=5)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"udp", ("fe80:4567::1", ${port}, 0, socket.if_nametoindex("br0")))
print(u.recv(100).decode())
`;
      const c = new Deno.Command("nsenter", {
        args: ["-t", `${v.pid}`, "-n", "python3", "-c", client],
        stdout: "piped",
      }).output();
      (await l.accept()).close();
      assertEquals(new TextDecoder().decode((await c).stdout).trim(), "PASS udp");
    } finally {
      l.close();
    }
  } finally {
    killAll(v.pid);
    await stopVictim(v);
    for (const dev of [lower, far]) {
      try {
        run("ip", "link", "del", dev);
      } catch {
        // went with its peer
      }
    }
  }
});

Deno.test("--empty-ns net: the namespace is neither dumped nor filled; the setup-namespaces script fills the new one", async () => {
  const v = startVictim([
    "setsid",
    "unshare",
    "-n",
    "sh",
    "-c",
    "ip link set lo up && echo ready > {out} && exec sleep 1000",
  ]);
  const dir = tmpDir();
  const log = `${dir}/actions.log`;
  const script = `${dir}/setup.sh`;
  Deno.writeTextFileSync(
    script,
    `#!/bin/sh\necho "$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID" >> ${log}\n` +
      `[ "$CRTOOLS_SCRIPT_ACTION" = setup-namespaces ] && ` +
      `nsenter -t "$CRTOOLS_INIT_PID" -n ip link set lo up\nexit 0\n`,
  );
  Deno.chmodSync(script, 0o755);
  try {
    await waitReport(v);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "--empty-ns", "net"]);
    assertEquals(d.code, 0, d.stderr);
    await v.child.status;
    assert(await waitGone(v.pid, 15000), "gone after the dump");
    assert(![...Deno.readDirSync(imgs)].some((e) => /^netdev-/.test(e.name)), "no netdev image");
    const refused = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(refused.code, 1);
    assertMatch(refused.stderr, /netdev-\d+\.img is missing/);
    const r = await criu([
      "restore",
      "-d",
      "-D",
      imgs,
      "--empty-ns",
      "net",
      "--action-script",
      script,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertMatch(Deno.readTextFileSync(log), new RegExp(`^setup-namespaces ${v.pid}$`, "m"));
    assert(Deno.statSync(`/proc/${v.pid}/ns/net`).ino !== Deno.statSync("/proc/self/ns/net").ino);
    const lo = new TextDecoder().decode(
      new Deno.Command("nsenter", {
        args: ["-t", `${v.pid}`, "-n", "ip", "-o", "link", "show", "lo"],
        stdout: "piped",
      }).outputSync().stdout,
    );
    assertMatch(lo, /LOOPBACK,UP/, "set up by the script");
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("a mount namespace of its own comes back with its root, proc, sysfs, devpts, mqueue, a tmpfs with its files, a read-only bind, a peer and a slave that propagate as before, an external mount, a unix listener at its name there, and a child in a mount namespace nested in it (as systemd makes for PrivateTmp); the host's mounts untouched", async () => {
  const { root, ext, argv } = mntnsRoot(await buildVictim("mntns", ["-static"]));
  const v = startVictim(argv, root);
  const init = Number((await waitReport(v)).pid);
  await v.child.status;
  let back = 0;
  try {
    // A mount the restore could not make again is refused by name, the tree left running.
    await dumpRefused(init, /Cannot make mount \d+ \(.* at \/ext\) again/);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${init}`, "-D", imgs, "--external", "mnt[/ext]:EXT"]);
    assertEquals(d.code, 0, d.stderr);
    assert(await waitGone(init), "gone after the dump");
    const names = [...Deno.readDirSync(imgs)].map((e) => e.name);
    assert(names.some((n) => /^mountpoints-\d+\.img$/.test(n)), `mountpoints image: ${names}`);
    assert(names.some((n) => /^tmpfs-dev-\d+\.tar\.gz\.img$/.test(n)), `tmpfs tar: ${names}`);
    const hostMounts = Deno.readTextFileSync("/proc/self/mountinfo");
    for (
      const [args, why] of [
        [[], /give the directory its root is made from with --root/],
        [["--root", root], /it was external \(EXT\); give it with --external mnt\[EXT\]:PATH/],
      ] as const
    ) {
      const r = await criu(["restore", "-d", "-D", imgs, ...args]);
      assertEquals(r.code, 1, r.stderr);
      assertMatch(r.stderr, why);
    }
    // Each tmpfs's tar, the root namespace's and the nested one's, missing: refused before
    // any task is made.
    const tars = names.filter((n) => /^tmpfs-dev-\d+\.tar\.gz\.img$/.test(n));
    assert(tars.length >= 2, `a tar for each namespace's tmpfs: ${tars}`);
    for (const tar of tars) {
      Deno.renameSync(`${imgs}/${tar}`, `${imgs}/${tar}.away`);
      try {
        const r = await criu([
          ...["restore", "-d", "-D", imgs, "--root", root, "-v4", "-o", "missing.log"],
          ...["--external", `mnt[EXT]:${ext}`],
        ]);
        assertEquals(r.code, 1, r.stderr);
        assertMatch(r.stderr, new RegExp(`image ${tar.replaceAll(".", "\\.")} is missing`));
        assert(!/Creating task/.test(Deno.readTextFileSync(`${imgs}/missing.log`)), tar);
      } finally {
        Deno.renameSync(`${imgs}/${tar}.away`, `${imgs}/${tar}`);
      }
    }
    const pidfile = `${tmpDir()}/pid`;
    const r = await criu([
      "restore",
      "-d",
      "-D",
      imgs,
      "--root",
      root,
      "--external",
      `mnt[EXT]:${ext}`,
      "--pidfile",
      pidfile,
    ]);
    assertEquals(r.code, 0, r.stderr);
    back = Number(Deno.readTextFileSync(pidfile));
    assert(
      Deno.statSync(`/proc/${back}/ns/mnt`).ino !== Deno.statSync("/proc/self/ns/mnt").ino,
      "a mount namespace of its own",
    );
    assertEquals(Deno.readTextFileSync("/proc/self/mountinfo"), hostMounts, "host mounts");
    assertMatch(await verdict(v, back), /PASS mntns/);
  } finally {
    killAll(init, ...(back ? [back] : []));
  }
});

Deno.test("mount namespaces nested in the root's whose root is not its (pivot_root in them: a tmpfs of their own, a bind of a directory of the container's tmpfs) come back with their mounts and files, their tasks still mapping their executable from the root they left; a nested one holding deleted files (one alive under another name, one not) through a bind of a tmpfs it unmounted since gets them back on their mounts, with their names; a tmpfs hidden by one mounted above it later comes back below it with its files; a console bound from a pty of the container's devpts is that pty again; a child in a PID and a mount namespace of its own (unshare -pfm --mount-proc) gets its namespace's proc back over the container's, mounted by its init, with its options", async () => {
  const auto = ["--ext-mount-map", "auto"];
  assertMatch(
    await mntnsRoundTrip(["MNTNS_MORE=1", "MNTNS_PIDPROC=1"], [...auto, "--link-remap"], auto),
    /PASS mntns/,
  );
});

Deno.test("--ext-mount-map auto: a mount of what criu's namespace has is bound again from there, only when the restore is told so too", async () => {
  const auto = ["--ext-mount-map", "auto"];
  const refused = /at \/ext\): it was found bound from criu's mount namespace/;
  assertMatch(await mntnsRoundTrip([], auto, auto, refused), /PASS mntns/);
});

/**
 * The verdict of the mntns victim (its environment with `env`) taken round trip: dumped with
 * `dump`, restored from its root with `restore` (refused first without, naming `refused`).
 */
async function mntnsRoundTrip(
  env: string[],
  dump: string[],
  restore: string[],
  refused?: RegExp,
): Promise<string> {
  const { root, argv } = mntnsRoot(await buildVictim("mntns", ["-static"]));
  const v = startVictim(["env", ...env, ...argv], root);
  const init = Number((await waitReport(v)).pid);
  await v.child.status;
  let back = 0;
  try {
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${init}`, "-D", imgs, ...dump]);
    assertEquals(d.code, 0, d.stderr);
    assert(await waitGone(init), "gone after the dump");
    if (refused) {
      const r = await criu(["restore", "-d", "-D", imgs, "--root", root]);
      assertEquals(r.code, 1);
      assertMatch(r.stderr, refused);
    }
    const pidfile = `${tmpDir()}/pid`;
    const r = await criu([
      "restore",
      "-d",
      "-D",
      imgs,
      "--root",
      root,
      ...restore,
      "--pidfile",
      pidfile,
    ]);
    assertEquals(r.code, 0, r.stderr);
    back = Number(Deno.readTextFileSync(pidfile));
    return await verdict(v, back);
  } finally {
    killAll(init, ...(back ? [back] : []));
  }
}

/** The mntns victim with `env` set is refused by name (`why`), its tree left running. */
async function mntnsRefused(env: string[], why: RegExp, dump: string[]): Promise<void> {
  const { root, argv } = mntnsRoot(await buildVictim("mntns", ["-static"]));
  const v = startVictim(["env", ...env, ...argv], root);
  const init = Number((await waitReport(v)).pid);
  await v.child.status;
  const tree = treePids(init);
  try {
    await dumpRefused(init, why, dump);
  } finally {
    killAll(...tree);
  }
}

Deno.test("a file open on the proc of a PID namespace nested in the tree's (mounted again late, after the files) is refused by name, the tree left running", async () => {
  await mntnsRefused(
    ["MNTNS_MORE=1", "MNTNS_PIDPROC=hold"],
    /\(\/proc\/1\/status\): it is on the proc of a PID namespace nested in the tree's \(mount \d+\)/,
    ["--ext-mount-map", "auto", "--link-remap"],
  );
});

Deno.test("a tmpfs two nested mount namespaces share (one made from the other) and the root's does not have is refused by name, the tree left running", async () => {
  await mntnsRefused(
    ["MNTNS_SHARED=1"],
    /its tmpfs at \/nt is also task \d+'s, in another nested mount namespace, and not in the root's/,
    ["--ext-mount-map", "auto"],
  );
});

Deno.test("a connection in LAST_ACK whose peer in the tree's own network namespace answers from TIME_WAIT is refused by name (the namespace made again would not have it), the tree left running", async () => {
  // In a network namespace of its own: the client shuts down, the server's acknowledgements
  // are dropped, the server shuts down: it waits in LAST_ACK, the client's end in TIME_WAIT.
  const script = [
    "import os,socket,subprocess,sys,time,signal",
    "subprocess.run(['ip','link','set','lo','up'],check=True)",
    "l=socket.socket(); l.bind(('127.0.0.1',8880)); l.listen()",
    "c=socket.create_connection(('127.0.0.1',8880)); s,_=l.accept(); l.close()",
    "c.shutdown(socket.SHUT_WR); time.sleep(0.05)",
    "subprocess.run(['iptables','-w','-A','INPUT','-p','tcp','--dport','8880','-j','DROP'],check=True)",
    "s.shutdown(socket.SHUT_WR); time.sleep(0.2)",
    "open(sys.argv[1],'a').write(f'ready pid={os.getpid()}\\n')",
    "signal.pause()",
  ].join("\n");
  const v = startVictim(["setsid", "unshare", "-n", "python3", "-c", script, "{out}"]);
  try {
    await waitReport(v);
    await dumpRefused(v.pid, /127\.0\.0\.1:8880 -> .*\(LAST_ACK\): its peer, .* TIME_WAIT/, [
      "--tcp-established",
    ]);
  } finally {
    await stopVictim(v);
  }
});

Deno.test("the sysctls of an IPC namespace of its own are read from outside it for a tree that has no /proc (nsenter into the IPC namespace alone)", async () => {
  const v = startVictim([
    "unshare",
    "-i",
    "sh",
    "-c",
    "echo 12345 > /proc/sys/kernel/msgmax && echo ready > {out} && exec sleep 100",
  ]);
  try {
    await waitReport(v);
    const values = readSysctlsOutside(v.pid);
    assertEquals(values.get("kernel/msgmax"), ["12345"]);
    assertEquals(values.get("kernel/sem")?.length, 4);
    assert(
      Deno.readTextFileSync("/proc/sys/kernel/msgmax").trim() !== "12345",
      "criu's own namespace has another value",
    );
  } finally {
    await stopVictim(v);
  }
});

/** The lines of /proc/PID/status naming its ids, as criu sees them. */
function idLines(pid: number): string {
  return Deno.readTextFileSync(`/proc/${pid}/status`).split("\n")
    .filter((l) => /^(Uid|Gid|Groups):/.test(l)).join("\n");
}

Deno.test("a user namespace of its own, owning the tree's PID, mount, UTS, IPC and network namespaces, comes back with its two-extent id maps, and every id as the tree saw it: its tasks' ids and groups, a tmpfs's mount options and files, a tmpfs hidden by one mounted above it (read through a copy of the namespace made in its user namespace), a deleted file's, a memfd's, a file owner's uids, a lease taken as a file's owner, a segment made by another user, a ping socket for its groups; criu sees the same ids as before, and the images are shared with the namespace's root's group only", async () => {
  const { root, argv } = usernsRoot(await buildVictim("userns", ["-static"]));
  const v = startVictim(argv, root);
  const init = Number((await waitReport(v)).pid);
  await v.child.status;
  const child = treePids(init).find((p) => p !== init)!;
  // Its root under a directory only criu may enter now (as runc's, and zdtm's): criu binds it.
  Deno.chmodSync(dirname(root), 0o700);
  let back = 0;
  try {
    const [maps, ids, childIds] = [
      Deno.readTextFileSync(`/proc/${init}/uid_map`) +
      Deno.readTextFileSync(`/proc/${init}/gid_map`),
      idLines(init),
      idLines(child),
    ];
    assertMatch(childIds, /Uid:\t201000\t201001\t201002\t201001/);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${init}`, "-D", imgs, "--file-locks"]);
    assertEquals(d.code, 0, d.stderr);
    assert(await waitGone(init), "gone after the dump");
    const names = [...Deno.readDirSync(imgs)].map((e) => e.name);
    assert(names.some((n) => /^userns-\d+\.img$/.test(n)), `userns image: ${names}`);
    for (const n of names.filter((n) => n.endsWith(".img"))) {
      const st = Deno.statSync(`${imgs}/${n}`);
      assertEquals([st.mode! & 0o777, st.gid], [0o640, 300000], n);
    }
    const pidfile = `${tmpDir()}/pid`;
    const r = await criu(["restore", "-d", "-D", imgs, "--root", root, "--pidfile", pidfile]);
    assertEquals(r.code, 0, r.stderr);
    back = Number(Deno.readTextFileSync(pidfile));
    const backChild = treePids(back).find((p) => p !== back)!;
    assert(
      Deno.statSync(`/proc/${back}/ns/user`).ino !== Deno.statSync("/proc/self/ns/user").ino,
      "a user namespace of its own",
    );
    for (const kind of ["pid", "mnt", "uts", "ipc", "net"]) {
      assert(
        Deno.statSync(`/proc/${back}/ns/${kind}`).ino !==
          Deno.statSync(`/proc/self/ns/${kind}`).ino,
        `a ${kind} namespace of its own`,
      );
    }
    assertEquals(
      Deno.readTextFileSync(`/proc/${back}/uid_map`) +
        Deno.readTextFileSync(`/proc/${back}/gid_map`),
      maps,
    );
    assertEquals(idLines(back), ids);
    assertEquals(idLines(backChild), childIds);
    assertMatch(await verdict(v, back), /PASS userns/);
  } finally {
    killAll(init, child, ...(back ? treePids(back) : []));
  }
});

Deno.test("a task in a user namespace of its own, chrooted into a directory below one only criu may enter, comes back with that root and its working directory (criu opens both for it)", async () => {
  const bin = await buildVictim("chrootns", ["-static"]);
  const closed = tmpDir(), jail = `${closed}/jail`; // (tmpDir: 0700, criu's)
  Deno.mkdirSync(`${jail}/sub`, { recursive: true });
  Deno.chmodSync(jail, 0o755);
  Deno.chmodSync(`${jail}/sub`, 0o755);
  Deno.copyFileSync(bin, `${jail}/chrootns`);
  Deno.chmodSync(`${jail}/chrootns`, 0o755);
  const marker = `jail-${Deno.pid}`;
  Deno.writeTextFileSync(`${jail}/marker`, marker);
  // Started there: the task chroots into its working directory (it may not walk `closed`).
  const v = startVictim(
    [
      "setsid",
      "sh",
      "-c",
      'cd "$1" && chmod 666 out.log && exec ./chrootns "$2"',
      "sh",
      jail,
      marker,
    ],
    jail,
  );
  let init = 0;
  try {
    init = Number((await waitReport(v)).pid);
    await v.child.status;
    assertEquals(Deno.readLinkSync(`/proc/${init}/root`), jail);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${init}`, "-D", imgs]);
    assertEquals(d.code, 0, d.stderr);
    assert(await waitGone(init), "gone after the dump");
    const r = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(Deno.readLinkSync(`/proc/${init}/root`), jail);
    assertEquals(Deno.readLinkSync(`/proc/${init}/cwd`), `${jail}/sub`);
    assertMatch(await verdict(v, init), /PASS chrootns/);
  } finally {
    if (init) killAll(init);
    await stopVictim(v);
  }
});

Deno.test("a lone task in a user namespace of its own (criu's other namespaces) comes back with its maps, ids and files; a time namespace its user namespace owns comes back owned by it; with a second task and no PID namespace of its own it is refused by name and left running", async () => {
  const bin = await buildVictim("userns", ["-static"]);
  // Its files in a directory of the host, owned by the namespace's root; its working directory
  // below one only criu may enter (criu hands it over).
  const closed = tmpDir(), cwd = `${closed}/cwd`;
  Deno.mkdirSync(cwd, { mode: 0o755 });
  const v = startVictim([
    ...["setsid", "sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd],
    ...[bin, "{out}", "{dir}", "alone"],
  ]);
  const init = Number((await waitReport(v)).pid);
  await v.child.status;
  try {
    const ids = idLines(init);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${init}`, "-D", imgs, "--file-locks"]);
    assertEquals(d.code, 0, d.stderr);
    assert(await waitGone(init), "gone after the dump");
    const r = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(idLines(init), ids);
    assertEquals(Deno.readLinkSync(`/proc/${init}/cwd`), cwd);
    assertMatch(await verdict(v, init), /PASS userns/);
  } finally {
    killAll(init);
  }
  const pair = startVictim(["setsid", bin, "{out}", "{dir}", "pair"]);
  const p = Number((await waitReport(pair)).pid);
  await pair.child.status;
  const tree = treePids(p);
  try {
    await dumpRefused(
      p,
      /a user namespace of its own but not a PID namespace, and more than one task/,
      ["--file-locks"],
    );
    assertMatch(await verdict(pair, p), /PASS userns/);
  } finally {
    killAll(...tree);
  }
  // A time namespace of its own, which its user namespace owns: made there again (by the root).
  const timed = startVictim([
    "unshare",
    "--user",
    "--map-root-user",
    "--time",
    "--fork",
    "setsid",
    "sleep",
    "30",
  ]);
  await sleep(300);
  const inner = treePids(timed.pid).find((q) => q !== timed.pid)!;
  try {
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${inner}`, "-D", imgs]);
    assertEquals(d.code, 0, d.stderr);
    assert(await waitGone(inner), "gone after the dump");
    const r = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(r.code, 0, r.stderr);
    const ino = (kind: string) => Deno.statSync(`/proc/${inner}/ns/${kind}`).ino;
    assert(ino("time") !== Deno.statSync("/proc/self/ns/time").ino, "a time namespace");
    assertEquals(ino("time_for_children"), ino("time"));
    assertEquals(relatedNamespace(`/proc/${inner}/ns/time`, "owner"), ino("user"));
  } finally {
    killAll(inner);
    await stopVictim(timed);
  }
});

Deno.test("a tree in a user namespace of its own restored with --restore-sibling (as LXC restores an unprivileged container): born the caller's child, it gets its maps before it runs, and finds itself whole", async () => {
  const { root, argv } = usernsRoot(await buildVictim("userns", ["-static"]));
  const v = startVictim(argv, root);
  const init = Number((await waitReport(v)).pid);
  await v.child.status;
  const tree = treePids(init);
  let back = 0;
  try {
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${init}`, "-D", imgs, "--file-locks"]);
    assertEquals(d.code, 0, d.stderr);
    assert(await waitGone(init), "gone after the dump");
    // The caller: restores, checks it is the parent, has the tree check itself, and reaps it.
    const caller = [
      "import os, subprocess, sys, time",
      "pidfile = sys.argv[1] + '/sibling.pid'",
      "r = subprocess.run(sys.argv[3:] + ['--pidfile', pidfile], capture_output=True, text=True)",
      "if r.returncode: print('FAIL restore', r.stderr); sys.exit(1)",
      "pid = int(open(pidfile).read())",
      "print('back', pid, flush=True)",
      "ppid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])",
      "os.kill(pid, 15)",
      "for _ in range(100):",
      "    if 'PASS' in open(sys.argv[2]).read() or 'FAIL' in open(sys.argv[2]).read(): break",
      "    time.sleep(0.05)",
      "os.kill(pid, 9)",
      "os.waitpid(pid, 0)",
      "print('PASS sibling' if ppid == os.getpid() else f'FAIL ppid {ppid} (we are {os.getpid()})')",
    ].join("\n");
    const out = await new Deno.Command("python3", {
      args: [
        "-c",
        caller,
        imgs,
        v.out,
        ...criuArgv(["restore", "-d", "-S", "-D", imgs, "--root", root]),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    back = Number(/back (\d+)/.exec(text)?.[1] ?? 0);
    assertMatch(text, /PASS sibling/);
    assertMatch(Deno.readTextFileSync(v.out), /PASS userns/);
  } finally {
    killAll(...tree, ...(back ? [back] : []));
  }
});

Deno.test("a tree in a network namespace that outlives it (--external net[INODE]:KEY) comes back into the one --inherit-fd names: by this criu, by CRIU 4.2 from our images and by us from CRIU 4.2's", async () => {
  const name = `deno-criu-ext-${Deno.pid}`;
  assertEquals((await runTool("ip", ["netns", "add", name])).code, 0);
  const path = `/run/netns/${name}`;
  const ino = Deno.statSync(path).ino!;
  const bin = await buildVictim("heap");
  const ours = criuArgv([]);
  const theirs = oracle() ? [oracle()!] : undefined;
  // Dumper and restorer.
  const pairs = [[ours, ours], ...(theirs ? [[ours, theirs], [theirs, ours]] : [])];
  try {
    for (const [dumper, argv] of pairs) {
      const who = `${dumper === ours ? "ours" : "CRIU 4.2"} to ${
        argv === ours ? "ours" : "CRIU 4.2"
      }`;
      const v = startVictim(["nsenter", `--net=${path}`, "setsid", bin, "{out}", "4"]);
      let pid = 0;
      try {
        await waitReport(v);
        pid = v.pid;
        const imgs = tmpDir();
        const d = await new Deno.Command(dumper[0], {
          args: [
            ...dumper.slice(1),
            "dump",
            "-t",
            `${pid}`,
            "-D",
            imgs,
            "--external",
            `net[${ino}]:extnet`,
          ],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assertEquals(d.code, 0, `${who}: ${new TextDecoder().decode(d.stderr)}`);
        assert(await waitGone(pid), "gone after the dump");
        // The namespace is not in the images: its entry names the key only.
        const img = await critDecodeAll(imgs);
        const nsId = img.get(`ids-${pid}.img`)!.entries[0].net_ns_id;
        const ns = img.get(`netns-${nsId}.img`)?.entries[0];
        assertEquals(ns?.ext_key, "extnet", JSON.stringify(ns));
        const rs = await new Deno.Command("sh", {
          args: [
            "-c",
            `exec "$@" 3<${path}`,
            "sh",
            ...argv,
            "restore",
            "-d",
            "-D",
            imgs,
            "--inherit-fd",
            "fd[3]:extnet",
          ],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assertEquals(rs.code, 0, `${who}: ${new TextDecoder().decode(rs.stderr)}`);
        assertEquals(Deno.statSync(`/proc/${pid}/ns/net`).ino, ino, `${who}: not in the namespace`);
        assertMatch(await verdict(v, pid), /PASS/);
      } finally {
        if (pid) killAll(pid);
        await stopVictim(v);
      }
    }
  } finally {
    await runTool("ip", ["netns", "del", name]);
  }
});
