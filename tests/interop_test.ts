/**
 * Images both ways with CRIU 4.2: each victim dumped by us and restored by CRIU, and dumped by
 * CRIU and restored by us, then checks itself. Skipped, with one line, where the oracle
 * (../shared/oracle/criu-4.2/criu) is absent.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  criu,
  freePort,
  killAll,
  mntnsRoot,
  ORACLE,
  oracle,
  safeRead,
  startVictim,
  stopVictim,
  tmpDir,
  treePids,
  usernsRoot,
  verdict,
  type Victim,
  waitGone,
  waitReport,
} from "./helpers.ts";

/** Runs the CRIU 4.2 oracle. */
async function theirs(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(ORACLE, {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/** The error lines of a log, without criu's noise about this machine's limits. */
function errors(log: string): string {
  return log.split("\n").filter((l) => /Error/.test(l) && !/RLIMIT_NOFILE for self/.test(l))
    .join("\n");
}

interface Kind {
  victim: string;
  /** The step's name, when one victim serves two steps. */
  name?: string;
  /** Arguments after the binary ({out}, {dir}, {port} replaced). */
  args: string[];
  /** What the victim prints when it finds itself whole. */
  pass: RegExp;
  signal?: Deno.Signal;
  /** How long its check may take once signalled (5 s unless told). */
  checkMs?: number;
  /** Options both criu need for it. */
  opts?: string[];
  /**
   * The root is the init of a PID namespace of its own, as the report's pid= names it: it
   * comes back under another PID, which --pidfile tells.
   */
  pidNs?: boolean;
  /** What the victim leaves behind when killed before its own check (`root` its pid). */
  leftover?: (root: number) => void;
  /**
   * The victim is a container of its own (tests/victims/mntns.c, built static, in a root of
   * its own; mntnsRoot), whose /ext each criu is told is external.
   */
  container?: boolean;
  /** Its environment's additions (NAME=VALUE). */
  env?: string[];
  /**
   * The victim is tests/victims/userns.c in its "full" mode (built static, in a root of its own;
   * usernsRoot): a container in a user namespace of its own.
   */
  userns?: boolean;
}

/** Removes the System V segment of key `key` from criu's IPC namespace, if any. */
function removeSegment(key: number): void {
  new Deno.Command("ipcrm", { args: ["-M", `${key}`], stderr: "null" }).outputSync();
}

const KINDS: Kind[] = [
  { victim: "state", args: ["{out}", "{dir}"], pass: /\nPASS/ },
  { victim: "taskstate", args: ["{out}"], pass: /\nPASS\n$/ },
  { victim: "filestate", args: ["{out}", "{dir}"], pass: /\nPASS\n$/ },
  { victim: "sockstate", args: ["{out}", "{dir}", "{port}"], pass: /\nPASS\n$/ },
  // CRIU's eventfd image has no semaphore mode (criu/eventfd.c makes every eventfd plain), and
  // CRIU restores a periodic timerfd whose expiry was not read disarmed, now and then.
  { victim: "fdkinds", args: ["{out}", "plain"], pass: /PASS fds/ },
  { victim: "unixsk", args: ["{out}", "{dir}"], pass: /PASS unix/ },
  { victim: "ptimer", args: ["{out}"], pass: /PASS ptimer/ },
  { victim: "ghost", args: ["{out}", "{dir}", "200000"], pass: /PASS ghost/ },
  { victim: "ghostkinds", args: ["{out}", "{dir}"], pass: /PASS ghostkinds/ },
  { victim: "linked", args: ["{out}", "{dir}"], pass: /PASS linked/, opts: ["--link-remap"] },
  { victim: "fifo", args: ["{out}", "{dir}"], pass: /PASS fifo/ },
  { victim: "locks", args: ["{out}", "{dir}"], pass: /PASS locks/, opts: ["--file-locks"] },
  // CRIU 4.2 restores a watch on a deleted file through its ghost's name (events queued, the
  // watch ended when that name dies): the victim leaves that watch out here.
  { victim: "inotify", args: ["{out}", "{dir}", "plain"], pass: /PASS inotify/ },
  { victim: "memfd", args: ["{out}"], pass: /PASS memfd/ },
  { victim: "pidfds", args: ["{out}"], pass: /PASS pidfds/ },
  { victim: "epollkeys", args: ["{out}"], pass: /PASS epollkeys/ },
  { victim: "inflight", args: ["{out}", "{dir}"], pass: /PASS inflight/ },
  { victim: "fdshare", args: ["{out}"], pass: /PASS fdshare/ },
  { victim: "shm", args: ["{out}"], pass: /PASS shm/, signal: "SIGUSR1" },
  {
    victim: "sysv",
    args: ["{out}"],
    pass: /PASS sysv/,
    leftover: (root) => removeSegment(0x5c000000 | root),
  },
  { victim: "clonefiles", args: ["{out}", "{dir}"], pass: /PASS clonefiles/ },
  { victim: "cow", args: ["{out}"], pass: /PASS cow/ },
  { victim: "tree", args: ["{out}", "3", "2"], pass: /PASS tree/ },
  // CRIU writes unread terminal input back with echo on, wants /dev/tty in the task of the
  // terminal's first descriptor, and gives the controlling terminal after the children.
  { victim: "ptys", args: ["{out}", "interop"], pass: /PASS ptys/ },
  { victim: "nsfds", args: ["{out}"], pass: /PASS nsfds/ },
  { victim: "packetsk", args: ["{out}", "interop"], pass: /PASS packetsk/ },
  { victim: "packetring", args: ["{out}"], pass: /PASS packetring/ },
  { victim: "seccomp", args: ["{out}"], pass: /PASS seccomp/ },
  { victim: "utsns", args: ["{out}"], pass: /PASS utsns/ },
  { victim: "timens", args: ["{out}"], pass: /PASS timens/ },
  { victim: "pidns", args: ["{out}", "plain"], pass: /PASS pidns/, pidNs: true },
  { victim: "mntns", args: [], pass: /PASS mntns/, pidNs: true, container: true },
  // Pivoted nested namespaces, deleted files through a bind of a gone tmpfs, an overmounted
  // tmpfs, a console bound from the container's pty.
  {
    victim: "mntns",
    name: "mntns more",
    args: [],
    pass: /PASS mntns/,
    pidNs: true,
    container: true,
    env: ["MNTNS_MORE=1"],
    opts: ["--link-remap"],
  },
  { victim: "ipcns", args: ["{out}", "plain"], pass: /PASS ipcns/ },
  {
    victim: "userns",
    args: ["interop"],
    pass: /PASS userns/,
    pidNs: true,
    userns: true,
    opts: ["--file-locks"],
  },
  { victim: "netns", args: ["{out}"], pass: /PASS netns/ },
  {
    victim: "netns",
    name: "netns sockets",
    args: ["{out}", "sockets"],
    pass: /PASS netns/,
    opts: ["--tcp-established"],
  },
  // Its check first waits up to 5 s for the bridge's carrier and addresses' DAD to settle.
  {
    victim: "netns",
    name: "netns devices",
    args: ["{out}", "devices"],
    pass: /PASS netns/,
    checkMs: 15000,
  },
  { victim: "netsub", name: "nested netns", args: ["{out}", "own"], pass: /PASS netsub root/ },
  {
    victim: "netsub",
    name: "nested netns tcp",
    args: ["{out}", "own,conn"],
    pass: /PASS netsub root/,
    opts: ["--tcp-established"],
  },
  {
    victim: "netsub",
    name: "nested netns veth",
    args: ["{out}", "veth"],
    pass: /PASS netsub root/,
  },
  // CRIU 4.2 brings a tun up before its file attaches, and writes its random address mode
  // back as stable privacy.
  { victim: "tun", args: ["{out}", "interop"], pass: /PASS tun/ },
  { victim: "guards", args: ["{out}", "{dir}"], pass: /PASS guards/ },
  // CRIU 4.2 restores raw sockets neither bound nor connected.
  { victim: "rawsk", args: ["{out}", "plain"], pass: /PASS rawsk/ },
  // CRIU 4.2 cannot restore an epoll target added under a number closed since.
  { victim: "epollflight", args: ["{out}", "plain"], pass: /PASS epollflight/ },
  { victim: "unixgone", args: ["{out}", "{dir}"], pass: /PASS unixgone/ },
  { victim: "chrooted", args: ["{out}", "{dir}"], pass: /PASS chrooted/ },
  { victim: "fanotify", args: ["{out}", "{dir}"], pass: /PASS fanotify/ },
  { victim: "tmpfile", args: ["{out}", "{dir}", "interop"], pass: /PASS tmpfile/ },
  { victim: "shmparts", args: ["{out}"], pass: /PASS shmparts/ },
  { victim: "deadcwd", args: ["{out}"], pass: /PASS deadcwd/ },
  { victim: "leases", args: ["{out}", "{dir}"], pass: /PASS leases/, opts: ["--file-locks"] },
  // CRIU 4.2 makes AIO contexts again in the order of their mappings, not their slots: one.
  { victim: "aio", args: ["{out}", "one"], pass: /PASS aio one/ },
];

/** A victim started, and the options its dump and its restore need beside the kind's. */
interface Started {
  v: Victim;
  dump: string[];
  restore: string[];
}

/**
 * A directory for the images of kind `k`: open to a user namespace's root for a tree in one
 * (CRIU 4.2 reads some images from inside it, as zdtm's userns runs allow).
 */
function imagesDir(k: Kind, prefix: string): string {
  const dir = tmpDir(prefix);
  if (k.userns) Deno.chmodSync(dir, 0o755);
  return dir;
}

/** Starts victim `bin` as kind `k` says (a free port where it wants one). */
function startKind(bin: string, k: Kind): Started {
  if (k.container) {
    const { root, ext, argv } = mntnsRoot(bin);
    return {
      v: startVictim(["env", ...k.env ?? [], ...argv], root),
      dump: ["--external", "mnt[/ext]:EXT"],
      restore: ["--root", root, "--external", `mnt[EXT]:${ext}`],
    };
  }
  if (k.userns) {
    const { root, argv } = usernsRoot(bin, k.args);
    return { v: startVictim(argv, root), dump: [], restore: ["--root", root] };
  }
  const port = `${freePort()}`;
  const v = startVictim(["setsid", bin, ...k.args.map((a) => a.replace("{port}", port))]);
  return { v, dump: [], restore: [] };
}

/** The root of kind `k`'s tree, once victim `v` reported. */
async function rootOf(v: Victim, k: Kind): Promise<number> {
  const r = await waitReport(v);
  return k.pidNs ? Number(r.pid) : v.pid;
}

/** Restore options that tell where the root of kind `k` comes back; then where it did. */
function whereBack(k: Kind, root: number): { args: string[]; pid: () => number } {
  if (!k.pidNs) return { args: [], pid: () => root };
  const file = `${tmpDir("pidfile-")}/pid`;
  return { args: ["--pidfile", file], pid: () => Number(Deno.readTextFileSync(file)) };
}

/**
 * Why CRIU 4.2 cannot take this victim round trip itself here (its dump, its restore, the
 * victim's own check), if it cannot: then CRIU cannot be asked to restore our images of it.
 */
async function criuRoundTrip(bin: string, k: Kind): Promise<string | undefined> {
  const { v, dump, restore } = startKind(bin, k);
  let pids: number[] = [];
  try {
    const root = await rootOf(v, k);
    pids = treePids(root);
    const imgs = imagesDir(k, "interop-probe-");
    const opts = ["-D", imgs, ...(k.opts ?? [])];
    const d = await theirs(["dump", "-t", `${root}`, "-o", "dump.log", ...opts, ...dump]);
    if (d.code !== 0) return `its dump fails: ${errors(safeRead(`${imgs}/dump.log`))}`;
    await v.child.status;
    for (const pid of pids) await waitGone(pid);
    const back = whereBack(k, root);
    const r = await theirs([
      "restore",
      "-d",
      "-o",
      "restore.log",
      ...back.args,
      ...opts,
      ...restore,
    ]);
    if (r.code !== 0) return `its restore fails: ${errors(safeRead(`${imgs}/restore.log`))}`;
    pids.push(back.pid());
    const report = await verdict(v, back.pid(), k.signal ?? "SIGTERM", k.checkMs ?? 5000).catch((
      e,
    ) => `${e}`);
    return k.pass.test(report)
      ? undefined
      : `the victim finds: ${report.trim().split("\n").at(-1)}`;
  } finally {
    killAll(...pids);
    await stopVictim(v);
    for (const pid of pids) await waitGone(pid);
    if (pids.length) k.leftover?.(pids[0]);
  }
}

const directions = [
  { name: "our dump, CRIU 4.2's restore", dumper: "ours", restorer: "theirs" },
  { name: "CRIU 4.2's dump, our restore", dumper: "theirs", restorer: "ours" },
] as const;

for (const dir of directions) {
  Deno.test(`images both ways: ${dir.name}`, async (t) => {
    if (!oracle()) {
      console.log(`skipped: no CRIU 4.2 oracle at ${ORACLE}`);
      return;
    }
    // INTEROP_ONLY=NAME runs one kind alone (when looking into it).
    const only = Deno.env.get("INTEROP_ONLY");
    for (const k of KINDS.filter((k) => !only || (k.name ?? k.victim) === only)) {
      await t.step(k.name ?? k.victim, async () => {
        const bin = await buildVictim(k.victim, k.container || k.userns ? ["-static"] : []);
        // Only what CRIU itself takes round trip here is asked of it (or carried in its images).
        const cannot = await criuRoundTrip(bin, k);
        if (cannot) {
          console.log(`${k.victim}: CRIU 4.2 alone cannot take it round trip here: ${cannot}`);
          return;
        }
        const { v, dump, restore } = startKind(bin, k);
        let pids: number[] = [];
        try {
          const root = await rootOf(v, k);
          pids = treePids(root);
          const imgs = imagesDir(k, "interop-");
          const opts = ["-D", imgs, ...(k.opts ?? [])];
          const dumpArgs = ["dump", "-t", `${root}`, "-o", "dump.log", "-v4", ...opts, ...dump];
          const d = dir.dumper === "ours" ? await criu(dumpArgs) : await theirs(dumpArgs);
          assertEquals(d.code, 0, `dump: ${d.stderr}${errors(safeRead(`${imgs}/dump.log`))}`);
          await v.child.status;
          for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after dump`);
          const back = whereBack(k, root);
          const restArgs = [
            "restore",
            "-d",
            "-o",
            "restore.log",
            "-v4",
            ...back.args,
            ...opts,
            ...restore,
          ];
          const r = dir.restorer === "ours" ? await criu(restArgs) : await theirs(restArgs);
          const log = safeRead(`${imgs}/restore.log`);
          assertEquals(r.code, 0, `restore: ${r.stderr}${errors(log)}`);
          pids.push(back.pid());
          assertMatch(
            await verdict(v, back.pid(), k.signal ?? "SIGTERM", k.checkMs ?? 5000),
            k.pass,
          );
        } finally {
          killAll(...pids);
          await stopVictim(v);
          if (pids.length) k.leftover?.(pids[0]);
        }
      });
    }
  });
}

Deno.test("network locks both ways (iptables): a restore takes away the lock the other's dump left on its connections", async () => {
  if (!oracle()) {
    console.log(`skipped: no CRIU 4.2 oracle at ${ORACLE}`);
    return;
  }
  const bin = await buildVictim("tcp");
  // The lock rules (criu's mark) on the victim's port.
  const rules = (port: string) =>
    new TextDecoder().decode(new Deno.Command("iptables", { args: ["-S"] }).outputSync().stdout)
      .split("\n").filter((l) => /0xc114/.test(l) && new RegExp(`--[sd]port ${port}\\b`).test(l))
      .length;
  for (const [dumper, restorer] of [["theirs", "ours"], ["ours", "theirs"]] as const) {
    const port = `${freePort()}`;
    // A connection restored by CRIU 4.2 sends 524-byte segments for a while: not checked then.
    const env = restorer === "theirs" ? ["env", "TCP_ANY_MSS=1"] : [];
    const v = startVictim([...env, "setsid", bin, "{out}", "pair", port]);
    let pids: number[] = [];
    try {
      const r = await waitReport(v);
      pids = treePids(Number(r.pid));
      const imgs = tmpDir("lockx-");
      const opts = ["-D", imgs, "--tcp-established", "--network-lock", "iptables"];
      const dumpArgs = ["dump", "-t", r.pid, "-o", "dump.log", ...opts];
      const d = dumper === "ours" ? await criu(dumpArgs) : await theirs(dumpArgs);
      assertEquals(d.code, 0, `${dumper} dump: ${d.stderr}${safeRead(`${imgs}/dump.log`)}`);
      assert(rules(port) > 0, `${dumper} dump left its lock`);
      await v.child.status;
      for (const pid of pids) assert(await waitGone(pid), `task ${pid} gone after dump`);
      const restArgs = ["restore", "-d", "-o", "restore.log", ...opts];
      const rs = restorer === "ours" ? await criu(restArgs) : await theirs(restArgs);
      assertEquals(rs.code, 0, `${restorer} restore: ${rs.stderr}`);
      assertEquals(rules(port), 0, `${restorer} restore left ${dumper} dump's lock`);
      assertMatch(await verdict(v, Number(r.pid)), /PASS (server|client)/);
    } finally {
      killAll(...pids);
      await stopVictim(v);
    }
  }
});
