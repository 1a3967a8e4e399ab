/**
 * Container runtimes that drive criu through its RPC (`criu swrk`), with this repository's
 * criu first on PATH: runc checkpoints and restores an OCI bundle, podman (with the runc
 * runtime) a container in place and through an exported archive. The container runs
 * tests/victims/ticker.c, which counts in memory onto its stdout (a pipe its runtime holds, and
 * hands anew at restore) and checks on SIGTERM that its stdout is still a pipe. From outside:
 * the ticks go on from the number reached, in the new pipe, and the runtime shows it running.
 *
 * Then the apps container: apache2 and mariadb (as their own users, no user namespace) in a
 * Debian 12 rootfs from debootstrap (cached in /var/cache/deno-criu), in a network namespace of
 * the caller's (--network ns:PATH: runc names it external, and it is joined again), with a
 * mariadb client session over TCP to 127.0.0.1 inside it: in place and through an exported
 * archive, apache serves the page written before, the table keeps its rows, and the session
 * keeps its connection and its variable.
 *
 * What this machine needs (as CRIU 4.2 does): runc, not crun; podman's ulimits within what
 * root may set without CAP_SYS_RESOURCE; no network of the host's (none, or a namespace of the
 * caller's). Skipped where runc or podman is not installed.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  criuOnPath,
  has,
  runTool,
  safeRead,
  sleep,
  tmpDir,
  waitLine,
} from "./helpers.ts";
import { join } from "node:path";

/** Runs a command with this criu first on PATH; its code and words. */
function run(cmd: string, args: string[], opts: { cwd?: string } = {}) {
  return runTool(cmd, args, { env: criu.env, cwd: opts.cwd, timeoutMs: 120_000 });
}

/** Runs it and fails the test, with its words, unless it succeeds. */
async function ok(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  assertEquals(r.code, 0, `${cmd} ${args.join(" ")}: ${r.out}`);
  return r.out;
}

const criu = criuOnPath();

/**
 * `podman run -d` (`-dt` with `tty`) on the runc runtime, with what this machine needs: limits
 * root may set without CAP_SYS_RESOURCE, and no network of the host's (none unless given).
 */
async function podmanRun(
  name: string,
  image: string,
  argv: string[],
  opts: { network?: string; volume?: string; tty?: boolean } = {},
): Promise<void> {
  await ok("podman", [
    "run",
    opts.tty ? "-dt" : "-d",
    "--runtime",
    "runc",
    "--network",
    opts.network ?? "none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
    ...(opts.volume ? ["-v", opts.volume] : []),
    "--name",
    name,
    image,
    ...argv,
  ]);
}

/**
 * Checkpoints podman container `name` and restores it, in place or, with `archive`, exported
 * there, removed, and imported (`between` runs in between); its ticks (its `logs`) must go on
 * from the last before.
 */
async function podmanRoundTrip(
  name: string,
  logs: () => Promise<string>,
  what: string,
  opts: { archive?: string; between?: () => Promise<void> } = {},
): Promise<void> {
  const { archive, between } = opts;
  await ok("podman", ["container", "checkpoint", ...(archive ? ["--export", archive] : []), name]);
  await between?.();
  const last = ticks(await logs()).at(-1)!;
  if (archive) await ok("podman", ["rm", "-f", name]);
  await ok("podman", ["container", "restore", ...(archive ? ["--import", archive] : [name])]);
  const now = await ticksAfter(logs, last);
  assert(now.includes(last + 1), `${what}: ${last + 1} after ${last}: ${now.slice(-5)}`);
}

/** The directory `rootfs` as podman image `image`. */
async function podmanImport(rootfs: string, image: string): Promise<void> {
  await ok("sh", ["-c", `tar -C '${rootfs}' -c . | podman import -q - ${image}`]);
}

/**
 * A root file system holding only a static victim, the ticker unless named (and where the
 * runtime mounts).
 */
async function tickerRootfs(victim = "ticker"): Promise<string> {
  const rootfs = join(tmpDir("rootfs-"), "rootfs");
  for (const d of ["proc", "dev", "sys", "tmp", "rep"]) {
    Deno.mkdirSync(join(rootfs, d), { recursive: true });
  }
  Deno.copyFileSync(await buildVictim(victim, ["-static"]), join(rootfs, victim));
  Deno.chmodSync(join(rootfs, victim), 0o755);
  return rootfs;
}

