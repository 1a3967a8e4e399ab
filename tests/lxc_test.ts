/**
 * Containers as LXC checkpoints them: a Debian 12 container (systemd, apache2, mariadb) made by
 * lxc-create, taken down and back by `lxc-checkpoint -s` and `-r` with this repository's criu
 * first on PATH. LXC passes its own options (--ext-mount-map auto, --cgroup-root, --enable-fs,
 * --restore-sibling, --inherit-fd for its console, ...). Checked from inside after: apache
 * serves the page written before, the table keeps its rows, a mariadb client session over TCP
 * keeps its session variable and its connection. Then the same container is dumped and
 * restored by our criu alone, from the command line (`criu dump -t INIT`, `criu restore --root`).
 * An unprivileged container too (a user namespace of its own, its ids 100000 up, delegated to
 * root in /etc/subuid and /etc/subgid for the time of the test), twice round. Skipped where LXC
 * is not installed.
 *
 * What the container is given so that it can be carried at all (each refused by name
 * otherwise): no network device (`lxc.net.0.type = empty`), no BPF programs for journald
 * (`IPAddressDeny=`), its console from the host's devpts and no getty ttys (`lxc.pty.max = 1`,
 * `lxc.tty.max = 0`). mariadb keeps its io_uring (innodb_use_native_aio's default).
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { criuOnPath, has, runTool, sleep, tmpDir } from "./helpers.ts";

function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 600_000,
): Promise<{ code: number; out: string }> {
  return runTool(cmd, args, { env, timeoutMs });
}

/** Runs `script` with bash inside container `name`. */
function inside(name: string, script: string) {
  return run("lxc-attach", ["-n", name, "--", "bash", "-c", script], {}, 60_000);
}

