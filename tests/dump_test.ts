/**
 * End-to-end dump tests on real processes: dump with criu's CLI, decode every image with
 * Debian's crit, and compare the decoded values with what the victim set up.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "./assert.ts";
import { PageCopiers } from "../src/pagemap/page_copiers.ts";
import { exists } from "../src/util/exists.ts";
import { NO_ZERO_PAGE, zeroPagePfn } from "../src/syscalls/mod.ts";
import {
  buildVictim,
  critDecodeAll,
  criu,
  killAll,
  num,
  procState,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  tracerPid,
  verdict,
  waitReport,
} from "./helpers.ts";

const SA_SIGINFO = 4n, SA_RESTART = 0x10000000n;
const sigIndex = (sig: number) => sig - 1 - (sig > 9 ? 1 : 0) - (sig > 19 ? 1 : 0);

Deno.test("dump -R records the state a C victim set up, crit decodes every image", async () => {
  const bin = await buildVictim("state");
  const v = startVictim([bin, "{out}", "{dir}"]);
  try {
    const r = await waitReport(v);
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-o", "dump.log", "-v4", "-R"]);
    assertEquals(run.code, 0, run.stderr + Deno.readTextFileSync(`${imgs}/dump.log`));
    assert(procState(v.pid) !== undefined, "victim must survive dump -R");
    assertEquals(tracerPid(v.pid), 0);

    const files = [...Deno.readDirSync(imgs)].map((e) => e.name);
    for (
      const f of [
        "inventory.img",
        "pstree.img",
        `core-${v.pid}.img`,
        `ids-${v.pid}.img`,
        `mm-${v.pid}.img`,
        `pagemap-${v.pid}.img`,
        `fs-${v.pid}.img`,
        "files.img",
        "fdinfo-2.img",
        "pipes-data.img",
        "pages-1.img",
        "seccomp.img",
        "timens-0.img",
        "stats-dump",
      ]
    ) assert(files.includes(f), `missing ${f}`);
    for (const f of files) {
      if (f.endsWith(".log")) continue;
      assertEquals(Deno.statSync(`${imgs}/${f}`).mode! & 0o777, 0o600, `${f} mode`);
    }

    const img = await critDecodeAll(imgs);
    assertEquals(img.get("inventory.img")!.entries[0].img_version, 2);
    // And the crit command itself, as a user would run it.
    const crit = await new Deno.Command("crit", {
      args: ["decode", "-i", `${imgs}/core-${v.pid}.img`, "--pretty"],
      stdout: "piped",
    }).output();
    assert(crit.success);
    assertEquals(JSON.parse(new TextDecoder().decode(crit.stdout)).entries[0].tc.comm, "state");
    assertEquals(img.get("pstree.img")!.entries[0].pid, v.pid);

    const core = img.get(`core-${v.pid}.img`)!.entries[0];
    assertEquals(core.mtype, "X86_64");
    assertEquals(core.tc.comm, "state");
    const usr1 = core.tc.sigactions[sigIndex(10)];
    assertEquals(num(usr1.sigaction), BigInt("0x" + r.handler));
    assertEquals(num(usr1.flags) & (SA_SIGINFO | SA_RESTART), SA_SIGINFO | SA_RESTART);
    assertEquals(num(usr1.mask), 1n << 11n, "SIGUSR2 in the SIGUSR1 handler mask");
    assertEquals(num(core.tc.sigactions[sigIndex(12)].sigaction), 1n, "SIGUSR2 ignored");
    assertEquals(num(core.tc.blk_sigset) & 1n, 1n, "SIGHUP blocked");
    const pending = core.tc.signals_s.signals as { siginfo: string }[];
    assertEquals(pending.length, 301, "SIGHUP and 300 queued SIGRTMIN+1");
    assertEquals(core.thread_core.signals_p.signals.length, 300, "300 queued to the thread");
    const si = Uint8Array.from(atob(pending[0].siginfo), (c) => c.charCodeAt(0));
    assertEquals(new DataView(si.buffer).getInt32(0, true), 1, "SIGHUP pending");
    assertEquals(num(core.thread_core.sas.ss_sp), BigInt("0x" + r.altstack));
    assertEquals(num(core.thread_core.sas.ss_size), 65536n);
    assertEquals(num(core.tc.timers.real.isec), 500n);
    assert(num(core.tc.timers.real.vsec) >= 998n && num(core.tc.timers.real.vsec) <= 1000n);
    assertEquals(num(core.tc.rlimits.rlimits[7].cur), 777n, "RLIMIT_NOFILE");
    // pause() was interrupted: the image resumes by re-entering it.
    const regs = core.thread_info.gpregs;
    assertEquals(num(regs.orig_ax), 34n);
    assertEquals(num(regs.ax), 34n);

    assertEquals(img.get(`fs-${v.pid}.img`)!.entries[0].umask, 0o27);

    // Mappings.
    const mm = img.get(`mm-${v.pid}.img`)!.entries[0];
    const anon = BigInt("0x" + r.anon), fmap = BigInt("0x" + r.fmap);
    const npages = Number(r.npages);
    const noZeroPage = zeroPagePfn() === NO_ZERO_PAGE;
    // The kernel may merge the mapping with an adjacent anonymous one.
    const covering = (addr: bigint) =>
      mm.vmas.find((x: { start: string; end: string }) =>
        num(x.start) <= addr && addr < num(x.end)
      );
    const anonVma = covering(anon);
    assert(anonVma, "anonymous mapping recorded");
    assert(num(anonVma.end) >= anon + BigInt(npages * 4096));
    assertMatch(anonVma.status, /VMA_ANON_PRIVATE/);
    const fileVma = covering(fmap);
    assertEquals(num(fileVma.start), fmap);
    assertMatch(fileVma.status, /VMA_FILE_PRIVATE/);
    const filesImg = img.get("files.img")!.entries;
    const mapped = filesImg.find((f: { id: number }) => f.id === Number(fileVma.shmid));
    assertMatch(mapped.reg.name, /mapped\.bin$/);

    // Pages: touched even pages and the COW'd file page only.
    const pm = img.get(`pagemap-${v.pid}.img`)!.entries;
    assertEquals(pm[0].pages_id, 1);
    const dumped = new Map<bigint, number>(); // page address → index in pages-1.img
    let index = 0;
    for (const e of pm.slice(1)) {
      for (let i = 0; i < Number(e.nr_pages); i++) {
        dumped.set(num(e.vaddr) + BigInt(i * 4096), index++);
      }
    }
    const pages = Deno.readFileSync(`${imgs}/pages-1.img`);
    assertEquals(pages.length, index * 4096);
    for (let i = 0; i < npages; i++) {
      const at = dumped.get(anon + BigInt(i * 4096));
      if (i % 2 === 0 && i < npages - 1) {
        assert(at !== undefined, `written page ${i} dumped`);
        assertEquals(pages[at * 4096], (i * 7 + 3) & 0xff);
        assertEquals(pages[at * 4096 + 4095], (i * 7 + 3) & 0xff);
      } else if (i < npages - 1 && noZeroPage) {
        // Only read, on a kernel without the zero page: a page of its own, of zeros.
        assert(at !== undefined, `read-only page ${i} dumped`);
        assert(
          pages.subarray(at * 4096, (at + 1) * 4096).every((b) => b === 0),
          `page ${i}: zeros`,
        );
      } else {
        assertEquals(at, undefined, `read-only or untouched page ${i} not dumped`);
      }
    }
    assertEquals(dumped.get(fmap), undefined, "clean file page not dumped");
    const none = dumped.get(BigInt("0x" + r.none));
    assert(none !== undefined, "written page of a PROT_NONE mapping dumped");
    assertEquals(pages[none * 4096], "N".charCodeAt(0));
    const cow = dumped.get(fmap + 4096n);
    assert(cow !== undefined, "modified file page dumped");
    assertEquals(pages[cow * 4096], "C".charCodeAt(0));

    // Files: the data file at its offset, the pipe and its queued bytes.
    const fdinfo = img.get("fdinfo-2.img")!.entries;
    const dataFd = fdinfo.find((f: { fd: number }) => f.fd === Number(r.datafd));
    const dataFile = filesImg.find((f: { id: number }) => f.id === dataFd.id);
    assertMatch(dataFile.reg.name, /data\.txt$/);
    assertEquals(dataFile.reg.pos, 1234);
    const pipeR = fdinfo.find((f: { fd: number }) => f.fd === Number(r.pipe_r));
    assertEquals(pipeR.type, "PIPE");
    const pipeFile = filesImg.find((f: { id: number }) => f.id === pipeR.id);
    const pd = img.get("pipes-data.img")!.entries;
    const data = pd.find((p: { pipe_id: number }) => p.pipe_id === pipeFile.pipe.pipe_id);
    assertEquals(data.bytes, 10);
    const raw = Deno.readFileSync(`${imgs}/pipes-data.img`);
    assert(new TextDecoder().decode(raw).includes("hello pipe"));

    const stats = img.get("stats-dump")!.entries[0].dump;
    assertEquals(Number(stats.pages_written), index);

    // The victim still has its memory and the pipe still holds its data.
    assertMatch(await verdict(v), /PASS/);
  } finally {
    await stopVictim(v);
  }
});

Deno.test("dump without -R kills the task after the images are complete", async () => {
  const bin = await buildVictim("state");
  const v = startVictim([bin, "{out}", "{dir}"]);
  try {
    await waitReport(v);
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
    assertEquals(run.code, 0, run.stderr);
    const st = await v.child.status;
    assertEquals(st.signal, "SIGKILL");
    const img = await critDecodeAll(imgs);
    assertEquals(img.get("pstree.img")!.entries[0].pid, v.pid);
  } finally {
    await stopVictim(v);
  }
});

Deno.test("a large process's pages go while its smaps is read, found from its maps; where the VmFlags walk otherwise (a MAP_DROPPABLE mapping, which criu leaves out) they are found again, the file given up removed; restored, every page right", async () => {
  const bin = await buildVictim("heap");
  for (const drop of [false, true]) {
    // 16 MiB: more than the page copiers take.
    const v = startVictim(["setsid", bin, "{out}", "16", ...(drop ? ["drop"] : [])]);
    let pid = 0;
    try {
      const r = await waitReport(v);
      const imgs = tmpDir();
      const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-o", "dump.log", "-v4"]);
      const log = Deno.readTextFileSync(`${imgs}/dump.log`);
      assertEquals(d.code, 0, d.stderr + log);
      await v.child.status;
      assertEquals(/its mappings with their VmFlags are walked otherwise/.test(log), drop, log);
      // The pages files are the one the pagemap names, and no other.
      const img = await critDecodeAll(imgs);
      const pm = img.get(`pagemap-${v.pid}.img`)!.entries;
      const pagesFiles = [...Deno.readDirSync(imgs)].map((e) => e.name)
        .filter((n) => n.startsWith("pages-"));
      assertEquals(pagesFiles, [`pages-${pm[0].pages_id}.img`]);
      const taken = pm.slice(1).map((e: { vaddr: unknown; nr_pages: unknown }) => ({
        start: num(e.vaddr),
        end: num(e.vaddr) + num(e.nr_pages) * 4096n,
      }));
      const at = (addr: bigint) =>
        taken.some((t: { start: bigint; end: bigint }) => t.start <= addr && addr < t.end);
      assert(at(BigInt(`0x${r.mem}`)) && at(BigInt(`0x${r.mem}`) + (16n << 20n) - 4096n));
      if (drop) assert(!at(BigInt(`0x${r.drop}`)), "the droppable page is left out");
      const run = await criu(["restore", "-d", "-D", imgs]);
      assertEquals(run.code, 0, run.stderr);
      pid = v.pid;
      assertMatch(await verdict(v), /^PASS$/m);
    } finally {
      await stopVictim(v);
      if (pid) killAll(pid);
    }
  }
});

Deno.test("registers: r12-r15 and xmm5/xmm6 are recorded and left intact", async () => {
  const bin = await buildVictim("regs");
  const v = startVictim([bin, "{out}"]);
  try {
    await waitReport(v);
    await sleep(50);
    const imgs = tmpDir();
    const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-R"]);
    assertEquals(run.code, 0, run.stderr);
    const core = (await critDecodeAll(imgs)).get(`core-${v.pid}.img`)!.entries[0];
    const g = core.thread_info.gpregs;
    assertEquals(num(g.r12), 0x1212121212121212n);
    assertEquals(num(g.r13), 0x1313131313131313n);
    assertEquals(num(g.r14), 0xdeadbeefcafef00dn);
    assertEquals(num(g.r15), 0x0123456789abcdefn);
    const xmm = core.thread_info.fpregs.xmm_space as number[];
    const xmm5 = (BigInt(xmm[21] >>> 0) << 32n) | BigInt(xmm[20] >>> 0);
    const xmm6 = (BigInt(xmm[25] >>> 0) << 32n) | BigInt(xmm[24] >>> 0);
    assertEquals(xmm5, 0xdeadbeefcafef00dn);
    assertEquals(xmm6, 0x0123456789abcdefn);
    await sleep(200);
    assert(!Deno.readTextFileSync(v.out).includes("FAIL"), Deno.readTextFileSync(v.out));
    assertEquals(procState(v.pid), "R");
  } finally {
    await stopVictim(v);
  }
});

Deno.test("dump -R of a python3 process and a shell loop", async () => {
  for (
    const [argv, comm] of [
      [[
        "python3",
        "-c",
        "import time\nopen('{out}','a').write('ready\\n')\nwhile True: time.sleep(0.01)",
      ], "python3"],
      [["sh", "-c", "echo ready >> {out}; i=0; while [ $i -ge 0 ]; do i=$((i+1)); done"], "sh"],
    ] as const
  ) {
    const v = startVictim([...argv]);
    try {
      await waitReport(v);
      const imgs = tmpDir();
      const run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-R", "--display-stats"]);
      assertEquals(run.code, 0, run.stderr);
      assertMatch(run.stdout, /Memory pages written: \d+/);
      const img = await critDecodeAll(imgs);
      assertEquals(img.get(`core-${v.pid}.img`)!.entries[0].tc.comm, comm);
      const written = Number(/Memory pages written: (\d+)/.exec(run.stdout)![1]);
      assertEquals(written * 4096, Deno.statSync(`${imgs}/pages-1.img`).size);
      await sleep(100);
      assert(procState(v.pid) !== undefined && procState(v.pid) !== "Z", `${comm} still running`);
      assertEquals(tracerPid(v.pid), 0);
    } finally {
      await stopVictim(v);
    }
  }
});

Deno.test("page copiers: runs of all sizes land back to back, every byte in place, whoever takes each chunk; a page that cannot be read fails the file by name, or is zeros for a running task", async () => {
  // Our own memory stands for a stopped task's (process_vm_readv and /proc/PID/mem of ourselves).
  const PAGE = 4096;
  const mem = new Uint8Array(24 << 20);
  const base = Deno.UnsafePointer.value(Deno.UnsafePointer.of(mem)!);
  const skip = Number((BigInt(PAGE) - base % BigInt(PAGE)) % BigInt(PAGE));
  const at = (page: number) => skip + page * PAGE;
  for (let p = 0; at(p + 1) <= mem.length; p++) {
    const page = mem.subarray(at(p), at(p + 1));
    page.fill(p % 251);
    new DataView(page.buffer, page.byteOffset).setUint32(0, p, true);
  }
  // One run across many chunks, single pages with holes between, a run cut mid-chunk.
  const spans: [number, number][] = [[0, 1500], [1600, 1]];
  for (let p = 1700; p < 3700; p += 2) spans.push([p, 1]);
  spans.push([4000, 130], [4200, 777]);
  const runs = spans.map(([p, n]) => ({ vaddr: base + BigInt(at(p)), nrPages: n }));
  const dir = tmpDir();
  const want: number[] = spans.flatMap(([p, n]) => Array.from({ length: n }, (_, i) => p + i));
  const bytes = want.length * PAGE;
  const cases = [
    { what: "the dumper alone", count: 0, start: 0, jobs: 1, help: true },
    { what: "one copier alone", count: 1, start: 0, jobs: 1, help: false },
    { what: "two copiers and the dumper", count: 2, start: 0, jobs: 1, help: true },
    // The first job waits; the second starts the copier, which takes both.
    { what: "a copier started late", count: 1, start: bytes + 1, jobs: 2, help: false },
    // A file made beforehand, larger and full of other bytes: written over and cut.
    { what: "into a spare file", count: 1, start: 0, jobs: 1, help: true, spare: true },
  ];
  for (const c of cases) {
    using copiers = new PageCopiers(c.count, c.start);
    const spare = `${dir}/spare`;
    if (c.spare) {
      Deno.writeFileSync(spare, new Uint8Array(bytes + 3 * PAGE).fill(0xee));
      copiers.spare = spare;
    }
    const paths = Array.from({ length: c.jobs }, (_, i) => `${dir}/pages-${c.count}-${i}.img`);
    const written = Promise.all(paths.map((path) => copiers.write(Deno.pid, runs, path, false)));
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (c.help) copiers.help();
    else {
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${c.what}: no file written`)), 20_000);
      });
      await Promise.race([written, late]);
    }
    clearTimeout(timer);
    for (const stats of await written) assertEquals(stats.pages, want.length, c.what);
    if (c.spare) assert(!exists(spare), "the spare was taken");
    for (const path of paths) {
      const file = Deno.readFileSync(path);
      assertEquals(file.length, bytes, `${c.what}: file size`);
      want.forEach((p, i) => {
        const got = file.subarray(i * PAGE, (i + 1) * PAGE);
        const same = got.every((b, j) => b === mem[at(p) + j]);
        assert(same, `${c.what}: page ${i} of the file is not page ${p}`);
      });
    }
  }
  // An address nothing is mapped at (the lowest a mapping may have, not ours).
  using copiers = new PageCopiers(1, 0);
  const gone = [...runs, { vaddr: 0x10000n, nrPages: 1 }];
  const failed = copiers.write(Deno.pid, gone, `${dir}/pages-gone.img`, false);
  copiers.help();
  await assertRejects(() => failed, Error, /\/proc\/\d+\/mem at 0x10000/);
  // Leniently (a pre-dump's running task, which may have unmapped it since): a page of zeros.
  const zeroed = await copiers.write(Deno.pid, gone, `${dir}/pages-lenient.img`, true);
  assertEquals(zeroed.pages, want.length + 1);
  const file = Deno.readFileSync(`${dir}/pages-lenient.img`);
  assert(file.subarray(bytes).every((b) => b === 0), "the page gone is zeros");
  assert(file.subarray(0, PAGE).every((b, j) => b === mem[at(want[0]) + j]), "the rest is there");
});
