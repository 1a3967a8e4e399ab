/**
 * Established TCP connections (--tcp-established): both ends in the tree, one end outside it
 * (a peer in its own network namespace behind a veth pair, sending all through the dump),
 * half-closed connections, a real server (redis) with a client held open, the network lock
 * (nftables and iptables) and its removal after a failed dump, --tcp-close.
 *
 * The victims pump 32-bit counters both ways and check every one they receive, so a lost,
 * duplicated or reordered byte, a reset or an early EOF makes them report FAIL.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  critDecodeAll,
  criu,
  dumpRefused,
  freePort,
  killAll,
  peerNetns,
  ROOT,
  roundTrip,
  safeRead,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  verdict,
  type Victim,
  waitGone,
  waitLine,
  waitReport,
} from "./helpers.ts";

/** The last "tick ROLE" counters a victim reported. */
function lastTick(v: Victim, role: string): { sent: number; recv: number } {
  const lines = safeRead(v.out).split("\n").filter((l) => l.startsWith(`tick ${role} `));
  const m = /sent=(\d+) recv=(\d+)/.exec(lines.at(-1) ?? "");
  return { sent: Number(m?.[1] ?? -1), recv: Number(m?.[2] ?? -1) };
}

/** Waits until ROLE of `v` reports having received more than `than` counters. */
async function waitProgress(v: Victim, role: string, than: number, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const fail = safeRead(v.out).split("\n").find((l) => l.startsWith("FAIL"));
    if (fail) throw new Error(`${role}: ${fail}`);
    if (lastTick(v, role).recv > than) return;
    await sleep(50);
  }
  throw new Error(`${role} made no progress past ${than}: ${safeRead(v.out).slice(-400)}`);
}

/**
 * SIGTERM to each pid, then the PASS/FAIL line of each role, which must all be PASS, with the
 * TCP_NODELAY a client sets and a server does not.
 */
async function verdicts(checks: { v: Victim; pid: number; roles: string[] }[]): Promise<void> {
  for (const c of checks) Deno.kill(c.pid, "SIGTERM");
  for (const c of checks) {
    for (const role of c.roles) {
      const line = await waitLine(c.v.out, new RegExp(`^(PASS|FAIL) ${role}`), 10000);
      assertMatch(line, /^PASS /, safeRead(c.v.out).slice(-400));
      assertMatch(line, new RegExp(`nodelay=${role === "client" ? 1 : 0}$`));
    }
  }
}

function nftTable(name: string): boolean {
  return new Deno.Command("nft", { args: ["list", "table", "inet", name], stderr: "null" })
    .outputSync().success;
}

function iptablesRules(): string {
  const out = new Deno.Command("iptables", { args: ["-S"], stderr: "null" }).outputSync();
  return new TextDecoder().decode(out.stdout);
}

/** Starts victim `tcp` in pair mode `mode` on port `p`: the victim, its root and child, its
 * "ready" line. */
async function startPair(
  mode: string,
  p = freePort(),
): Promise<
  { v: Victim; root: number; child: number; ready: Record<string, string>; port: number }
> {
  const bin = await buildVictim("tcp");
  const v = startVictim(["setsid", bin, "{out}", mode, `${p}`]);
  const ready = await waitReport(v);
  return { v, root: Number(ready.pid), child: Number(ready.child), ready, port: p };
}

/**
 * The segment size (mss) of each end of the connections on local `port`, by "local peer" as ss
 * prints them.
 */
async function segmentSizes(port: number): Promise<Map<string, number>> {
  const out = await new Deno.Command("ss", {
    args: ["-tinH", "state", "established", `( sport = :${port} or dport = :${port} )`],
    stdout: "piped",
  }).output();
  const sizes = new Map<string, number>();
  let ends = "";
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const mss = /\bmss:(\d+)/.exec(line);
    if (mss) sizes.set(ends, Number(mss[1]));
    else if (line.trim()) ends = line.trim().split(/\s+/).slice(2, 4).join(" ");
  }
  return sizes;
}

/** Dumps a pair with `opts` and waits until both its PIDs are free; returns the images. */
async function dumpPair(
  v: Victim,
  root: number,
  child: number,
  opts = ["--tcp-established"],
): Promise<string> {
  const imgs = tmpDir();
  const run = await criu(["dump", "-t", `${root}`, "-D", imgs, ...opts]);
  assertEquals(run.code, 0, run.stderr);
  await v.child.status;
  await waitPairGone(root, child);
  return imgs;
}