function safe(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

async function state(name: string): Promise<string> {
  return /State:\s+(\S+)/.exec((await run("lxc-info", ["-n", name])).out)?.[1] ?? "";
}

async function until(what: string, fn: () => Promise<boolean>, timeoutMs: number) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return;
    await sleep(500);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Whether systemd has finished starting and mariadb answers, asked through `ask`. */
async function servicesUp(ask: (script: string) => Promise<{ out: string }>) {
  const r = await ask("systemctl is-system-running; mysql -N -e 'select 1'");
  return /^(running|degraded)\n1$/m.test(r.out.trim());
}

/** Starts container `name` and waits for its services. */
async function startContainer(name: string) {
  const started = await run("lxc-start", ["-n", name]);
  assertEquals(started.code, 0, started.out);
  await until("the container's services", () => servicesUp((sh) => inside(name, sh)), 180_000);
}

/** Runs `script` with bash in every namespace of task `pid` (nsenter -a). */
function insideTask(pid: number, script: string) {
  return run("nsenter", ["-t", `${pid}`, "-a", "bash", "-c", script], {}, 60_000);
}

/** Removes the container's cgroups in every hierarchy (a restore by criu alone made them). */
function removeCgroups(name: string): void {
  const rm = (dir: string) => {
    for (const e of Deno.readDirSync(dir)) if (e.isDirectory) rm(`${dir}/${e.name}`);
    Deno.removeSync(dir);
  };
  for (const h of Deno.readDirSync("/sys/fs/cgroup")) {
    for (const dir of [`/sys/fs/cgroup/${h.name}`, "/sys/fs/cgroup"]) {
      try {
        for (const c of Deno.readDirSync(dir)) {
          if (c.isDirectory && c.name.startsWith(`lxc.payload.${name}`)) rm(`${dir}/${c.name}`);
        }
      } catch {
        // not a hierarchy, or busy
      }
    }
  }
}

/**
 * The same container, dumped and restored by our criu alone, as a user would from the command
 * line: LXC starts it (without a console: there is no monitor to hand one on) and notices it
 * stop; `criu dump -t INIT` with the options LXC would pass, and `criu restore --root` from the
 * container's directory, kept as the root's parent (LXC's init dies with its parent, and a
 * detached criu would leave it at once). Checked from inside through nsenter.
 */
async function plainCycle(name: string, lib: string, env: Record<string, string>) {
  const stopped = await run("lxc-stop", ["-n", name, "-k"], {}, 60_000);
  assertEquals(stopped.code, 0, stopped.out);
  removeCgroups(name);
  Deno.writeTextFileSync(`${lib}/config`, "lxc.console.path = none\n", { append: true });
  await startContainer(name);
  await inside(name, `echo '<h1>plain before</h1>' > /var/www/html/probe.html`);
  const init = Number((await run("lxc-info", ["-n", name, "-p", "-H"])).out.trim());
  const freezer = /^\d+:freezer:(.*)$/m.exec(Deno.readTextFileSync(`/proc/${init}/cgroup`))?.[1];
  const common = [
    "--tcp-established",
    "--file-locks",
    "--link-remap",
    "--manage-cgroups=full",
    "--ext-mount-map",
    "auto",
    "--enable-external-sharing",
    "--enable-external-masters",
    "--enable-fs",
    "hugetlbfs",
    "--enable-fs",
    "tracefs",
  ];
  const imgs = tmpDir("lxc-plain-");
  const t0 = performance.now();
  const dump = await run("criu", [
    "dump",
    "-t",
    `${init}`,
    "-D",
    imgs,
    "-o",
    "dump.log",
    ...common,
    ...(freezer ? ["--freeze-cgroup", `/sys/fs/cgroup/freezer${freezer}`] : []),
  ], env);
  assertEquals(dump.code, 0, `${dump.out}\n${safe(`${imgs}/dump.log`)}`);
  const dumpMs = performance.now() - t0;
  await until("the container to stop", async () => (await state(name)) === "STOPPED", 30_000);
  removeCgroups(name);
  const pidfile = `${imgs}/restored.pid`;
  const restore = new Deno.Command("criu", {
    args: [
      "restore",
      "-D",
      imgs,
      "-o",
      "restore.log",
      ...common,
      "--root",
      `${lib}/rootfs`,
      "--pidfile",
      pidfile,
    ],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let root = 0;
  const t1 = performance.now();
  try {
    await until("the restore", async () => {
      root = Number(safe(pidfile).trim());
      return root > 0 || (await Promise.race([restore.status, sleep(0).then(() => null)])) !== null;
    }, 120_000);
    assert(root > 0, `the restore failed: ${safe(`${imgs}/restore.log`).slice(-3000)}`);
    const size = [...Deno.readDirSync(imgs)].reduce(
      (n, e) => n + Deno.statSync(`${imgs}/${e.name}`).size,
      0,
    );
    console.log(
      `plain CLI: dump ${Math.round(dumpMs)} ms, restore ${Math.round(performance.now() - t1)} ` +
        `ms (to the pidfile), images ${(size / 2 ** 20).toFixed(1)} MiB, root ${root}`,
    );
    await until("the restored services", () => servicesUp((sh) => insideTask(root, sh)), 60_000);
    const after = await insideTask(
      root,
      [
        `mysql -N -e 'select count(*) from t.r'`,
        `exec 3<>/dev/tcp/127.0.0.1/80; printf 'GET /probe.html HTTP/1.0\\r\\n\\r\\n' >&3; ` +
        `timeout 5 cat <&3 | tail -1`,
      ].join("; "),
    );
    assertMatch(after.out, /^3$/m, "the rows");
    assertMatch(after.out, /^<h1>plain before<\/h1>$/m, "the page");
  } finally {
    if (root > 0) Deno.kill(root, "SIGKILL");
    await restore.status;
  }
}

/**
 * What container `name` (its directory `lib`) is given to be carried (see the top), with
 * `extra` configuration lines.
 */
function prepareContainer(lib: string, extra = ""): void {
  const config = Deno.readTextFileSync(`${lib}/config`).split("\n")
    .filter((l) => !/^lxc\.net\.0\./.test(l)).join("\n");
  Deno.writeTextFileSync(
    `${lib}/config`,
    `${config}\nlxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\n` +
      `lxc.pty.max = 1\nlxc.tty.max = 0\n${extra}`,
  );
  const dropIn = `${lib}/rootfs/etc/systemd/system/systemd-journald.service.d`;
  Deno.mkdirSync(dropIn, { recursive: true });
  Deno.writeTextFileSync(`${dropIn}/nobpf.conf`, "[Service]\nIPAddressDeny=\n");
}

/**
 * `lxc-checkpoint -r` of container `name` from `imgs` (its monitor keeps whatever the command
 * had open: no pipes); fails with LXC's and criu's logs.
 */
async function lxcRestore(name: string, imgs: string, env: Record<string, string>, what = "") {
  const log = `${imgs}/lxc-restore.log`;
  const rst = await new Deno.Command("lxc-checkpoint", {
    args: ["-n", name, "-D", imgs, "-r", "-o", log, "-l", "INFO"],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    signal: AbortSignal.timeout(300_000),
  }).output();
  assertEquals(rst.code, 0, `${what}${safe(log)}\n${safe(`${imgs}/restore.log`)}`);
  assertEquals(await state(name), "RUNNING");
}

/**
 * What the PrivateNetwork service shows from inside the container: its PID, whether its
 * network namespace is not PID 1's, its line (through nsenter into its namespace), and that
 * its port is not open in the container's own namespace.
 */
const PRIVNET = [
  `p=$(systemctl show -p MainPID --value privnet); echo "privnet-pid $p"`,
  `[ "$(readlink /proc/$p/ns/net)" != "$(readlink /proc/1/ns/net)" ] && echo privnet-apart`,
  `nsenter -t $p -n bash -c 'exec 3<>/dev/tcp/127.0.0.1/7777; cat <&3'`,
  `(exec 3<>/dev/tcp/127.0.0.1/7777) 2>/dev/null || echo privnet-hidden`,
].join("; ");

/** How many io_uring instances mariadb holds (its InnoDB I/O goes through one by default). */
const URING = `echo "uring $(ls -l /proc/$(pidof mariadbd)/fd | grep -c io_uring)"`;

Deno.test({
  name:
    "LXC: lxc-checkpoint -s and -r through our criu take a Debian 12 container (systemd, apache2, mariadb with its io_uring) down and back: its page, its rows, a mariadb client session over TCP, a service with a network namespace and /tmp of its own (PrivateNetwork, PrivateTmp) still serving in its namespace; then our criu alone does, from the command line",
  ignore: !has("lxc-create") || !has("debootstrap"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const name = `dcriu-${Date.now().toString(36)}`;
    const env = criuOnPath().env;
    const made = await run("lxc-create", [
      "-n",
      name,
      "-t",
      "debian",
      "--",
      "-r",
      "bookworm",
      "--packages=apache2,mariadb-server",
    ]);
    assertEquals(made.code, 0, made.out);
    try {
      const lib = `/var/lib/lxc/${name}`;
      prepareContainer(lib);
      const rootfs = `${lib}/rootfs`;
      // (A file: systemd would expand the script's $ in a command line.)
      Deno.writeTextFileSync(
        `${rootfs}/usr/local/bin/privnet.pl`,
        `use IO::Socket::INET;\n` +
          `my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:7777", Listen => 5, ` +
          `ReuseAddr => 1) or die "listen: $!";\n` +
          `while (my $c = $s->accept) { print $c "privnet\\n"; close $c }\n`,
      );
      await startContainer(name);
      const prep = await inside(
        name,
        [
          `echo '<h1>page before</h1>' > /var/www/html/probe.html`,
          `mysql -e "create database t; create table t.r (x int); insert into t.r values (1),(2),(3);` +
          ` create user u@'127.0.0.1' identified by 'p'; grant all on t.* to u@'127.0.0.1';"`,
          // A client session over TCP, fed through a FIFO a service of the container holds.
          `systemd-run --unit=sess bash -c "mkfifo /run/sess.fifo; ` +
          `mysql -h 127.0.0.1 -uu -pp -N -n < /run/sess.fifo > /run/sess.out 2>&1 & ` +
          `exec 3>/run/sess.fifo; echo 'set @v=42; select concat(\\"conn \\", connection_id());' >&3; ` +
          `sleep infinity"`,
          // A service with a network namespace of its own (nested in the container's, its
          // descriptor kept in flight by systemd) and a /tmp of its own, serving a line.
          `systemd-run --unit=privnet -p PrivateNetwork=yes -p PrivateTmp=yes ` +
          `perl /usr/local/bin/privnet.pl`,
          `sleep 2; cat /run/sess.out`,
          PRIVNET,
          URING,
        ].join("; "),
      );
      const rings = /^uring (\d+)$/m.exec(prep.out)?.[1];
      assert(Number(rings) > 0, `mariadb's io_uring: ${prep.out}`);
      const conn = /conn (\d+)/.exec(prep.out)?.[1];
      assert(conn, `the session: ${prep.out}`);
      const privnet = /^privnet-pid (\d+)$/m.exec(prep.out)?.[1];
      assert(privnet && /^privnet$/m.test(prep.out), `the PrivateNetwork service: ${prep.out}`);
      const imgs = tmpDir("lxc-imgs-");
      const ck = await run("lxc-checkpoint", ["-n", name, "-D", imgs, "-s"], env);
      assertEquals(ck.code, 0, ck.out);
      await until("the container to stop", async () => (await state(name)) === "STOPPED", 30_000);
      await lxcRestore(name, imgs, env);
      const after = await inside(
        name,
        [
          `echo 'select concat("after ", @v, " conn ", connection_id());' > /run/sess.fifo`,
          `sleep 1; tail -1 /run/sess.out`,
          `mysql -N -e 'select count(*) from t.r'`,
          `exec 3<>/dev/tcp/127.0.0.1/80; printf 'GET /probe.html HTTP/1.0\\r\\n\\r\\n' >&3; ` +
          `timeout 5 cat <&3 | tail -1`,
          `systemctl is-system-running`,
          PRIVNET,
          URING,
          // Written and read back through the restored server.
          `mysql -N -e 'create table t.s (x int); insert into t.s values (7),(8); ` +
          `select concat("sum ", sum(x)) from t.s; drop table t.s'`,
        ].join("; "),
      );
      assertMatch(after.out, new RegExp(`^uring ${rings}$`, "m"), "mariadb's io_uring");
      assertMatch(after.out, /^sum 15$/m, "a table written after");
      assertMatch(after.out, new RegExp(`^after 42 conn ${conn}$`, "m"), "the session");
      assertMatch(after.out, new RegExp(`^privnet-pid ${privnet}$`, "m"), "the service's PID");
      assertMatch(after.out, /^privnet-apart$/m, "the service's network namespace");
      assertMatch(after.out, /^privnet$/m, "the service's listener in its namespace");
      assertMatch(after.out, /^privnet-hidden$/m, "its listener is not in the container's");
      assertMatch(after.out, /^3$/m, "the rows");
      assertMatch(after.out, /^<h1>page before<\/h1>$/m, "the page");
      assertMatch(after.out, /^(running|degraded)$/m, "systemd");
      await plainCycle(name, lib, env);
    } finally {
      await run("lxc-stop", ["-n", name, "-k"], {}, 60_000).catch(() => {});
      removeCgroups(name);
      await run("lxc-destroy", ["-n", name, "-f"], {}, 120_000).catch(() => {});
    }
  },
});

/** Gives every file below `dir` the owner and group `shift` higher (not following links). */
function shiftOwners(dir: string, shift: number): void {
  const py = [
    "import os, stat, sys",
    "top, n = sys.argv[1], int(sys.argv[2])",
    "def fix(p):",
    "    st = os.lstat(p)",
    "    os.lchown(p, st.st_uid + n, st.st_gid + n)",
    "    if not stat.S_ISLNK(st.st_mode): os.chmod(p, stat.S_IMODE(st.st_mode))",
    "fix(top)",
    "for root, dirs, files in os.walk(top):",
    "    for x in dirs + files: fix(os.path.join(root, x))",
  ].join("\n");
  const o = new Deno.Command("python3", { args: ["-c", py, dir, `${shift}`] }).outputSync();
  assert(o.success, new TextDecoder().decode(o.stderr));
}

Deno.test({
  name:
    "LXC, unprivileged: lxc-checkpoint -s and -r through our criu take a container in a user namespace of its own (ids shifted by 100000) down and back twice; after each restore lxc-attach enters it, systemd runs, and starts a unit in a cgroup of its own",
  ignore: !has("lxc-create") || !has("debootstrap"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const name = `dcriu-u-${Date.now().toString(36)}`;
    const env = criuOnPath().env;
    // LXC maps the ids through newuidmap, which wants them delegated to root.
    const delegated = ["/etc/subuid", "/etc/subgid"].map((f) => [f, safe(f)] as const);
    for (const [f, was] of delegated) {
      if (!/^root:100000:65536$/m.test(was)) {
        Deno.writeTextFileSync(
          f,
          `${was}${was && !was.endsWith("\n") ? "\n" : ""}root:100000:65536\n`,
        );
      }
    }
    const made = await run("lxc-create", ["-n", name, "-t", "debian", "--", "-r", "bookworm"]);
    assertEquals(made.code, 0, made.out);
    try {
      const lib = `/var/lib/lxc/${name}`;
      prepareContainer(lib, "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n");
      shiftOwners(`${lib}/rootfs`, 100000);
      Deno.chmodSync(lib, 0o755);
      const started = await run("lxc-start", ["-n", name]);
      assertEquals(started.code, 0, started.out);
      const systemdUp = async () =>
        /^(running|degraded)$/m.test((await inside(name, "systemctl is-system-running")).out);
      await until("systemd in the container", systemdUp, 120_000);
      for (const round of [1, 2]) {
        const imgs = tmpDir(`lxc-u${round}-`);
        const ck = await run("lxc-checkpoint", ["-n", name, "-D", imgs, "-s"], env);
        assertEquals(ck.code, 0, `round ${round}: ${ck.out}\n${safe(`${imgs}/dump.log`)}`);
        await until("the container to stop", async () => (await state(name)) === "STOPPED", 30_000);
        await lxcRestore(name, imgs, env, `round ${round}: `);
        // lxc-attach joins its user namespace first, then the others, its time namespace too.
        await until("systemd after the restore", systemdUp, 60_000);
        // (It fails with status 219/CGROUP where its cgroup cannot be made: one not given back
        // to the container's root.)
        const unit = await inside(
          name,
          `systemd-run -p RemainAfterExit=yes --unit=after${round} true; sleep 1; ` +
            `systemctl is-active after${round}`,
        );
        assertMatch(
          unit.out,
          /^active$/m,
          `round ${round}: a unit started by systemd: ${unit.out}`,
        );
      }
    } finally {
      await run("lxc-stop", ["-n", name, "-k"], {}, 60_000).catch(() => {});
      removeCgroups(name);
      await run("lxc-destroy", ["-n", name, "-f"], {}, 120_000).catch(() => {});
      for (const [f, was] of delegated) Deno.writeTextFileSync(f, was);
    }
  },
});