/** The numbers of the "tick N" lines of `text`. */
function ticks(text: string): number[] {
  return [...text.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));
}

/** Waits until `text()` holds a tick above `after`; returns every tick it holds. */
async function ticksAfter(text: () => string | Promise<string>, after: number): Promise<number[]> {
  const end = Date.now() + 10_000;
  for (;;) {
    const t = ticks(await text());
    if (t.some((n) => n > after) || Date.now() > end) return t;
    await sleep(50);
  }
}

/**
 * Starts `runc run|restore ... -d` in the background with its stdio (the container's) a pipe
 * into `log`, as a caller keeps the container's output; waits for runc to finish.
 */
async function runcDetached(bundle: string, args: string[], log: string): Promise<void> {
  const quoted = args.map((a) => `'${a}'`).join(" ");
  await ok("sh", ["-c", `(runc ${quoted} </dev/null 2>&1 | cat >> '${log}') >/dev/null 2>&1 &`], {
    cwd: bundle,
  });
}

Deno.test({
  name:
    "runc checkpoints and restores an OCI bundle through this criu (swrk): twice round, the second time left running first; the ticker counts on into the new stdio pipe and finds its stdout a pipe",
  ignore: !has("runc"),
  fn: async () => {
    const rootfs = await tickerRootfs();
    const bundle = join(rootfs, "..");
    await ok("runc", ["spec"], { cwd: bundle });
    const spec = JSON.parse(Deno.readTextFileSync(join(bundle, "config.json")));
    spec.process.terminal = false;
    spec.process.args = ["/ticker", "/rep/out.log"];
    spec.root = { path: rootfs, readonly: false };
    Deno.writeTextFileSync(join(bundle, "config.json"), JSON.stringify(spec, null, 2));
    const id = `deno-criu-${Deno.pid}`;
    const logs = [1, 2, 3].map((i) => join(bundle, `stdout-${i}`));
    try {
      await runcDetached(bundle, ["run", "-d", id], logs[0]);
      await waitLine(join(rootfs, "rep", "out.log"), /^ready$/, 10_000);
      let last = (await ticksAfter(() => safeRead(logs[0]), 2)).at(-1)!;
      for (const [round, leave] of [[1, true], [2, false]] as const) {
        const imgs = tmpDir();
        if (leave) {
          await ok("runc", ["checkpoint", "--leave-running", "--image-path", imgs, id]);
          const more = await ticksAfter(() => safeRead(logs[round - 1]), last);
          assert(more.at(-1)! > last, "the container ran on after --leave-running");
          await sleep(100);
        }
        await ok("runc", ["checkpoint", "--image-path", imgs, id]);
        // Gone, as runc leaves a container it checkpointed.
        assert(!(await ok("runc", ["list"])).includes(id));
        const before = ticks(safeRead(logs[round - 1]));
        last = before.at(-1)!;
        await runcDetached(bundle, ["restore", "-d", "--image-path", imgs, id], logs[round]);
        const after = await ticksAfter(() => safeRead(logs[round]), last);
        assertEquals(after[0], last + 1, `round ${round}: ${after.slice(0, 3)} after ${last}`);
        assertMatch(await ok("runc", ["list"]), new RegExp(`^${id}\\s+\\d+\\s+running`, "m"));
        assert(Deno.statSync(join(imgs, "restore.log")).isFile);
        last = after.at(-1)!;
      }
      await ok("runc", ["kill", id, "TERM"]);
      await waitLine(join(rootfs, "rep", "out.log"), /^(PASS|FAIL)/, 10_000);
      assertMatch(safeRead(join(rootfs, "rep", "out.log")), /^PASS$/m);
    } finally {
      await run("runc", ["delete", "-f", id]);
    }
  },
});