/** Waits for every PID of a dumped pair (the child is reaped by init, which lags). */
async function waitPairGone(root: number, child: number): Promise<void> {
  assert(await waitGone(root), `task ${root} gone`);
  assert(await waitGone(child, 15000), `task ${child} gone`);
}

// deno-lint-ignore no-explicit-any
function inetSockets(files: any): any[] {
  // deno-lint-ignore no-explicit-any
  return files.entries.filter((f: any) => f.type === "INETSK").map((f: any) => f.isk);
}

for (const six of [false, true]) {
  Deno.test(`both ends in the tree (${six ? "IPv6" : "IPv4"}): a client and a server keep pumping after restore, queues and all`, async () => {
    const { v, root, child, port } = await startPair(six ? "pair6" : "pair");
    try {
      await waitProgress(v, "server", 100000);
      // The server stops reading: its window closes, and stays closed across the restore.
      Deno.kill(child, "SIGUSR2");
      await sleep(300);
      const mss = await segmentSizes(port);
      assertEquals(mss.size, 2, `both ends: ${[...mss]}`);
      const imgs = await dumpPair(v, root, child);
      assert(nftTable(`CRIU-${root}`), "the lock stays between dump and restore");
      const before = { client: lastTick(v, "client"), server: lastTick(v, "server") };

      const img = await critDecodeAll(imgs);
      const socks = inetSockets(img.get("files.img"));
      // deno-lint-ignore no-explicit-any
      const conns = socks.filter((s: any) => s.state === "ESTABLISHED");
      assertEquals(conns.length, 2, JSON.stringify(socks));
      for (const s of conns) {
        assertEquals(s.family, six ? "INET6" : "INET");
        const stream = img.get(`tcp-stream-${Number(s.ino).toString(16)}.img`)!.entries[0];
        assert(stream.inq_len + stream.outq_len > 0, "the queues were full");
        const bytes = (b64: string) => atob(b64.replace(/\n/g, "")).length;
        assertEquals(bytes(stream.extra.inq), stream.inq_len);
        assertEquals(bytes(stream.extra.outq), stream.outq_len);
        assertEquals(Number(stream.opt_mask) & 7, 7, "timestamps, SACK, window scaling");
      }
      // Our own viewer reads them too.
      const shown = await criu(["show", imgs]);
      assertEquals(shown.code, 0, shown.stderr);
      assertEquals(shown.stdout.match(/"magic": "TCP_STREAM"/g)?.length, 2);

      // Without the option the restore refuses, names the connection, and lets the lock go.
      const no = await criu(["restore", "-D", imgs, "-d"]);
      assertEquals(no.code, 1);
      assertMatch(no.stderr, /TCP connection .* restore with --tcp-established/);
      assertEquals(no.stderr.trim().split("\n").length, 1, no.stderr);
      assert(!nftTable(`CRIU-${root}`), "a failed restore removes the lock");
      await waitPairGone(root, child);

      const rr = await criu(["restore", "-D", imgs, "-d", "--tcp-established"]);
      assertEquals(rr.code, 0, rr.stderr);
      // Each end sends segments as large as before (the segment size only grows, with the
      // largest window the peer offered), though the server offers no window yet; over IPv6 at
      // most what a user's clamp allows (32767 less 12 bytes of timestamps: tcp_repair.ts).
      await sleep(200);
      const now = await segmentSizes(port);
      for (const [ends, was] of mss) {
        const least = six ? Math.min(was, 32767 - 12) : was;
        const got = now.get(ends) ?? 0;
        assert(got >= least, `${ends}: segment size ${got}, was ${was}`);
      }
      Deno.kill(child, "SIGUSR2");
      assert(!nftTable(`CRIU-${root}`), "the restore removed the lock");
      await waitProgress(v, "client", before.client.recv);
      await waitProgress(v, "server", before.server.recv);
      await verdicts([{ v, pid: root, roles: ["client", "server"] }]);
    } finally {
      killAll(root, child);
      await stopVictim(v);
    }
  });
}

