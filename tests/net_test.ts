/**
 * Inet sockets: TCP listeners and UDP sockets are dumped and rebuilt; without
 * --tcp-established an established TCP connection is refused by name (tcp_test.ts has the
 * connections themselves).
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  checkAcrossRoundTrip,
  critDecodeAll,
  criu,
  dumpRefused,
  freePort,
  killAll,
  settledState,
  startVictim,
  stopVictim,
  tmpDir,
  tracerPid,
  waitGone,
  waitLine,
  waitReport,
} from "./helpers.ts";

/**
 * A base port with four ports after it (the victim uses base .. base + 3), below the
 * ephemeral range (32768 and up) where other tests' connections take their local ports.
 */
function basePort(): number {
  return 10000 + 4 * Math.floor(Math.random() * 5500);
}

/** Connects, reads the victim's one-line answer, and closes first. */
async function ask(host: string, port: number): Promise<string> {
  const conn = await Deno.connect({ hostname: host, port });
  try {
    const buf = new Uint8Array(512);
    let text = "";
    while (!text.includes("\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text.trim();
  } finally {
    conn.close();
  }
}

/** One UDP question to 127.0.0.1:port, by /usr/bin/python3 (Deno's UDP is unstable). */
async function askUdp(port: number): Promise<string> {
  const out = await new Deno.Command("/usr/bin/python3", {
    args: [
      "-c",
      "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\n" +
      "s.sendto(b'q',('127.0.0.1',int(sys.argv[1])))\nprint(s.recv(200).decode())",
      `${port}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.success ? out.stdout : out.stderr).trim();
}

function field(line: string, key: string): string {
  return line.match(new RegExp(`\\b${key}=(\\S+)`))?.[1] ?? "";
}

/** The answer without the counter, which moves on. */
function settled(line: string): string {
  return line.replace(/counter=\d+/, "counter=N");
}

Deno.test("TCP listeners and UDP sockets, IPv4 and IPv6, come back bound, listening and connected, with their options", async () => {
  const bin = await buildVictim("inet");
  const port = basePort();
  const v = startVictim(["setsid", bin, "{out}", `${port}`]);
  try {
    const r = await waitReport(v);
    const before = [
      await ask("127.0.0.1", port),
      await ask("::1", port + 1),
      await askUdp(port + 2),
    ];
    assertMatch(before[0], /family=4 reuseaddr=1 keepalive=1 nonblock=1 .* udploop=1/);
    assertMatch(before[1], /family=6 reuseaddr=0 keepalive=0 nonblock=0 v6only=1 rcvbuf=\d+/);
    assertMatch(before[2], new RegExp(`^udp counter=\\d+ secret=${r.secret}$`));

    const imgs = tmpDir();
    const run = await criu(["dump", "-t", r.pid, "-D", imgs, "-o", "dump.log", "-v4"]);
    assertEquals(run.code, 0, run.stderr);
    await v.child.status;
    assert(await waitGone(Number(r.pid)), "victim gone after dump");
    await assertRefused(port);

    const img = await critDecodeAll(imgs);
    // deno-lint-ignore no-explicit-any
    const isk = img.get("files.img")!.entries.filter((f: any) => f.type === "INETSK").map((
      // deno-lint-ignore no-explicit-any
      f: any,
    ) => f.isk);
    // The connected UDP socket's own port is ephemeral.
    const show = isk.map((s) =>
      `${s.family} ${s.proto} ${s.state} ${s.dst_port ? "*" : s.src_port} ${s.dst_port}`
    ).sort();
    assertEquals(
      show,
      [
        `INET TCP CLOSE ${port + 3} 0`,
        `INET TCP LISTEN ${port} 0`,
        `INET UDP CLOSE ${port + 2} 0`,
        `INET UDP ESTABLISHED * ${port + 2}`,
        `INET6 TCP LISTEN ${port + 1} 0`,
      ].sort(),
    );
    assertEquals(isk.find((s) => s.src_port === port).backlog, 7);

    const pidfile = `${imgs}/restored.pid`;
    const rr = await criu(["restore", "-D", imgs, "-d", "--pidfile", pidfile, "-o", "restore.log"]);
    assertEquals(rr.code, 0, rr.stderr);
    assertEquals(Number(Deno.readTextFileSync(pidfile)), Number(r.pid));
    const after = [
      await ask("127.0.0.1", port),
      await ask("::1", port + 1),
      await askUdp(port + 2),
    ];
    for (let i = 0; i < 3; i++) {
      assertEquals(settled(after[i]), settled(before[i]), "same secret, options and ports");
      assert(
        Number(field(after[i], "counter")) > Number(field(before[i], "counter")),
        `the counter went on: ${before[i]} -> ${after[i]}`,
      );
    }
  } finally {
    await stopVictim(v);
    killAll(Number((await waitReport(v)).pid));
  }
});

async function assertRefused(port: number): Promise<void> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
  } catch (e) {
    assert(e instanceof Deno.errors.ConnectionRefused, `${e}`);
    return;
  }
  throw new Error(`port ${port} still answers after the dump`);
}

Deno.test("an established TCP connection is refused by name and the server keeps serving", async () => {
  const bin = await buildVictim("inet");
  const port = basePort();
  const v = startVictim(["setsid", bin, "{out}", `${port}`, "hold"]);
  const held = [];
  try {
    const r = await waitReport(v);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    held.push(conn);
    const first = new Uint8Array(512);
    assert((await conn.read(first)) !== null, "the server answered");
    const local = (conn.localAddr as Deno.NetAddr).port;

    const run = await criu(["dump", "-t", r.pid, "-D", tmpDir()]);
    assertEquals(run.code, 1);
    assertMatch(
      run.stderr,
      new RegExp(
        `fd \\d+ of task ${r.pid} \\(socket:\\[\\d+\\]\\): TCP connection 127\\.0\\.0\\.1:${port} -> ` +
          `127\\.0\\.0\\.1:${local} \\(ESTABLISHED\\); dump established connections with ` +
          `--tcp-established`,
      ),
    );
    assertEquals(run.stderr.trim().split("\n").length, 1, run.stderr);
    assertEquals(await settledState(Number(r.pid), "S"), "S");
    assertEquals(tracerPid(Number(r.pid)), 0);
    const again = await ask("127.0.0.1", port);
    assertEquals(field(again, "secret"), r.secret);
  } finally {
    for (const c of held) c.close();
    await stopVictim(v);
  }
});

Deno.test("two listeners sharing a port (SO_REUSEPORT, since turned off on one) listen again, each with its own setting", async () => {
  const port = freePort();
  const v = startVictim([
    "setsid",
    "python3",
    "-c",
    `import socket,signal,time
def srv():
  s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
  s.bind(('127.0.0.1', ${port})); s.listen(); return s
a=srv(); b=srv(); a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
def check(*_):
  ok = a.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)==0 and b.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)==1
  c=socket.create_connection(('127.0.0.1', ${port}))
  open('{out}','a').write('PASS reuseport\\n' if ok else 'FAIL reuseport\\n')
signal.signal(signal.SIGTERM, check)
open('{out}','a').write('ready\\n')
while True: time.sleep(1)
`,
  ]);
  await checkAcrossRoundTrip(v, /PASS reuseport/);
});

Deno.test("netlink sockets keep their port ids, groups and destination, and still talk to the kernel", async () => {
  const v = startVictim([
    "setsid",
    "python3",
    "-c",
    `import socket,signal,struct,time
NETLINK_ROUTE=0
a=socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE); a.bind((0, 1))  # RTMGRP_LINK
a.setsockopt(270, 1, 34)  # NETLINK_ADD_MEMBERSHIP, a group past 32
b=socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
c=socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE); c.connect((a.getsockname()[0], 0))
before=(a.getsockname(), c.getsockname(), c.getpeername(), a.getsockopt(270, 9, 8))
def check(*_):
  after=(a.getsockname(), c.getsockname(), c.getpeername(), a.getsockopt(270, 9, 8))
  # RTM_GETLINK dump request; the kernel answers on b
  req=struct.pack('=IHHII', 32, 18, 0x301, 7, 0) + struct.pack('=BxHiII', 0, 0, 0, 0, 0)
  b.send(req); reply=b.recv(65536)
  ok = after==before and struct.unpack('=IHHII', reply[:16])[3]==7
  open('{out}','a').write('PASS netlink\\n' if ok else 'FAIL netlink %r %r\\n' % (before, after))
signal.signal(signal.SIGTERM, check)
open('{out}','a').write('ready\\n')
while True: time.sleep(1)
`,
  ]);
  await checkAcrossRoundTrip(v, /PASS netlink/);
});

Deno.test("packet sockets keep their protocol, interface, settings, memberships and fanout group, and receive", async () => {
  const bin = await buildVictim("packetsk");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS packetsk/, {
    timeoutMs: 5000,
  });
});

Deno.test("a packet socket's rings mapped shared and private come back mapped where they were, and work", async () => {
  const bin = await buildVictim("packetring");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pid = 0;
  try {
    const r = await waitReport(v);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(d.code, 0, d.stderr);
    assert(await waitGone(v.pid), "gone after the dump");
    // As criu writes it: the socket's file in shmid, no pages of its own.
    const mm = (await critDecodeAll(imgs)).get(`mm-${v.pid}.img`)!.entries[0];
    const rings = mm.vmas.filter((x: { status: string }) => /VMA_AREA_SOCKET/.test(x.status));
    assertEquals(
      rings.map((x: { start: string }) => BigInt(x.start)).sort(),
      [
        BigInt(r.priv),
        BigInt(r.rx),
      ].sort(),
    );
    const rs = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(rs.code, 0, rs.stderr);
    pid = v.pid;
    Deno.kill(pid, "SIGTERM");
    await waitLine(v.out, /^(PASS|FAIL)/, 5000);
    assertMatch(Deno.readTextFileSync(v.out), /PASS packetring/);
  } finally {
    if (pid) killAll(pid);
    await stopVictim(v);
  }
});

Deno.test("a mapped packet ring that was used is refused by name, and the task keeps running", async () => {
  const bin = await buildVictim("packetring");
  const v = startVictim(["setsid", bin, "{out}", "used"]);
  try {
    const r = await waitReport(v);
    await dumpRefused(
      v.pid,
      new RegExp(
        `mapping ${r.priv.slice(2)}-[0-9a-f]+ of task ${v.pid} \\(socket:\\[\\d+\\]\\): ` +
          `its ring was used`,
      ),
    );
  } finally {
    await stopVictim(v);
  }
});

Deno.test("a socket with IPv4 header options (IP_OPTIONS) is refused by name, and the task keeps running", async () => {
  const v = startVictim([
    "setsid",
    "python3",
    "-c",
    `import socket,time
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([1, 1, 1, 0]))  # NOPs, end of list
open('{out}','a').write('ready fd=%d\\n' % s.fileno())
while True: time.sleep(1)
`,
  ]);
  try {
    const r = await waitReport(v);
    await dumpRefused(v.pid, new RegExp(`fd ${r.fd} of task ${v.pid} .*IPv4 header options`));
  } finally {
    await stopVictim(v);
  }
});

Deno.test("raw sockets keep their protocol, addresses, connection, header and fragment settings and ICMP filters", async () => {
  const bin = await buildVictim("rawsk");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS rawsk/);
  // An IPV6_CHECKSUM offset of its own: refused by name, the task left running.
  const v = startVictim(["setsid", bin, "{out}", "checksum"]);
  try {
    const r = await waitReport(v);
    await dumpRefused(
      v.pid,
      new RegExp(`fd ${r.m} of task ${v.pid} .*IPV6_CHECKSUM offset is set`),
    );
  } finally {
    await stopVictim(v);
  }
});

Deno.test("TCP sockets closed after a connection read the end of the stream and keep their names and their peers' (SO_PEERNAME), no error waiting; a fresh one stays unconnected", async () => {
  const bin = await buildVictim("tcpclosed");
  await checkAcrossRoundTrip(
    startVictim(["setsid", bin, "{out}", `${freePort()}`]),
    /PASS tcpclosed/,
  );
});