Deno.test({
  name:
    "podman (runc runtime) checkpoints and restores a container through this criu, in place and through an exported archive imported again; its logs count on from the number reached",
  ignore: !has("podman") || !has("runc"),
  fn: async () => {
    const rootfs = await tickerRootfs();
    const image = `localhost/deno-criu-ticker-${Deno.pid}`;
    const name = `deno-criu-${Deno.pid}`;
    const rep = tmpDir("rep-");
    await podmanImport(rootfs, image);
    const logs = async () => (await run("podman", ["logs", name])).out;
    try {
      await podmanRun(name, image, ["/ticker", "/rep/out.log"], { volume: `${rep}:/rep` });
      await waitLine(join(rep, "out.log"), /^ready$/, 10_000);
      await ticksAfter(logs, 2);
      await podmanRoundTrip(name, logs, "in place", {
        between: async () => {
          assertMatch(await ok("podman", ["ps", "-a", "--filter", `name=${name}`]), /Exited/);
        },
      });
      const archive = join(tmpDir(), "ckpt.tar.gz");
      await podmanRoundTrip(name, logs, "imported", { archive });
      await ok("podman", ["kill", "-s", "TERM", name]);
      await waitLine(join(rep, "out.log"), /^(PASS|FAIL)/, 10_000);
      assertMatch(safeRead(join(rep, "out.log")), /^PASS$/m);
    } finally {
      await run("podman", ["rm", "-f", name]);
      await run("podman", ["rmi", "-f", image]);
    }
  },
});

Deno.test({
  name:
    "podman with the container in a network namespace of the caller's (--network ns:PATH): runc names it external, the dump leaves it be, the restore joins it again from the descriptor runc hands in",
  ignore: !has("podman") || !has("runc") || !has("ip"),
  fn: async () => {
    const rootfs = await tickerRootfs();
    const image = `localhost/deno-criu-ticker-ns-${Deno.pid}`;
    const name = `deno-criu-ns-${Deno.pid}`;
    const netns = `deno-criu-${Deno.pid}`;
    await podmanImport(rootfs, image);
    await ok("ip", ["netns", "add", netns]);
    const inode = Deno.statSync(`/run/netns/${netns}`).ino;
    const logs = async () => (await run("podman", ["logs", name])).out;
    const pid = async () =>
      Number((await ok("podman", ["inspect", "-f", "{{.State.Pid}}", name])).trim());
    try {
      await podmanRun(name, image, ["/ticker", "/tmp/out.log"], {
        network: `ns:/run/netns/${netns}`,
      });
      await ticksAfter(logs, 2);
      assertEquals(Deno.statSync(`/proc/${await pid()}/ns/net`).ino, inode);
      await podmanRoundTrip(name, logs, "in its namespace");
      // The same namespace, not a new one.
      assertEquals(Deno.statSync(`/proc/${await pid()}/ns/net`).ino, inode);
    } finally {
      await run("podman", ["rm", "-f", name]);
      await run("podman", ["rmi", "-f", image]);
      await run("ip", ["netns", "del", netns]);
    }
  },
});

Deno.test({
  name:
    "podman with a terminal (-t): the container's console is a pty whose master conmon holds; runc asks for orphan_pts_master, the restore makes a new master at the slave's index and hands it to runc (orphan-pts-master, with the descriptor): the ticker counts on through it, its controlling terminal and foreground group as they were",
  ignore: !has("podman") || !has("runc"),
  fn: async () => {
    const rootfs = await tickerRootfs();
    const image = `localhost/deno-criu-ticker-tty-${Deno.pid}`;
    const name = `deno-criu-tty-${Deno.pid}`;
    const rep = tmpDir("rep-");
    await podmanImport(rootfs, image);
    const logs = async () => (await run("podman", ["logs", name])).out;
    try {
      await podmanRun(name, image, ["/ticker", "/rep/out.log", "tty"], {
        volume: `${rep}:/rep`,
        tty: true,
      });
      await waitLine(join(rep, "out.log"), /^ready$/, 10_000);
      await ticksAfter(logs, 2);
      for (const round of [1, 2]) {
        await podmanRoundTrip(name, logs, `round ${round}`);
      }
      await ok("podman", ["kill", "-s", "TERM", name]);
      await waitLine(join(rep, "out.log"), /^(PASS|FAIL)/, 10_000);
      assertMatch(safeRead(join(rep, "out.log")), /^PASS$/m);
    } finally {
      await run("podman", ["rm", "-f", name]);
      await run("podman", ["rmi", "-f", image]);
    }
  },
});

/**
 * The criu statistics `podman container checkpoint --print-stats` prints (its JSON object:
 * podman may print more after it).
 */
async function checkpointStats(args: string[]): Promise<Record<string, number>> {
  const out = await ok("podman", ["container", "checkpoint", "--print-stats", ...args]);
  const start = out.indexOf("{");
  let depth = 0, end = -1;
  for (let i = start; start >= 0 && i < out.length && end < 0; i++) {
    if (out[i] === "{") depth++;
    else if (out[i] === "}" && --depth === 0) end = i;
  }
  assert(end > start, `no statistics in podman's output: ${out}`);
  return JSON.parse(out.slice(start, end + 1)).container_statistics[0].criu_statistics;
}