for (const six of [false, true]) {
  Deno.test(`half-closed connections (CLOSE_WAIT and FIN_WAIT2, ${six ? "IPv6" : "IPv4"}) keep their FINs and their data`, async () => {
    const { v, root, child } = await startPair(six ? "halfpair6" : "halfpair");
    try {
      await waitProgress(v, "client", 10000);
      const imgs = await dumpPair(v, root, child);
      const states = inetSockets((await critDecodeAll(imgs)).get("files.img"))
        // deno-lint-ignore no-explicit-any
        .map((s: any) => s.state).filter((s: string) => s !== "LISTEN").sort();
      assertEquals(states, ["CLOSE_WAIT", "FIN_WAIT2"]);
      const before = lastTick(v, "client").recv;
      const rr = await criu(["restore", "-D", imgs, "-d", "--tcp-established"]);
      assertEquals(rr.code, 0, rr.stderr);
      await waitProgress(v, "client", before);
      // The server still reads EOF, the client still cannot write.
      await verdicts([{ v, pid: root, roles: ["client", "server"] }]);
    } finally {
      killAll(root, child);
      await stopVictim(v);
    }
  });
}

for (const side of ["server", "client"] as const) {
  const method = side === "server" ? "nftables" : "iptables";
  Deno.test(`one end outside: the ${side} is dumped while its peer in another network namespace keeps sending (lock: ${method})`, async () => {
    const bin = await buildVictim("tcp");
    await using net = await peerNetns();
    const p = freePort();
    const other = side === "server" ? "client" : "server";
    const peerArgv = (
      out: string,
    ) => [
      "ip",
      "netns",
      "exec",
      net.ns,
      bin,
      out,
      other,
      other === "server" ? net.peerAddr : net.hostAddr,
      `${p}`,
    ];
    const victimArgv = [
      "setsid",
      bin,
      "{out}",
      side,
      side === "server" ? net.hostAddr : net.peerAddr,
      `${p}`,
    ];
    let v: Victim, peer: Victim;
    if (side === "server") {
      v = startVictim(victimArgv);
      await waitReport(v, "listening");
      peer = startVictim(peerArgv("{out}"));
    } else {
      peer = startVictim(peerArgv("{out}"));
      await waitReport(peer, "listening");
      v = startVictim(victimArgv);
    }
    try {
      const r = await waitReport(v);
      await waitProgress(peer, other, 100000);
      const imgs = tmpDir();
      const run = await criu([
        "dump",
        "-t",
        r.pid,
        "-D",
        imgs,
        "--tcp-established",
        "--network-lock",
        method,
      ]);
      assertEquals(run.code, 0, run.stderr);
      await v.child.status;
      assert(await waitGone(Number(r.pid)), "victim gone");
      if (method === "iptables") {
        assertMatch(iptablesRules(), new RegExp(`--dport ${p} .*-j DROP`), "iptables lock");
      } else {
        assert(nftTable(`CRIU-${r.pid}`), "nftables lock");
      }
      // The peer goes on sending into the lock: once it has read what was already on its side,
      // it hears nothing more, not even a reset.
      let stalled = -1;
      for (let i = 0; i < 30 && lastTick(peer, other).recv !== stalled; i++) {
        stalled = lastTick(peer, other).recv;
        await sleep(400);
      }
      await sleep(1000);
      assertEquals(lastTick(peer, other).recv, stalled, "nothing reaches the peer while locked");
      assert(!safeRead(peer.out).includes("FAIL"), safeRead(peer.out));

      const rr = await criu(["restore", "-D", imgs, "-d", "--tcp-established"]);
      assertEquals(rr.code, 0, rr.stderr);
      assert(!iptablesRules().includes(`${p}`) && !nftTable(`CRIU-${r.pid}`), "lock removed");
      await waitProgress(peer, other, stalled);
      await waitProgress(v, side, lastTick(v, side).recv);
      await verdicts([{ v, pid: Number(r.pid), roles: [side] }, {
        v: peer,
        pid: peer.pid,
        roles: [other],
      }]);
    } finally {
      killAll(v.pid);
      await stopVictim(v);
      await stopVictim(peer);
    }
  });
}