for (const exported of [false, true]) {
  Deno.test({
    name: `podman --pre-checkpoint, then --with-previous${
      exported ? ", both exported and imported again" : ""
    }: runc pre-dumps through this criu (PRE_DUMP, memory tracked without soft-dirty) while the container runs, the checkpoint writes only the pages written since, and every page comes back right`,
    ignore: !has("podman") || !has("runc"),
    fn: async () => {
      const rootfs = await tickerRootfs("dirty");
      const image = `localhost/deno-criu-dirty-${Deno.pid}`;
      const name = `deno-criu-dirty-${Deno.pid}`;
      const rep = tmpDir("rep-");
      const pages = 64 * 256;
      await podmanImport(rootfs, image);
      try {
        // 64 MiB, a page rewritten every 2 ms.
        await podmanRun(name, image, ["/dirty", "/rep/out.log", "64", "2000"], {
          volume: `${rep}:/rep`,
        });
        await waitLine(join(rep, "out.log"), /^ready/, 10_000);
        const pre = join(tmpDir(), "pre.tar.gz"), ckpt = join(tmpDir(), "ckpt.tar.gz");
        const first = await checkpointStats(["-P", ...(exported ? ["-e", pre] : []), name]);
        assert(first.pages_written >= pages, JSON.stringify(first));
        assertMatch(await ok("podman", ["ps", "--filter", `name=${name}`]), /Up/);
        const last = await checkpointStats([
          "--with-previous",
          ...(exported ? ["-e", ckpt] : []),
          name,
        ]);
        assert(last.pages_written < pages / 4, JSON.stringify(last));
        if (exported) {
          await ok("podman", ["rm", "-f", name]);
          await ok("podman", ["container", "restore", "--import", ckpt, "--import-previous", pre]);
        } else {
          await ok("podman", ["container", "restore", name]);
        }
        await ok("podman", ["kill", "-s", "TERM", name]);
        await waitLine(join(rep, "out.log"), /^(PASS|FAIL)/, 10_000);
        assertMatch(safeRead(join(rep, "out.log")), /^PASS dirty/m);
      } finally {
        await run("podman", ["rm", "-f", name]);
        await run("podman", ["rmi", "-f", image]);
      }
    },
  });
}

/** The apps image (apache2, mariadb): a debootstrap rootfs, made once and kept. */
async function appsImage(): Promise<string> {
  const image = "localhost/deno-criu-apps";
  if ((await run("podman", ["image", "exists", image])).code === 0) return image;
  const cache = "/var/cache/deno-criu/apps-rootfs";
  if (!safeRead(`${cache}/etc/debian_version`)) {
    await run("rm", ["-rf", cache]);
    Deno.mkdirSync(cache, { recursive: true });
    await ok("debootstrap", [
      "--variant=minbase",
      "--include=apache2,mariadb-server,mariadb-client,python3,iproute2",
      "bookworm",
      cache,
      "http://deb.debian.org/debian",
    ]);
  }
  await podmanImport(cache, image);
  return image;
}

/** What the apps container runs: mariadb, apache (its logs in a directory of its own: see the
 * test), and a mariadb client reading its statements from /tmp/cmds, over TCP. */
const APPS_INIT = `ip link set lo up
mkdir -p /run/mysqld && chown mysql /run/mysqld
mariadbd --user=mysql --bind-address=127.0.0.1 --skip-name-resolve \\
  >/var/log/mariadbd.log 2>&1 &
mkdir -p /var/log/apache2-run
sed -i 's|^export APACHE_LOG_DIR=.*|export APACHE_LOG_DIR=/var/log/apache2-run|' /etc/apache2/envvars
apache2ctl start
( while [ ! -e /tmp/cmds ]; do sleep 0.2; done
  tail -n +1 -f /tmp/cmds | mariadb -n -N -B -h127.0.0.1 -uapp -ppw > /tmp/out 2>&1 ) &
exec sleep infinity`;

/**
 * How many AIO rings mariadbd has mapped (its libaio contexts: seccomp says no to io_uring),
 * read from here (inside, mariadbd is another user's).
 */