Deno.test("a dump that fails after the lock removes it, leaves the connections out of repair mode and the tree running", async () => {
  const { v, root } = await startPair("pair");
  try {
    await waitProgress(v, "server", 100000);
    const run = await criu(
      ["dump", "-t", `${root}`, "-D", tmpDir(), "--tcp-established", "-o", "dump.log", "-v4"],
      { DENO_CRIU_FAULT: "collect" },
    );
    assertEquals(run.code, 1);
    assertMatch(run.stderr, /Fault injected at collect/);
    assert(!nftTable(`CRIU-${root}`), "lock removed");
    // Without nft there is no lock to take: refused in one line, the tree goes on.
    const noNft = await criu(["dump", "-t", `${root}`, "-D", tmpDir(), "--tcp-established"], {
      PATH: "/usr/bin:/bin",
    });
    assertEquals(noNft.code, 1);
    assertMatch(noNft.stderr, /^Error: Cannot lock the network: nft is not installed/);
    assertEquals(noNft.stderr.trim().split("\n").length, 1, noNft.stderr);
    const t = lastTick(v, "client").recv;
    await waitProgress(v, "client", t);
    await waitProgress(v, "server", lastTick(v, "server").recv);
    await verdicts([{ v, pid: v.pid, roles: ["client", "server"] }]);
  } finally {
    await stopVictim(v);
  }
});