async function mariadbAioRings(name: string): Promise<number> {
  const init = (await ok("podman", ["inspect", "-f", "{{.State.Pid}}", name])).trim();
  const ns = Deno.readLinkSync(`/proc/${init}/ns/pid`);
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name) || safeRead(`/proc/${e.name}/comm`).trim() !== "mariadbd") continue;
    try {
      if (Deno.readLinkSync(`/proc/${e.name}/ns/pid`) !== ns) continue;
    } catch {
      continue;
    }
    return safeRead(`/proc/${e.name}/maps`).split("\n").filter((l) => l.includes("/[aio]")).length;
  }
  throw new Error(`no mariadbd in container ${name}`);
}

/** The page, the rows, and the session's answer to a statement tagged `tag`, from inside. */
async function appsState(name: string, tag: string): Promise<string> {
  return await ok("podman", [
    "exec",
    name,
    "sh",
    "-c",
    `python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1/marker.html',timeout=5).read().decode().strip())"
mariadb -uroot -N -B -e 'SELECT * FROM t.r ORDER BY id'
echo "SELECT '${tag}', @v, CONNECTION_ID();" >> /tmp/cmds
for i in $(seq 50); do grep -qs '^${tag}' /tmp/out && break; sleep 0.1; done
grep '^${tag}' /tmp/out`,
  ]);
}

Deno.test({
  name:
    "podman checkpoints and restores an apache2 + mariadb container through this criu, in place and exported then imported: the page written before, the table's rows, and a client session over TCP with its variable and its connection",
  ignore: !has("podman") || !has("runc") || !has("debootstrap") || !has("ip"),
  fn: async () => {
    const image = await appsImage();
    const name = `deno-criu-apps-${Deno.pid}`;
    const netns = `deno-criu-apps-${Deno.pid}`;
    await ok("ip", ["netns", "add", netns]);
    await ok("ip", ["-n", netns, "link", "set", "lo", "up"]);
    const opts = ["--tcp-established", "--file-locks"];
    try {
      await podmanRun(name, image, ["sh", "-c", APPS_INIT], { network: `ns:/run/netns/${netns}` });
      const end = Date.now() + 60_000;
      while ((await run("podman", ["exec", name, "mariadb", "-uroot", "-e", "select 1"])).code) {
        assert(Date.now() < end, "mariadb did not start");
        await sleep(500);
      }
      const marker = `deno-criu-${Date.now()}`;
      await ok("podman", [
        "exec",
        name,
        "sh",
        "-c",
        // A page of its own (podman's exported archive holds the files added to the image,
        // not those changed: an edited index.html would come back as it was in the image).
        `echo ${marker} > /var/www/html/marker.html
mariadb -uroot <<'SQL'
CREATE DATABASE t; CREATE TABLE t.r (id INT PRIMARY KEY, v VARCHAR(32));
INSERT INTO t.r VALUES (1,'one'),(2,'two'),(3,'three');
CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'pw'; GRANT ALL ON t.* TO 'app'@'127.0.0.1';
SQL
echo "SET @v=42; SELECT 'before', @v, CONNECTION_ID();" > /tmp/cmds`,
      ]);
      const before = await appsState(name, "initial");
      const conn = /^initial\t42\t(\d+)$/m.exec(before)?.[1];
      assert(conn, before);
      const expect = (tag: string) =>
        new RegExp(`^${marker}\n1\tone\n2\ttwo\n3\tthree\n${tag}\t42\t${conn}\n?$`);
      assertMatch(before, expect("initial"));
      // Its native AIO contexts go round trip with it (innodb_use_native_aio's default).
      const rings = await mariadbAioRings(name);
      assert(rings > 0, "mariadbd has no AIO context");
      await ok("podman", ["container", "checkpoint", ...opts, name]);
      await ok("podman", ["container", "restore", ...opts, name]);
      assertMatch(await appsState(name, "inplace"), expect("inplace"));
      assertEquals(await mariadbAioRings(name), rings);
      const archive = join(tmpDir(), "apps.tar.gz");
      await ok("podman", ["container", "checkpoint", ...opts, "--export", archive, name]);
      await ok("podman", ["rm", "-f", name]);
      await ok("podman", ["container", "restore", ...opts, "--import", archive]);
      assertMatch(await appsState(name, "imported"), expect("imported"));
      assertEquals(await mariadbAioRings(name), rings);
    } finally {
      await run("podman", ["rm", "-f", name]);
      await run("ip", ["netns", "del", netns]);
    }
  },
});