Deno.test("--tcp-close restores connections closed; without options a connection is refused at dump by name", async () => {
  const p = freePort();
  const { v, root, child } = await startPair("pair", p);
  try {
    await waitProgress(v, "server", 1000);
    const refused = await criu(["dump", "-t", `${root}`, "-D", tmpDir()]);
    assertEquals(refused.code, 1);
    assertMatch(
      refused.stderr,
      new RegExp(
        `TCP connection 127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:${p} \\(ESTABLISHED\\); dump ` +
          `established connections with --tcp-established`,
      ),
    );
    assertEquals(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    await waitProgress(v, "server", lastTick(v, "server").recv);

    const imgs = await dumpPair(v, root, child, ["--tcp-close"]);
    const img = await critDecodeAll(imgs);
    assertEquals(img.get("inventory.img")!.entries[0].tcp_close, true);
    assert(![...img.keys()].some((n) => n.startsWith("tcp-stream-")), "no stream images");
    const rr = await criu(["restore", "-D", imgs, "-d"]);
    assertEquals(rr.code, 0, rr.stderr);
    // The pumps find their connections closed as criu closes them (shut down both ways):
    // reading gives end-of-file, writing EPIPE.
    const line = await waitLine(
      v.out,
      /^FAIL (client|server) (send|recv|socket error|early EOF)/,
      10000,
    );
    assertMatch(line, /Broken pipe|early EOF/);
    assertEquals(
      new TextDecoder().decode(
        new Deno.Command("ss", { args: ["-Htn", `sport = :${p}`] }).outputSync().stdout,
      ).trim(),
      "",
      "no connection on the port",
    );
  } finally {
    killAll(root, child);
    await stopVictim(v);
  }
});

/** One RESP command. */
function resp(...args: string[]): Uint8Array {
  return new TextEncoder().encode(
    `*${args.length}\r\n` + args.map((a) => `$${a.length}\r\n${a}\r\n`).join(""),
  );
}

/** Reads from `conn` until the text read ends with `want` lines (CRLF-terminated). */
async function readLines(conn: Deno.Conn, lines: number, timeoutMs = 20000): Promise<string> {
  let text = "";
  const buf = new Uint8Array(4096);
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    while (text.split("\r\n").length - 1 < lines) {
      const n = await conn.read(buf);
      if (n === null) throw new Error(`connection closed after ${JSON.stringify(text)}`);
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
  } finally {
    clearTimeout(timer);
  }
  return text;
}

Deno.test("redis-server keeps its client connections across dump and restore and answers their next requests", async () => {
  const p = freePort();
  const dir = tmpDir("redis-");
  const v = startVictim([
    "setsid",
    "redis-server",
    "--port",
    `${p}`,
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--daemonize",
    "no",
    "--dir",
    dir,
    "--logfile",
    `${dir}/redis.log`,
  ], dir);
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; !conns.length; i++) {
      try {
        conns.push(await Deno.connect({ hostname: "127.0.0.1", port: p }));
      } catch (e) {
        if (i > 100) throw e;
        await sleep(50);
      }
    }
    // 40 clients, each with its own key; all locked in one go at the dump.
    while (conns.length < 40) conns.push(await Deno.connect({ hostname: "127.0.0.1", port: p }));
    const secret = crypto.randomUUID();
    for (const [i, c] of conns.entries()) {
      await c.write(resp("SET", `secret${i}`, `${secret}-${i}`));
      await c.write(resp("INCR", `n${i}`));
      assertEquals(await readLines(c, 2), "+OK\r\n:1\r\n");
    }

    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "--tcp-established"]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    assert(await waitGone(v.pid), "redis gone");
    const img = await critDecodeAll(imgs);
    assertEquals([...img.keys()].filter((n) => n.startsWith("tcp-stream-")).length, 40);
    // Requests sent while redis is away go into the lock; TCP brings them over later.
    for (const [i, c] of conns.entries()) await c.write(resp("INCR", `n${i}`));

    const rr = await criu(["restore", "-D", imgs, "-d", "--tcp-established"]);
    assertEquals(rr.code, 0, rr.stderr);
    for (const [i, c] of conns.entries()) {
      assertEquals(await readLines(c, 1), ":2\r\n");
      await c.write(resp("GET", `secret${i}`));
      const value = `${secret}-${i}`;
      assertEquals(await readLines(c, 2), `$${value.length}\r\n${value}\r\n`);
    }
  } finally {
    for (const c of conns) c.close();
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("a listener with connections waiting to be accepted: refused by name, or dumped without them with --skip-in-flight", async () => {
  const p = freePort();
  const v = startVictim([
    "setsid",
    "python3",
    "-c",
    "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',int(sys.argv[2])))\n" +
    "s.listen(4)\nopen(sys.argv[1],'a').write('ready\\n')\ntime.sleep(600)",
    "{out}",
    `${p}`,
  ]);
  let waiting: Deno.Conn | undefined;
  try {
    await waitReport(v);
    waiting = await Deno.connect({ hostname: "127.0.0.1", port: p });
    const refused = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir(), "--tcp-established"]);
    assertEquals(refused.code, 1);
    assertMatch(
      refused.stderr,
      new RegExp(
        `listening on 127\\.0\\.0\\.1:${p} with 1 connection\\(s\\) waiting to be ` +
          `accepted; dump with --skip-in-flight to drop them`,
      ),
    );
    const imgs = tmpDir();
    const run = await criu([
      "dump",
      "-t",
      `${v.pid}`,
      "-D",
      imgs,
      "--tcp-established",
      "--skip-in-flight",
      "-o",
      "dump.log",
    ]);
    assertEquals(run.code, 0, run.stderr);
    assertMatch(
      safeRead(`${imgs}/dump.log`),
      /1 connection\(s\) waiting to be accepted are dropped/,
    );
    await v.child.status;
    assert(await waitGone(v.pid), "victim gone");
    const rr = await criu(["restore", "-D", imgs, "-d", "--tcp-established"]);
    assertEquals(rr.code, 0, rr.stderr);
    const again = await Deno.connect({ hostname: "127.0.0.1", port: p });
    again.close();
  } finally {
    waiting?.close();
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("dump --leave-running lets the connections go on; a restore that fails after making them kills them quietly and can be run again", async () => {
  const { v, root, child } = await startPair("pair");
  try {
    await waitProgress(v, "server", 100000);
    const keep = await criu(["dump", "-t", `${root}`, "-D", tmpDir(), "--tcp-established", "-R"]);
    assertEquals(keep.code, 0, keep.stderr);
    assert(!nftTable(`CRIU-${root}`), "no lock left behind");
    await waitProgress(v, "client", lastTick(v, "client").recv);
    await waitProgress(v, "server", lastTick(v, "server").recv);

    const imgs = await dumpPair(v, root, child);
    const before = lastTick(v, "client").recv;
    const bad = await criu(["restore", "-D", imgs, "-d", "--tcp-established"], {
      DENO_CRIU_FAULT: "state",
    });
    assertEquals(bad.code, 1);
    assertMatch(bad.stderr, /Fault injected at state/);
    assert(!nftTable(`CRIU-${root}`), "the failed restore removed the lock");
    await waitPairGone(root, child);
    assertEquals(lastTick(v, "client").recv, before, "the half-made tree never ran");

    const rr = await criu(["restore", "-D", imgs, "-d", "--tcp-established"]);
    assertEquals(rr.code, 0, rr.stderr);
    await waitProgress(v, "client", before);
    await verdicts([{ v, pid: root, roles: ["client", "server"] }]);
  } finally {
    killAll(root, child);
    await stopVictim(v);
  }
});

for (
  const [mode, state, peer] of [["stuckfin", "FIN_WAIT1", "ESTABLISHED"], [
    "lastack",
    "LAST_ACK",
    "FIN_WAIT2",
  ]]
) {
  Deno.test(`a FIN waiting behind megabytes the peer has not read yet (${state}, the peer ${peer}) goes out after them`, async () => {
    const { v, root, child, ready } = await startPair(mode);
    try {
      const imgs = await dumpPair(v, root, child);
      const img = await critDecodeAll(imgs);
      const socks = inetSockets(img.get("files.img"));
      // deno-lint-ignore no-explicit-any
      assertEquals(socks.map((s: any) => s.state).sort(), [peer, state].sort());
      // deno-lint-ignore no-explicit-any
      const fin = socks.find((s: any) => s.state === state);
      const stream = img.get(`tcp-stream-${Number(fin.ino).toString(16)}.img`)!.entries[0];
      assert(stream.outq_len > 1 << 20, `megabytes waiting: ${stream.outq_len}`);

      const rr = await criu(["restore", "-D", imgs, "-d", "--tcp-established"]);
      assertEquals(rr.code, 0, rr.stderr);
      Deno.kill(root, "SIGTERM");
      const line = await waitLine(v.out, /^(PASS|FAIL) server/, 10000);
      assertEquals(line, `PASS server recv=${ready.sent}`, "every counter, then EOF");
    } finally {
      killAll(root, child);
      await stopVictim(v);
    }
  });
}

for (const netns of [false, true]) {
  Deno.test(
    `a connection waiting for the answer to its SYN (SYN_SENT) completes after the restore${
      netns ? ", in a network namespace of its own (its peer read from that namespace's table)" : ""
    }`,
    async () => {
      const synsent = ["python3", `${ROOT}/tests/victims/synsent.py`, "{out}"];
      const v = startVictim(
        netns
          ? [
            "setsid",
            "unshare",
            "-n",
            "sh",
            "-c",
            'ip link set lo up && exec "$@"',
            "sh",
            ...synsent,
          ]
          : ["setsid", ...synsent],
      );
      let port = 0;
      try {
        port = Number((await waitReport(v)).port);
        await roundTrip(v, { dump: ["--tcp-established"], restore: ["--tcp-established"] });
        assertMatch(await verdict(v, v.pid, "SIGTERM", 8000), /PASS synsent/);
      } finally {
        await stopVictim(v);
        killAll(v.pid);
        if (port) {
          // The victim removes its rule; should it have died first, the rule goes here.
          await new Deno.Command("iptables", {
            args: [
              "-w",
              "-D",
              "INPUT",
              "-t",
              "filter",
              "-p",
              "tcp",
              "--dport",
              `${port}`,
              "-j",
              "DROP",
            ],
            stderr: "null",
          }).output();
        }
      }
    },
  );
}

Deno.test("a TCP socket reset by its peer: its waiting error, or its unread bytes, refused by name", async () => {
  // The peer sends three bytes and resets (SO_LINGER 0); "errread" reads the error first.
  const code = "import os,socket,struct,sys,time\nl=socket.socket()\nl.bind(('127.0.0.1',0))\n" +
    "l.listen(1)\nc=socket.create_connection(l.getsockname())\ns,_=l.accept()\n" +
    "c.send(b'abc')\ntime.sleep(0.1)\n" +
    "c.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0))\nc.close()\n" +
    "time.sleep(0.1)\nif sys.argv[2]=='errread': s.getsockopt(socket.SOL_SOCKET,socket.SO_ERROR)\n" +
    "open(sys.argv[1],'a').write('ready\\n')\ntime.sleep(600)";
  for (const mode of ["error", "errread"]) {
    const v = startVictim(["setsid", "python3", "-c", code, "{out}", mode]);
    try {
      await waitReport(v);
      await dumpRefused(
        v.pid,
        mode === "error"
          ? /closed TCP socket .* has an error waiting to be read/
          : /closed TCP socket .* holds 3 bytes unread/,
        ["--tcp-established"],
      );
    } finally {
      killAll(v.pid);
      await stopVictim(v);
    }
  }
});
