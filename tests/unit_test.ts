/**
 * Unit tests for the pure parts: struct layouts, /proc parsers on captured fixtures, pagemap
 * decoding, image framing, the command-line parser, errno naming.
 */
import { create } from "../src/images/protobuf.ts";
import * as nodePath from "node:path";
import { join } from "node:path";
import * as ourPath from "../src/util/path.ts";
import {
  fstype,
  mnt_entrySchema,
  pstree_entrySchema,
  sysctl_entrySchema,
  sysctl_type,
} from "../proto/gen/misc_pb.ts";
import { parseMountinfo } from "../src/util/mountinfo.ts";
import { cgroupRootOf } from "../src/util/cgroup_fs.ts";
import {
  AUTODETECTED_MOUNT,
  bindsPty,
  hasTar,
  hidersOf,
  MountPlanError,
  planMounts,
  planNested,
  planPropagation,
} from "../src/restore/mount_plan.ts";
import { addressOf, close, MS, NR, O, open, pathExists } from "../src/syscalls/mod.ts";
import { exists } from "../src/util/exists.ts";
import { findGadgets } from "../src/tree/gadgets.ts";
import { sysctlWrites } from "../src/net/netns.ts";
import { planSessions } from "../src/restore/sessions.ts";
import { holdersOf } from "../src/tree/stop_hold.ts";
import type { TaskImages } from "../src/restore/images.ts";
import { LazyRanges } from "../src/lazy/ranges.ts";
import { lazyRanges } from "../src/lazy/daemon.ts";
import { keepLazyFillable } from "../src/restore/lazy.ts";
import { fakeSegment, onTheWire, TH } from "../src/net/tcp_segment.ts";
import { windowUpdateSeq } from "../src/net/tcp_repair.ts";
import { ImageWriter, readImage } from "../src/images/image.ts";
import { IdMap } from "../src/tree/userns.ts";
import { fillOps, fillSource, OP } from "../src/restore/memory.ts";
import { decodeBase64, encodeBase64 } from "../src/util/base64.ts";
import { FrameList, Pagemap, type PageRun } from "../src/pagemap/pagemap.ts";
import { classifyVma, VMA, type Vma, vmaAt } from "../src/pagemap/vma.ts";
import { pagemapEntries } from "../src/dump/mm.ts";
import {
  Errno,
  errnoName,
  IOVEC_SIZE,
  libc,
  NO_ZERO_PAGE,
  pageFrames,
  PEEKSIGINFO_ARGS_SIZE,
  REG,
  remotePtr,
  RSEQ_CONFIG_SIZE,
  SIGFRAME,
  SIGINFO_SIZE,
  STACK_T,
  USER_REGS_SIZE,
  UTSNAME,
  withScratchPage,
  XSAVE,
  xstateLayout,
  zeroPagePfn,
} from "../src/syscalls/mod.ts";
import {
  parseAuxv,
  parseFdinfo,
  parseLimits,
  parseMaps,
  parseStat,
  parseStatus,
  parseTimers,
  RLIM_INFINITY,
} from "../src/tree/proc.ts";
import { buildSigframe, restartedRegs, sigframeSize } from "../src/tree/sigframe.ts";
import { assert, assertEquals, assertMatch, assertThrows } from "./assert.ts";
import { buildVictim, critDecodeAll, ROOT, tmpDir } from "./helpers.ts";
import { AIO_EVENT, IOCB } from "../src/syscalls/aio.ts";

const fixture = (name: string) => Deno.readTextFileSync(join(ROOT, "tests/fixtures/proc", name));

Deno.test("struct layouts match the C compiler's", async () => {
  const bin = await buildVictim("layout");
  const out = await new Deno.Command(bin, { stdout: "piped" }).output();
  const c = JSON.parse(new TextDecoder().decode(out.stdout));
  assertEquals(c.user_regs_size, USER_REGS_SIZE);
  assertEquals(c.orig_rax, REG.orig_ax * 8);
  assertEquals(c.rip, REG.ip * 8);
  assertEquals(c.fs_base, REG.fs_base * 8);
  assertEquals(c.gs, REG.gs * 8);
  assertEquals(c.iovec, IOVEC_SIZE);
  assertEquals(c.siginfo, SIGINFO_SIZE);
  assertEquals(c.peeksiginfo_args, PEEKSIGINFO_ARGS_SIZE);
  assertEquals(c.rseq_config, RSEQ_CONFIG_SIZE);
  assertEquals([c.utsname, c.nodename, c.domainname], [
    UTSNAME.size,
    UTSNAME.nodename,
    UTSNAME.domainname,
  ]);
  assertEquals([c.stack_t, c.ss_flags, c.ss_size], [STACK_T.size, STACK_T.flags, STACK_T.ssize]);
  assertEquals(c.fxsave, XSAVE.fxsaveSize);
  assertEquals([c.mxcsr, c.st_space, c.xmm_space, c.padding], [
    XSAVE.mxcsr,
    XSAVE.stSpace,
    XSAVE.xmmSpace,
    XSAVE.padding,
  ]);
  // An AIO request and event (restore/aio.ts makes requests in a task).
  assertEquals(
    [c.iocb, c.aio_lio_opcode, c.aio_fildes, c.aio_buf, c.aio_nbytes, c.io_event],
    [IOCB.size, IOCB.opcode, IOCB.fildes, IOCB.buf, IOCB.nbytes, AIO_EVENT],
  );
  // The frame rt_sigreturn reads (parasite/heal.c goes home through it).
  assertEquals([c.uc_stack, c.uc_mcontext, c.sigcontext], [
    SIGFRAME.ucStack,
    SIGFRAME.ucMcontext,
    SIGFRAME.ucSigmask - SIGFRAME.ucMcontext,
  ]);
  assertEquals(
    [c.sc_r12, c.sc_rdi, c.sc_rsp, c.sc_rip, c.sc_eflags, c.sc_cs, c.sc_ss, c.sc_fpstate],
    [
      SIGFRAME.sc.r12,
      SIGFRAME.sc.di,
      SIGFRAME.sc.sp,
      SIGFRAME.sc.ip,
      SIGFRAME.sc.flags,
      SIGFRAME.sc.cs,
      SIGFRAME.sc.ss,
      SIGFRAME.sc.fpstate,
    ],
  );
});

Deno.test("a home frame restarts an interrupted syscall and carries the FPU state", () => {
  const regs = new BigUint64Array(27);
  const at = (ax: bigint, origAx: bigint) => {
    regs[REG.ax] = BigInt.asUintN(64, ax);
    regs[REG.orig_ax] = BigInt.asUintN(64, origAx);
    regs[REG.ip] = 0x1000n;
    const r = restartedRegs(regs);
    return [BigInt.asIntN(64, r[REG.ax]), r[REG.ip], BigInt.asIntN(64, r[REG.orig_ax])];
  };
  assertEquals(at(-512n, 0n), [0n, 0xffen, -1n], "ERESTARTSYS: read again");
  assertEquals(at(-514n, 34n), [34n, 0xffen, -1n], "ERESTARTNOHAND: pause again");
  assertEquals(at(-516n, 35n), [-4n, 0x1000n, -1n], "ERESTART_RESTARTBLOCK: EINTR");
  assertEquals(at(-11n, 0n), [-11n, 0x1000n, -1n], "a finished syscall keeps its result");
  assertEquals(at(5n, -1n), [5n, 0x1000n, -1n], "not in a syscall");

  const xsave = new Uint8Array(832);
  new DataView(xsave.buffer).setUint32(SIGFRAME.swBytes, SIGFRAME.magic1, true);
  new DataView(xsave.buffer).setUint32(SIGFRAME.swBytes + 16, 832, true);
  xsave[200] = 0x5a;
  const f = buildSigframe({ at: remotePtr(0x7000n), regs, sigmask: 0x4001n, xsave, pretcode: 9n });
  const v = new DataView(f.buffer);
  const fp = Number(v.getBigUint64(8 + SIGFRAME.ucMcontext + SIGFRAME.sc.fpstate, true) - 0x7000n);
  assertEquals(fp % 64, 0, "fpstate aligned to 64");
  assertEquals(f[fp + 200], 0x5a);
  assertEquals(v.getUint32(fp + 832, true), SIGFRAME.magic2, "magic2 after the XSAVE area");
  assertEquals(v.getUint32(fp + SIGFRAME.swBytes + 4, true), 836, "extended size");
  assertEquals(v.getBigUint64(8 + SIGFRAME.ucSigmask, true), 0x4001n);
  assertEquals(v.getBigUint64(0, true), 9n, "pretcode");
  assertEquals(sigframeSize(xsave), f.length);
  assertThrows(
    () => buildSigframe({ at: remotePtr(0x7008n), regs, sigmask: 0n, xsave }),
    /aligned/,
  );
});

Deno.test("a home frame from ptrace's XSAVE area carries it up to the last component it holds, not the largest area the CPU has (rt_sigreturn refuses one larger than the task's own and zeroes the AVX state)", () => {
  const regs = new BigUint64Array(27);
  // What PTRACE_GETREGSET(NT_X86_XSTATE) gives: no fx_sw_bytes magic, room for every component.
  const xsave = new Uint8Array(11008);
  const v = new DataView(xsave.buffer);
  const frameOf = (bv: bigint) => {
    v.setBigUint64(XSAVE.xstateBv, bv, true);
    const f = buildSigframe({ at: remotePtr(0x7000n), regs, sigmask: 0n, xsave });
    const fv = new DataView(f.buffer);
    const fp = Number(
      fv.getBigUint64(8 + SIGFRAME.ucMcontext + SIGFRAME.sc.fpstate, true) - 0x7000n,
    );
    assertEquals(sigframeSize(xsave), f.length);
    return {
      size: fv.getUint32(fp + SIGFRAME.swBytes + 16, true),
      xfeatures: fv.getBigUint64(fp + SIGFRAME.swBytes + 8, true),
      magic2: fv.getUint32(fp + fv.getUint32(fp + SIGFRAME.swBytes + 16, true), true),
    };
  };
  // x87 and SSE only: the legacy area and the header.
  assertEquals(frameOf(0b11n), { size: XSAVE.ymmh, xfeatures: 0b11n, magic2: SIGFRAME.magic2 });
  // With AVX: its upper halves too (AVX is at 576 on every x86-64 CPU, 256 bytes).
  assertEquals(frameOf(0b111n).size, XSAVE.ymmh + 256);
  // The last component this CPU has: up to its end.
  const [bit, last] = [...xstateLayout()].sort((a, b) => a[1].offset - b[1].offset).at(-1)!;
  assertEquals(frameOf(0b111n | (1n << BigInt(bit))).size, last.offset + last.size);
});

Deno.test("/proc/PID/timers: a glibc SIGEV_THREAD timer signals its helper thread", () => {
  const [t, u] = parseTimers(
    "ID: 0\nsignal: 32/0000556fb4c90460\nnotify: signal/tid.20240\nClockID: 1\n" +
      "ID: 1\nsignal: 14/0000000000000000\nnotify: signal/pid.20239\nClockID: 0\n",
  );
  assertEquals([t.notify, t.notifyTid, t.signo, t.clockId], [4, 20240, 32, 1]);
  assertEquals([u.notify, u.notifyTid, u.signo], [0, 0, 14]);
});

Deno.test("/proc parsers read captured fixtures", () => {
  const pid = Number(fixture("pid"));
  const stat = parseStat(fixture("stat"));
  assertEquals(stat.pid, pid);
  assertEquals(stat.comm, "v-state");
  assertEquals(stat.state, "S");
  assert(
    stat.startCode < stat.endCode && stat.argStart < stat.argEnd && stat.envStart < stat.envEnd,
  );
  // A comm with spaces and parentheses ends at the last ')'.
  const odd = parseStat(fixture("stat").replace("(v-state)", "(a) (b c)"));
  assertEquals(odd.comm, "a) (b c");
  assertEquals(odd.ppid, stat.ppid);

  const st = parseStatus(fixture("status"));
  assertEquals(st.umask, 0o27);
  assertEquals(st.uids, [0, 0, 0, 0]);
  assertEquals(st.sigBlk & 1n, 1n);
  assertEquals(st.threads, 1);

  const maps = parseMaps(fixture("smaps"));
  assert(maps.length > 10);
  const stack = maps.find((m) => m.path === "[stack]")!;
  assert(stack.vmFlags.has("gd") && stack.vmFlags.has("rd"));
  assertEquals(classifyVma(stack).status, VMA.AREA_REGULAR | VMA.AREA_STACK | VMA.ANON_PRIVATE);
  const vvar = maps.find((m) => m.path === "[vvar]")!;
  // As criu flags the kernel's special mappings: anonymous private too.
  assertEquals(classifyVma(vvar).status, VMA.AREA_REGULAR | VMA.AREA_VVAR | VMA.ANON_PRIVATE);
  const lib = maps.find((m) => m.path.includes("libc.so"))!;
  assertEquals(classifyVma(lib).status, VMA.AREA_REGULAR | VMA.FILE_PRIVATE);

  const lim = parseLimits(fixture("limits"));
  assertEquals(lim.length, 16);
  assertEquals(lim[7][0], 777n); // RLIMIT_NOFILE set by the victim
  assertEquals(lim[0], [RLIM_INFINITY, RLIM_INFINITY]);

  const fd = parseFdinfo(fixture("fdinfo-3"));
  assert(fd.mntId > 0 && fd.ino > 0);

  const auxv = parseAuxv(Deno.readFileSync(join(ROOT, "tests/fixtures/proc/auxv")));
  // Pairs, without the AT_NULL that ends them (as criu stores them).
  assert(auxv.length % 2 === 0 && auxv.length >= 2 && auxv.at(-2) !== 0n);
  assertThrows(() => parseLimits("Limit\nMax cpu time 1 2\n"), /Malformed/);
});

Deno.test("the zero page's frame is the one pages only read share, and none where each read gets a page of its own (pvm_no_zero_page): never a frame freed for anyone to take", () => {
  const frames = withScratchPage((at) => pageFrames("self", at, 3), false, 3)!;
  const zero = zeroPagePfn();
  assert(frames.every((f) => f > 0n), "frames shown (root)");
  if (frames[0] === frames[1] && frames[1] === frames[2]) assertEquals(zero, frames[0]);
  else {
    assertEquals(new Set(frames).size, 3, "a page each");
    assertEquals(zero, NO_ZERO_PAGE);
  }
});

Deno.test("pagemap scan finds written pages, skips untouched and zero-page ones", () => {
  const len = 8 * 4096;
  const addr = BigInt(libc.mmap(0n, BigInt(len), 3, 0x22, -1, 0n));
  try {
    const view = new Uint8Array(
      Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(addr)!, len),
    );
    view[0] = 1; // page 0 written
    view[2 * 4096] = 1; // pages 2 and 3 written
    view[3 * 4096] = 1;
    void view[5 * 4096]; // page 5 only read: the shared zero page, or one of its own of zeros
    const runs: { vaddr: bigint; nrPages: number }[] = [];
    using pm = new Pagemap(Deno.pid);
    pm.scan(
      addr,
      addr + BigInt(len),
      { skipFilePages: false, zeroPfn: Number(zeroPagePfn()) },
      runs,
    );
    const want = [{ vaddr: addr, nrPages: 1 }, { vaddr: addr + 8192n, nrPages: 2 }];
    // A kernel without the zero page (pvm_no_zero_page) gave page 5 a page: it is taken.
    if (zeroPagePfn() === NO_ZERO_PAGE) want.push({ vaddr: addr + 5n * 4096n, nrPages: 1 });
    assertEquals(runs, want);
    assertEquals(pm.scanned, 8);
  } finally {
    libc.munmap(addr, BigInt(len));
  }
});

Deno.test("pagemap scan: the kernel's filter (PAGEMAP_SCAN) takes the pages the page-by-page walk takes", () => {
  const PAGE = 4096, N = 64;
  const anon = BigInt(libc.mmap(0n, BigInt(N * PAGE), 3, 0x22, -1, 0n));
  const path = join(tmpDir(), "mapped");
  Deno.writeFileSync(path, new Uint8Array(N * PAGE).fill(7));
  const fd = open(path, O.RDWR);
  const file = BigInt(libc.mmap(0n, BigInt(N * PAGE), 3, 0x02, /* MAP_PRIVATE */ fd, 0n));
  try {
    const view = (addr: bigint) =>
      new Uint8Array(
        Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(addr)!, N * PAGE),
      );
    const a = view(anon), f = view(file);
    let sum = 0;
    for (let p = 0; p < N; p++) {
      const kind = (p * 7 + (p >> 3)) % 5;
      // Written (anonymous, or copied on write), read (the zero page, or page cache), untouched.
      if (kind === 0 || kind === 3) a[p * PAGE] = f[p * PAGE] = 1;
      else if (kind === 1) sum += a[p * PAGE] + f[p * PAGE];
    }
    // Guard regions where the kernel has them (6.13): a run of pages, written ones among them.
    const MADV_GUARD_INSTALL = 102;
    libc.syscall(
      BigInt(NR.madvise),
      anon + 20n * 4096n,
      6n * 4096n,
      BigInt(MADV_GUARD_INSTALL),
      0n,
      0n,
      0n,
    );
    assert(sum >= 0);
    using pm = new Pagemap(Deno.pid);
    // The file's pages all there (read ones, and their neighbours read around them), but only
    // those copied on write are the task's own.
    for (const [start, skipFilePages] of [[anon, false], [file, true], [file, false]] as const) {
      const policy = { skipFilePages, zeroPfn: Number(zeroPagePfn()) };
      const kernel: PageRun[] = [], walked: PageRun[] = [];
      pm.scan(start, start + BigInt(N * PAGE), policy, kernel);
      pm.scan(start, start + BigInt(N * PAGE), { ...policy, frames: new FrameList() }, walked);
      assertEquals(kernel, walked, `${start === anon ? "anonymous" : "file"} ${skipFilePages}`);
      // Not one run: the zero, untouched and guard pages (copied ones, for the file) are left.
      if (start === anon || skipFilePages) assert(kernel.length > 8, `${kernel.length} runs`);
    }
    assertEquals(pm.scanned, 6 * N);
  } finally {
    libc.munmap(anon, BigInt(N * PAGE));
    libc.munmap(file, BigInt(N * PAGE));
    close(fd);
  }
});

Deno.test("image framing: round trip, wrong magic, truncation, impossible size", () => {
  const dir = tmpDir();
  const w = new ImageWriter(dir, "pstree.img", "PSTREE");
  w.entry(
    pstree_entrySchema,
    create(pstree_entrySchema, { pid: 7, ppid: 0, pgid: 7, sid: 7, threads: [7] }),
  );
  w.close();
  const path = join(dir, "pstree.img");
  assertEquals(Deno.statSync(path).mode! & 0o777, 0o600);
  const e = readImage(path, "PSTREE", pstree_entrySchema);
  assertEquals(e.length, 1);
  assertEquals(e[0].message.threads, [7]);
  assertThrows(
    () => readImage(path, "CORE", pstree_entrySchema),
    /has magic 0x50273030 at offset 4, expected/,
  );
  const bytes = Deno.readFileSync(path);
  Deno.writeFileSync(path, bytes.subarray(0, bytes.length - 2));
  assertThrows(() => readImage(path, "PSTREE", pstree_entrySchema), /truncated at offset 8/);
  const huge = new Uint8Array(12);
  huge.set(bytes.subarray(0, 8));
  new DataView(huge.buffer).setUint32(8, 0xffffffff, true);
  Deno.writeFileSync(path, huge);
  assertThrows(() => readImage(path, "PSTREE", pstree_entrySchema), /impossible size/);
  assertThrows(
    () => readImage(join(dir, "none.img"), "PSTREE", pstree_entrySchema),
    /Missing image/,
  );
});

Deno.test("the crit judge rejects an image it cannot decode", async () => {
  const dir = tmpDir();
  Deno.writeFileSync(
    join(dir, "core-1.img"),
    new Uint8Array([0x19, 0x43, 0x56, 0x54, 1, 2, 3, 4, 9, 0, 0, 0, 1]),
  );
  let failed = false;
  try {
    await critDecodeAll(dir);
  } catch (e) {
    failed = /core-1\.img/.test((e as Error).message);
  }
  assert(failed, "crit must fail on a corrupt image");
});

Deno.test("errno errors name the call, the target and the errno", () => {
  assertEquals(errnoName(3), "ESRCH");
  const e = new Errno("ptrace(PTRACE_SEIZE)", 3, "task 42");
  assertEquals(e.message, "Cannot ptrace(PTRACE_SEIZE) task 42: no such process (ESRCH)");
});

Deno.test("the segment that last updated the send window is put back no later than the receive window's end, which the kernel checks (zdtm's socket-tcpbuf-local dumped one beyond)", () => {
  // As dumped: an out-of-order segment 196449 bytes ahead updated it, the window shrank since.
  assertEquals(windowUpdateSeq(2397224901, 2397028452, 131072), 2397028452 + 131072);
  // Within the window, or behind what was received: as it was.
  assertEquals(windowUpdateSeq(2397028452, 2397028452, 131072), 2397028452);
  assertEquals(windowUpdateSeq(2397000000, 2397028452, 131072), 2397000000);
  assertEquals(windowUpdateSeq(2397159524, 2397028452, 131072), 2397159524);
  // Across the wrap of the sequence space.
  assertEquals(windowUpdateSeq(0x00000100, 0xfffff000, 0x1000), 0x00000000);
  assertEquals(windowUpdateSeq(0xfffff800, 0xfffff000, 0x1000), 0xfffff800);
});

Deno.test("a forged TCP segment carries a checksum that verifies, in IPv4 and IPv6", () => {
  // One's-complement sum over pseudo-header and segment, checksum included, must be 0xffff.
  const verify = (pseudo: Uint8Array, tcp: Uint8Array) => {
    let sum = 0;
    for (const p of [pseudo, tcp]) {
      for (let i = 0; i < p.length; i += 2) sum += (p[i] << 8) | p[i + 1];
    }
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    return sum;
  };
  const seg = { seq: 0xfffffff0, ack: 123456789, flags: TH.ACK | TH.FIN, window: 70000 };
  const v4 = {
    family: 2,
    srcAddr: [0x0100007f],
    srcPort: 80,
    dstAddr: [0x0a00a8c0],
    dstPort: 40001,
  };
  const p4 = fakeSegment(v4, seg);
  assertEquals(p4.length, 40);
  assertEquals([...p4.subarray(12, 20)], [192, 168, 0, 10, 127, 0, 0, 1], "from the peer to us");
  const tcp4 = p4.subarray(20);
  assertEquals(new DataView(tcp4.buffer, 20).getUint16(0), 40001);
  assertEquals(new DataView(tcp4.buffer, 20).getUint32(4), 0xfffffff0);
  assertEquals(new DataView(tcp4.buffer, 20).getUint16(14), 0xffff, "window clamped");
  const ph4 = new Uint8Array([...p4.subarray(12, 20), 0, 6, 0, 20]);
  assertEquals(verify(ph4, tcp4), 0xffff);

  const v6 = {
    family: 10,
    srcAddr: [0, 0, 0, 0x01000000],
    srcPort: 80,
    dstAddr: [0x000080fe, 0, 0, 0x02000000],
    dstPort: 5,
  };
  const p6 = fakeSegment(v6, seg);
  assertEquals(p6.length, 60);
  const ph6 = new Uint8Array(40);
  ph6.set(p6.subarray(8, 40));
  ph6[35] = 20;
  ph6[39] = 6;
  assertEquals(verify(ph6, p6.subarray(40)), 0xffff);
});

Deno.test("an IPv6 socket talking to an IPv4 peer sends IPv4 segments", () => {
  const mapped = (v4: number) => [0, 0, 0xffff0000, v4];
  const c = {
    family: 10,
    srcAddr: mapped(0x0100007f),
    srcPort: 1,
    dstAddr: mapped(0x0200007f),
    dstPort: 2,
  };
  assertEquals(onTheWire(c), { ...c, family: 2, srcAddr: [0x0100007f], dstAddr: [0x0200007f] });
  const v6 = { ...c, srcAddr: [0, 0, 0, 0x01000000] };
  assertEquals(onTheWire(v6), v6, "a real IPv6 peer stays IPv6");
  assertEquals(fakeSegment(onTheWire(c), { seq: 1, ack: 2, flags: TH.ACK, window: 9 })[0] >> 4, 4);
});

Deno.test("a sysctl the dump could not read is not written back as 0", () => {
  const int = (iarg?: number) => create(sysctl_entrySchema, { type: sysctl_type.CTL_32, iarg });
  const str = (sarg?: string) => create(sysctl_entrySchema, { type: sysctl_type.CTL_STR, sarg });
  const names = ["a", "b", "c", "mtu", "s", "t"];
  const list = [int(), int(0), int(7), int(1500), str("x"), str()];
  assertEquals(sysctlWrites("/d", names, list), [
    ["/d/b", "0"],
    ["/d/c", "7"],
    ["/d/mtu", "1500"],
    ["/d/s", "x"],
  ]);
});

Deno.test("mountinfo: flags, propagation, super block flags and escaped names", () => {
  const [m] = parseMountinfo(
    "36 35 98:3 /a\\040b /mnt/x\\011y ro,nosuid,noatime shared:7 master:2 - ext4 /dev/sda3 " +
      "ro,sync,errors=continue\n",
  );
  assertEquals(m.id, 36);
  assertEquals(m.parentId, 35);
  assertEquals(m.kdev, 98 * 0x100000 + 3);
  assertEquals(m.root, "/a b");
  assertEquals(m.mountpoint, "/mnt/x\ty");
  assertEquals(m.flags, MS.RDONLY | MS.NOSUID | MS.NOATIME | MS.SHARED | MS.SLAVE);
  assertEquals([m.sharedId, m.masterId], [7, 2]);
  assertEquals(m.sbFlags, MS.RDONLY | MS.SYNCHRONOUS);
  assertEquals(m.options, "errors=continue");
  // Neither relatime nor noatime: strictatime.
  assertEquals(parseMountinfo("1 0 0:1 / / rw - tmpfs t rw")[0].flags, MS.STRICTATIME);
});

Deno.test("mount plan: parents and sources first, binds of what a mount shows, the rest refused by name", () => {
  const e = (
    mntId: number,
    parentMntId: number,
    mountpoint: string,
    type: number,
    rootDev: number,
    root = "/",
    extra: Record<string, unknown> = {},
  ) =>
    create(mnt_entrySchema, {
      mntId,
      parentMntId,
      mountpoint,
      fstype: type,
      rootDev,
      root,
      source: "s",
      ...extra,
    });
  // A bind of a tmpfs's subdirectory listed before the tmpfs, a child before its parent.
  const plan = planMounts([
    e(10, 1, "/", fstype.UNSUPPORTED, 100, "/rootfs"),
    e(14, 13, "/tmp/x/y", fstype.PROC, 300),
    e(12, 10, "/mnt", fstype.TMPFS, 200, "/sub"),
    e(11, 10, "/tmp", fstype.TMPFS, 200),
    e(13, 11, "/tmp/x", fstype.UNSUPPORTED, 100, "/rootfs/data"),
    e(15, 10, "/ext", fstype.UNSUPPORTED, 400, "/", { extKey: "K" }),
  ]);
  assertEquals(plan.map((s) => `${s.entry.mntId}:${s.how}`), [
    "10:root",
    "11:new",
    "12:bind",
    "13:bind",
    "14:new",
    "15:external",
  ]);
  const bind = plan.find((s) => s.entry.mntId === 13)!;
  assertEquals(bind.how === "bind" && [bind.from.mntId, bind.sub], [10, "/data"]);
  const root = e(1, 0, "/", fstype.UNSUPPORTED, 100, "/rootfs");
  for (
    const [m, why] of [
      [e(2, 1, "/d", fstype.UNSUPPORTED, 500), /not supported; name it external/],
      [e(2, 1, "/d", fstype.UNSUPPORTED, 100, "/elsewhere"), /outside the namespace's root/],
      [e(2, 1, "/d", fstype.TMPFS, 600, "/part"), /shows only \/part/],
    ] as const
  ) {
    let err: unknown;
    try {
      planMounts([root, m]);
    } catch (x) {
      err = x;
    }
    assert(err instanceof MountPlanError, `${m.mountpoint} refused`);
    assertMatch((err as Error).message, why);
  }
  // /dev/console bound from a pty of the namespace's own devpts: the pty made with it; not in
  // a nested namespace (its terminals come after its mounts).
  const console = planMounts([
    root,
    e(3, 1, "/dev/pts", fstype.DEVPTS, 700),
    e(4, 1, "/dev/console", fstype.DEVPTS, 700, "/0"),
  ]);
  assert(bindsPty(console[2]), "the console binds a pty");
  assertThrows(
    () =>
      planNested([root, e(3, 1, "/dev/pts", fstype.DEVPTS, 700)], [
        create(mnt_entrySchema, { ...root, mntId: 21 }),
        e(23, 21, "/dev/pts", fstype.DEVPTS, 700),
        e(24, 21, "/dev/console", fstype.DEVPTS, 700, "/0"),
      ]),
    /a bind of pty \/0 of a devpts, whose terminals come after its mounts/,
  );
  // Its ptmx is there from the start (LXC binds it over /dev/ptmx).
  planMounts([
    root,
    e(3, 1, "/dev/pts", fstype.DEVPTS, 700),
    e(4, 1, "/dev/ptmx", fstype.DEVPTS, 700, "/ptmx"),
  ]);
});

Deno.test("mount propagation plan: a group set from the member that shows the others, slaves joined to their master then made slaves, masters outside joined from the external mount or root they are binds of, else refused", () => {
  const e = (mntId: number, root: string, sharedId: number, masterId = 0, dev = 7) =>
    create(mnt_entrySchema, {
      mntId,
      root,
      sharedId,
      masterId,
      rootDev: dev,
      mountpoint: `/m${mntId}`,
    });
  const steps = planPropagation([
    e(1, "/", 0),
    e(3, "/sub", 5), // a peer of 2, listed first
    e(2, "/", 5),
    e(4, "/", 0, 5), // a slave of group 5
    e(6, "/", 9, 5), // a shared slave of group 5
  ]);
  const show = steps.map((s) =>
    s.how === "join" ? `join ${s.from.mntId}>${s.entry.mntId}` : `${s.how} ${s.entry.mntId}`
  );
  assertEquals(show, [
    "shared 2",
    "join 2>3",
    "join 2>6",
    "slave 6",
    "shared 6",
    "join 2>4",
    "slave 4",
  ]);
  // A master outside: joined from what the restore is given, an external mount it is a bind
  // of, else the root; a mount of another file system is refused.
  const ext = create(mnt_entrySchema, { ...e(8, "/data", 0, 77, 9), extKey: "EXT" });
  const outside = planPropagation([
    e(1, "/", 0, 66),
    ext,
    e(10, "/data/x", 0, 77, 9),
    e(11, "/srv", 0, 66),
  ]).map((s) => s.how === "outsideSlave" ? `${s.source.mntId}>${s.entry.mntId}` : s.how);
  assertEquals(outside, ["1>1", "8>8", "8>10", "1>11"]);
  assertThrows(
    () => planPropagation([e(1, "/", 0), e(2, "/", 0, 77, 8)]),
    /outside the namespace, and it is a bind of neither an external mount nor the root/,
  );
  assertThrows(
    () => planPropagation([e(1, "/a", 3), e(2, "/b", 3)]),
    /none shows all the others/,
  );
});

Deno.test("--cgroup-root: a hierarchy's own root, else the global one", () => {
  const opts = ["/all", "cpu:/c", "name=systemd:/s"];
  assertEquals(cgroupRootOf(opts, "cpu,cpuacct"), "/c");
  assertEquals(cgroupRootOf(opts, "name=systemd"), "/s");
  assertEquals(cgroupRootOf(opts, "memory"), "/all");
  assertEquals(cgroupRootOf(["cpu:/c"], ""), undefined);
});

Deno.test("mount plan: a mount hidden by one made later above its place (overmounted) is made before it, even when listed after it or waiting for its source", () => {
  const e = (mntId: number, parentMntId: number, mountpoint: string, rootDev: number, root = "/") =>
    create(mnt_entrySchema, {
      mntId,
      parentMntId,
      mountpoint,
      fstype: fstype.TMPFS,
      rootDev,
      root,
      source: "s",
    });
  const top = create(mnt_entrySchema, {
    mntId: 10,
    parentMntId: 1,
    mountpoint: "/",
    rootDev: 1,
    root: "/r",
  });
  // /a/b, then /a over it, then /a again on that, then /a/b on the top /a (tempfs_overmounted).
  const stacked = [
    top,
    e(11, 10, "/a/b", 11),
    e(12, 10, "/a", 12),
    e(13, 12, "/a", 13),
    e(14, 13, "/a/b", 14),
  ];
  // (The last /a/b lies on what hides the first: made after it anyway.)
  assertEquals(hidersOf(stacked, stacked[1]).map((m) => m.mntId), [12, 13]);
  assertEquals(hidersOf(stacked, stacked[4]).map((m) => m.mntId), []);
  assertEquals(planMounts(stacked).map((s) => s.entry.mntId), [10, 11, 12, 13, 14]);
  // A copy propagated below a mount already there (overmount_with_shared_parent), listed
  // after it: made before it all the same.
  const propagated = [top, e(32, 10, "/a", 12), e(33, 32, "/a/c", 13), e(34, 10, "/a/b/c", 13)];
  assertEquals(planMounts(propagated).map((s) => s.entry.mntId), [10, 34, 32, 33]);
  // zdtm's mntns_remap: /t/1 a bind of tmpfs /t's /1, /t/1/a a bind of its /1/a on it (peer
  // group 2) and tmpfs 41 on that; tmpfs 40 moved over /t/1, with /1/a bound on it too and 41
  // propagated on that. 40 hides 68 and 70, not 71, which is reached through 40: 68 came out
  // as hiding 71 by their places, and nothing could be made first.
  const remap = [
    top,
    e(65, 10, "/t", 39),
    e(66, 65, "/t/1", 39, "/1"),
    e(67, 66, "/t/1", 40),
    e(68, 66, "/t/1/a", 39, "/1/a"),
    e(69, 67, "/t/1/a", 39, "/1/a"),
    e(70, 68, "/t/1/a/c", 41),
    e(71, 69, "/t/1/a/c", 41),
  ];
  assertEquals(hidersOf(remap, remap[7]).map((m) => m.mntId), []);
  assertEquals(hidersOf(remap, remap[4]).map((m) => m.mntId), [67]);
  assertEquals(planMounts(remap).map((s) => s.entry.mntId), [10, 65, 66, 68, 70, 67, 69, 71]);
  // /x/y, a bind of /t's file system listed before /t, is hidden by /x: made after /t, and
  // /x after it.
  const plan = planMounts([
    top,
    e(21, 10, "/x/y", 200, "/sub"),
    e(22, 10, "/x", 300),
    e(23, 10, "/t", 200),
  ]);
  assertEquals(plan.map((s) => `${s.entry.mntId}:${s.how}`), [
    "10:root",
    "23:new",
    "21:bind",
    "22:new",
  ]);
});

Deno.test("mount plan: a file system enabled by name (--enable-fs, ramfs) is mounted anew, a ramfs filled from its tar", () => {
  const root = create(mnt_entrySchema, { mntId: 1, parentMntId: 0, mountpoint: "/", root: "/r" });
  const fs = (mntId: number, fsname: string) =>
    create(mnt_entrySchema, {
      mntId,
      parentMntId: 1,
      mountpoint: `/${fsname}`,
      root: "/",
      fstype: fstype.AUTO,
      fsname,
      rootDev: 100 + mntId,
    });
  const steps = planMounts([root, fs(2, "hugetlbfs"), fs(3, "ramfs")]);
  assertEquals(steps.map((s) => s.how === "new" ? s.fs : s.how), ["root", "hugetlbfs", "ramfs"]);
  assertEquals(steps.map((s) => hasTar(s.entry)), [false, false, true]);
});

Deno.test("mount plan: cgroup mounts at the root of the tree's cgroup namespace are made anew inside it, even where found bound from criu's namespace; others are not", () => {
  const root = create(mnt_entrySchema, { mntId: 1, parentMntId: 0, mountpoint: "/", root: "/r" });
  const cg = (mntId: number, type: number, options: string, root: string) =>
    create(mnt_entrySchema, {
      mntId,
      parentMntId: 1,
      mountpoint: `/cg${mntId}`,
      root,
      fstype: type,
      options,
      rootDev: 100 + mntId,
      extKey: AUTODETECTED_MOUNT,
      source: `/sys/fs/cgroup/x${root}`,
    });
  const entries = [
    root,
    cg(2, fstype.CGROUP, "memory", "/lxc.payload.c"),
    cg(3, fstype.CGROUP, "cpu,cpuacct", "/lxc.payload.c"),
    cg(4, fstype.CGROUP, "name=systemd", "/lxc.payload.c"),
    cg(5, fstype.CGROUP2, "", "/lxc.payload.c"),
    // Below the namespace's root: a bind of a part of the hierarchy stays external.
    cg(6, fstype.CGROUP, "memory", "/lxc.payload.c/sub"),
  ];
  const roots = new Map([
    ["memory", "/lxc.payload.c"],
    ["cpu,cpuacct", "/lxc.payload.c"],
    ["name=systemd", "/lxc.payload.c"],
    ["", "/lxc.payload.c"],
  ]);
  assertEquals(planMounts(entries, roots).map((s) => s.how === "new" ? s.fs : s.how), [
    "root",
    "cgroup",
    "cgroup",
    "cgroup",
    "cgroup2",
    "external",
  ]);
  // Without a cgroup namespace of its own, they are what the dump found.
  assertEquals(planMounts(entries).map((s) => s.how), [
    "root",
    "external",
    "external",
    "external",
    "external",
    "external",
  ]);
});

Deno.test("nested mount namespace plan (systemd's PrivateTmp): copies of the parent's, one gone, binds of its own, slaves of what they copied with groups of their own; peers of the parent's joined to them again", () => {
  const m = (
    mntId: number,
    parentMntId: number,
    mountpoint: string,
    rootDev: number,
    root: string,
    sharedId: number,
    masterId = 0,
  ) =>
    create(mnt_entrySchema, { mntId, parentMntId, mountpoint, rootDev, root, sharedId, masterId });
  const parent = [
    m(10, 1, "/", 8, "/rootfs", 2),
    m(11, 10, "/run", 9, "/", 18),
    m(12, 11, "/run/cred", 7, "/", 31),
  ];
  const nested = [
    m(20, 5, "/", 8, "/rootfs", 35, 2),
    m(21, 20, "/run", 9, "/", 63, 18),
    m(22, 20, "/tmp", 8, "/rootfs/tmp/private", 67, 2),
    m(23, 21, "/run/credentials", 9, "/systemd/inaccessible", 65, 18),
  ];
  const plan = planNested(parent, nested);
  assertEquals([...plan.copies].map(([e, o]) => `${e.mntId}<${o.mntId}`), ["20<10", "21<11"]);
  assertEquals(plan.umount.map((e) => e.mntId), [12]);
  assertEquals(
    plan.extra.map((s) => s.how === "bind" ? `${s.entry.mntId}<${s.from.mntId}${s.sub}` : s.how),
    ["22<20/tmp/private", "23<21/systemd/inaccessible"],
  );
  // Every master is already what the copy or the bind receives from: only groups of their own.
  assertEquals(
    plan.propagation.map((s) => `${s.how} ${s.entry.mntId}`),
    ["shared 20", "shared 21", "shared 22", "shared 23"],
  );
  // A root of its own (pivot_root): bound from what a mount of the parent shows, or made
  // anew, the rest made on it; one of neither kind refused.
  const pivoted = planNested(parent, [
    m(20, 5, "/", 8, "/rootfs/srv/c", 0),
    m(21, 20, "/run", 9, "/c", 0),
  ]);
  assertEquals(pivoted.pivot?.mntId, 20);
  assertEquals([pivoted.copies.size, pivoted.umount.length], [0, 0]);
  assertEquals(
    pivoted.extra.map((s) => s.how === "bind" ? `${s.entry.mntId}<${s.from.mntId}${s.sub}` : s.how),
    ["20<10/srv/c", "21<11/c"],
  );
  // Slaves of what the copies they were bound from receive from: made private.
  assertEquals(
    pivoted.propagation.map((s) => `${s.how} ${s.entry.mntId}`),
    ["private 20", "private 21"],
  );
  const tmpfs = create(mnt_entrySchema, {
    mntId: 30,
    parentMntId: 5,
    mountpoint: "/",
    rootDev: 40,
    root: "/",
    fstype: fstype.TMPFS,
  });
  assertEquals(planNested(parent, [tmpfs]).extra.map((s) => s.how), ["new"]);
  assertThrows(
    () => planNested(parent, [m(20, 5, "/", 8, "/elsewhere", 0)]),
    /the root of a nested mount namespace again \(pivot_root in it\): mount 20 .* is neither made anew nor a bind/,
  );
  // Copies left in their parent's groups (unshare without rslave), and a bind of one: joined
  // to the parent's mount again; a peer no mount of the parent shows whole is refused.
  const peers = planNested(parent, [
    m(20, 5, "/", 8, "/rootfs", 2),
    m(21, 20, "/run", 9, "/", 18),
    m(22, 20, "/srv", 8, "/rootfs/srv", 2),
  ]);
  assertEquals(
    peers.propagation.map((s) =>
      s.how === "joinParent" ? `${s.from.mntId}>${s.entry.mntId}` : `${s.how} ${s.entry.mntId}`
    ),
    ["private 20", "10>20", "private 21", "11>21", "private 22", "10>22"],
  );
  assertThrows(
    () =>
      planNested(parent, [m(20, 5, "/", 8, "/rootfs", 2), m(22, 20, "/srv", 8, "/rootfs/srv", 18)]),
    /a peer of mounts of its parent namespace \(shared:18\), none of which shows all it shows/,
  );
});

Deno.test("session plan: children kept in a session their parent left are made before its setsid, orphans through helpers handed to their reaper (a zombie leader's too), the rest refused by name", () => {
  const t = (pid: number, ppid: number, sid: number, extra: Record<string, unknown> = {}) =>
    ({
      pstree: { pid, ppid, pgid: sid, sid },
      zombie: false,
      core: { tc: { childSubreaper: false }, threadCore: {} },
      ...extra,
    }) as unknown as TaskImages;
  // 1 is the init; 2 left session 1 after making 3 (still in 1); 6 and 7 were handed to 1,
  // from sessions 8 (its leader gone) and 2.
  const tasks = [
    t(1, 0, 1),
    t(2, 1, 2),
    t(3, 2, 1),
    t(6, 1, 8),
    t(7, 1, 2),
  ];
  const plan = planSessions(tasks, true);
  assertEquals([...plan.early], [[2, [3]]]);
  assertEquals(plan.helpers, [
    { sid: 8, maker: 1, pid: 8, members: [6] },
    { sid: 2, maker: 2, pid: undefined, members: [7] },
  ]);
  assertEquals([...plan.byHelper], [6, 7]);
  // Without a PID namespace of its own, an orphan would go outside the tree.
  assertThrows(() => planSessions(tasks, false), /would not be the reaper/);
  // A subreaper between the helper and the init the task went to: it becomes one after.
  const sub = [t(1, 0, 1), t(2, 1, 2, { core: { tc: { childSubreaper: true } } }), t(7, 1, 2)];
  assertEquals([...planSessions(sub, true).earlySubreapers], []);
  // A zombie leader makes its session's helpers (it lives while the tree is made).
  const zombie = [t(1, 0, 1), t(2, 1, 2, { zombie: true }), t(7, 1, 2)];
  assertEquals(planSessions(zombie, true).helpers, [
    { sid: 2, maker: 2, pid: undefined, members: [7] },
  ]);
  // A child left in a session by a parent that is not its leader cannot be made so.
  const stray = [t(1, 0, 1), t(2, 1, 1), t(3, 2, 4)];
  assertThrows(() => planSessions(stray, true), /is in session 1/);
});

Deno.test("the hold on a dump's connections: the processes holding them, or all when one is held by none (in flight)", () => {
  const holders = new Map([[10, new Set([1, 2])], [11, new Set([3])]]);
  assertEquals(holdersOf(holders, [10]), new Set([1, 2]));
  assertEquals(holdersOf(holders, [10, 11]), new Set([1, 2, 3]));
  assertEquals(holdersOf(holders, [10, 12]), undefined);
});

Deno.test("an id map of several extents turns ids both ways, and knows the ids it does not map", () => {
  const m = IdMap.parse("         0     100000       1000\n      1000     201000       1000\n");
  assertEquals([m.inside(100000), m.inside(100999), m.inside(201000), m.inside(201999)], [
    0,
    999,
    1000,
    1999,
  ]);
  assertEquals([m.inside(0), m.inside(101000), m.inside(202000)], [
    undefined,
    undefined,
    undefined,
  ]);
  assertEquals([m.outside(0), m.outside(1500), m.outside(2000)], [100000, 201500, undefined]);
  assertEquals(m.toString(), "0 100000 1000\n1000 201000 1000\n");
});

Deno.test("lazy ranges: a fault takes its pages out of a range, splitting it; mremap moves what is left (keeping where its data were), munmap drops it, a fork's copy is its own", () => {
  const K = 0x1000n;
  const r = new LazyRanges([{ start: 10n * K, end: 20n * K, img: 10n * K }]);
  assertEquals(r.take(12n * K, 3n * K), { start: 12n * K, len: 3n * K, img: 12n * K });
  assertEquals(r.list(), [
    { start: 10n * K, end: 12n * K, img: 10n * K },
    { start: 15n * K, end: 20n * K, img: 15n * K },
  ]);
  assertEquals(r.take(13n * K, K), undefined);
  assert(r.has(19n * K) && !r.has(20n * K) && !r.has(14n * K));
  const child = r.clone();
  // [16, 18) moves to [100, 102): its data are still those dumped at 16.
  r.remap(16n * K, 100n * K, 2n * K);
  assertEquals(r.list(), [
    { start: 10n * K, end: 12n * K, img: 10n * K },
    { start: 15n * K, end: 16n * K, img: 15n * K },
    { start: 18n * K, end: 20n * K, img: 18n * K },
    { start: 100n * K, end: 102n * K, img: 16n * K },
  ]);
  r.drop(11n * K, 101n * K);
  assertEquals(r.list(), [
    { start: 10n * K, end: 11n * K, img: 10n * K },
    { start: 101n * K, end: 102n * K, img: 17n * K },
  ]);
  assertEquals(child.bytes, 7n * K);
  // Moved onto what was there: that is gone.
  child.remap(10n * K, 16n * K, 2n * K);
  assertEquals(child.list(), [
    { start: 15n * K, end: 16n * K, img: 15n * K },
    { start: 16n * K, end: 18n * K, img: 10n * K },
    { start: 18n * K, end: 20n * K, img: 18n * K },
  ]);
  assertEquals(child.takeFirst(100n * K), { start: 15n * K, len: K, img: 15n * K });
  child.putBack({ start: 15n * K, len: K, img: 15n * K });
  assertEquals(child.bytes, 5n * K);
});

Deno.test("lazy ranges of a task: only its PE_LAZY pages, cut where its mappings end, none in a mapping a lazy restore cannot fill", () => {
  const K = 0x1000n;
  // Private anonymous memory (AREA_REGULAR | ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS); the
  // third a private mapping of shared memory (ANON_SHARED), which a lazy restore cannot fill.
  const vma = (start: bigint, end: bigint, status = 0x201) =>
    ({ start, end, status, flags: 0x22 }) as never;
  const ranges = lazyRanges({
    pid: 1,
    vmas: [vma(0n, 4n * K), vma(4n * K, 8n * K), vma(8n * K, 10n * K, 0x101)],
    pagemap: [
      { vaddr: 0n, nrPages: 1, flags: 4 },
      { vaddr: K, nrPages: 9, flags: 6 },
    ],
    pagesPaths: [],
    pageFile: [],
    pageLevel: [0, 0],
    pageOffsets: [],
  });
  assertEquals(ranges, [
    { start: K, end: 4n * K, img: K },
    { start: 4n * K, end: 8n * K, img: 4n * K },
  ]);
});

Deno.test("a lazy restore fills itself the lazy pages of a mapping it cannot fill page by page: the entry is cut there, that part loses PE_LAZY, its offset in the pages file follows", () => {
  const K = 0x1000n;
  const task = {
    mm: {
      vmas: [
        { start: 0n, end: 2n * K, status: 0x201, flags: 0x22 },
        { start: 2n * K, end: 4n * K, status: 0x101, flags: 0x22 },
      ],
    },
    pagemap: [{ vaddr: 0n, nrPages: 4, flags: 6 }],
    pageFile: [1],
    pageOffsets: [8192],
    pageLevel: [1],
  } as unknown as TaskImages;
  keepLazyFillable(task);
  assertEquals(task.pagemap, [
    { vaddr: 0n, nrPages: 2, flags: 6 },
    { vaddr: 2n * K, nrPages: 2, flags: 4 },
  ]);
  assertEquals([task.pageFile, task.pageOffsets, task.pageLevel], [[1, 1], [8192, 16384], [
    1,
    1,
  ]]);
});

Deno.test("util/path: POSIX paths as node:path works them out", () => {
  const cases = [
    "",
    ".",
    "..",
    "/",
    "//",
    "a",
    "a/",
    "a//",
    "/a",
    "/a/",
    "//a",
    "a/b",
    "a//b",
    "a/b/",
    "/a/./b",
    "/a/../b",
    "a/../..",
    "../a",
    "./a",
    "a/.",
    "/..",
    "/../a",
    "x//y///z/",
  ];
  for (const c of cases) {
    for (const f of ["normalize", "dirname", "basename", "isAbsolute"] as const) {
      assertEquals(ourPath[f](c), nodePath[f](c), `${f}(${JSON.stringify(c)})`);
    }
    for (const d of cases) {
      assertEquals(ourPath.join(c, d), nodePath.join(c, d), `join(${c}, ${d})`);
      assertEquals(ourPath.resolve(c, d), nodePath.resolve(c, d), `resolve(${c}, ${d})`);
    }
  }
  assertEquals(ourPath.join(), nodePath.join());
  assertEquals(ourPath.resolve(), nodePath.resolve());
  assertEquals(ourPath.fileURLToPath("file:///tmp/a%20b/c.ts"), "/tmp/a b/c.ts");
});

Deno.test("memory fills split in two halves at a page, the first the helper thread's; small ones, or with no room for the thread, filled in turn", () => {
  const MiB = 1n << 20n;
  const fills = [
    { start: 0x10000000n, end: 0x10000000n + 10n * MiB, fd: 7, off: 0n },
    { start: 0x40000000n, end: 0x40000000n + 31n * MiB, fd: 7, off: 10n * MiB },
  ];
  const helper = { stackTop: 0x1000n, state: 0x2000n };
  const ops = fillOps(fills, helper);
  // Each range read; the thread's ops counted in SPAWN.
  const reads = (from: number, to: number) =>
    ops.slice(from, to).filter((o) => o.code === OP.PREAD).map((o) => o.args.slice(1));
  assertEquals(ops[0].code, OP.SPAWN);
  assertEquals(ops[0].args, [2n, 0x1000n, 0x2000n]);
  assertEquals(reads(1, 3), [
    [0x10000000n, 10n * MiB, 0n],
    [0x40000000n, 41n * MiB / 2n - 10n * MiB, 10n * MiB],
  ]);
  assertEquals(reads(3, ops.length), [
    [
      0x40000000n + 41n * MiB / 2n - 10n * MiB,
      31n * MiB - (41n * MiB / 2n - 10n * MiB),
      41n * MiB / 2n,
    ],
  ]);
  assertEquals(ops.at(-1)!.code, OP.JOIN);
  assertEquals(ops.at(-1)!.args, [0x2000n]);
  // Below the threshold, and without the thread's room: no thread.
  const small = [{ start: 0x10000000n, end: 0x10000000n + MiB, fd: 7, off: 0n }];
  assert(!fillOps(small, helper).some((o) => o.code === OP.SPAWN));
  assert(fillOps([{ ...small[0], end: small[0].start + 2n * MiB }], helper)[0].code === OP.SPAWN);
  assert(!fillOps(fills).some((o) => o.code === OP.SPAWN));
});

Deno.test("memory fills of private anonymous mappings from 256 KiB are copied from a mapping of their pages file, opened once in a gap, each mapping given its anon_vma first; the rest read", () => {
  const MiB = 1n << 20n;
  const vma = { start: 0x10000000n, end: 0x10000000n + 16n * MiB };
  const fills = [
    { start: vma.start, end: vma.start + 4n * MiB, fd: 7, off: 0n, vma },
    {
      start: vma.start + 6n * MiB,
      end: vma.start + 6n * MiB + 0x10000n,
      fd: 7,
      off: 4n * MiB,
      vma,
    },
    { start: vma.start + 8n * MiB, end: vma.start + 9n * MiB, fd: 7, off: 5n * MiB, vma },
    // A file's private pages (no vma), and another pages file's.
    { start: 0x30000000n, end: 0x30000000n + MiB, fd: 7, off: 6n * MiB },
    {
      start: 0x40000000n,
      end: 0x40000000n + MiB,
      fd: 8,
      off: 0n,
      vma: { start: 0x40000000n, end: 0x40100000n },
    },
  ];
  const taken = [{ start: 0x100000000n, end: 0x100000000n + 8n * MiB }];
  const source = fillSource(fills, 0x3000n, taken)!;
  assertEquals(source.fd, 7);
  assertEquals(source.len, 7n * MiB, "up to the last of its pages");
  assertEquals(source.base, 0x100000000n + 8n * MiB, "past what is taken");
  const ops = fillOps(fills, undefined, source);
  assertEquals(ops.map((o) => o.code), [
    OP.SOURCE_OPEN,
    OP.MADVISE,
    OP.MADVISE,
    OP.COPY,
    OP.PREAD,
    OP.COPY,
    OP.PREAD,
    OP.PREAD,
    OP.SOURCE_CLOSE,
  ]);
  assertEquals(ops[0].args, [0x3000n, 7n, source.base, 7n * MiB]);
  assertEquals(ops[1].args.slice(0, 3), [vma.start, 4096n, 23n]);
  assertEquals(ops[2].args.slice(0, 3), [vma.start, 4096n, 4n]);
  assertEquals(ops[5].args, [
    7n,
    vma.start + 8n * MiB,
    MiB,
    5n * MiB,
    source.base + 5n * MiB,
    0x3000n,
  ]);
  assertEquals(ops.at(-1)!.args, [0x3000n, source.base, 7n * MiB]);
  // No source, or nothing to copy: reads only.
  assert(!fillOps(fills).some((o) => o.code !== OP.PREAD));
  assertEquals(fillSource(fills.slice(3, 4), 0x3000n, taken), undefined);
});

Deno.test("base64 decodes as atob does, padded or not, every length and byte; a stray character is refused", () => {
  for (let n = 0; n < 70; n++) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 89 + n * 7) & 0xff);
    const text = encodeBase64(bytes);
    assertEquals(decodeBase64(text), bytes);
    assertEquals(decodeBase64(text.replace(/=+$/, "")), bytes);
    assertEquals(decodeBase64(text), Uint8Array.from(atob(text), (c) => c.charCodeAt(0)));
  }
  assertThrows(() => decodeBase64("QUJD*"), /Invalid base64 character at 4/);
});

Deno.test("borrowed instructions: the first syscall, syscall; ret and rt_sigreturn of a code mapping, wherever the reads cut it", () => {
  const SEQS = {
    syscall: [0x0f, 0x05],
    syscallRet: [0x0f, 0x05, 0xc3],
    sigreturn: [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
    sigreturnEax: [0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
  };
  // The reference: a byte-by-byte search.
  const first = (mem: Uint8Array, seq: number[]) => {
    for (let i = 0; i + seq.length <= mem.length; i++) {
      if (seq.every((b, j) => mem[i + j] === b)) return i;
    }
    return -1;
  };
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >>> 16) % n;
  const READ = 64 << 10; // gadgets.ts reads this much at once, and 9 bytes more
  for (let trial = 0; trial < 300; trial++) {
    const mem = new Uint8Array(3 * READ + rand(READ));
    // Code without 0x05, then each sequence planted some times, some across a read's end.
    for (let i = 0; i < mem.length; i++) mem[i] = [0x0f, 0x48, 0xc3, 0x00, 0xb8, 0x90][rand(6)];
    const seqs = Object.values(SEQS);
    for (let k = rand(6); k > 0; k--) {
      const seq = seqs[rand(seqs.length)];
      // A read ends LONGEST bytes (9) past each multiple of READ: across, or anywhere.
      const near = rand(2) ? (1 + rand(3)) * READ + 9 - 1 - rand(9) : rand(mem.length);
      const at = Math.min(Math.max(near, 0), mem.length - seq.length);
      mem.set(seq, at);
    }
    const start = addressOf(mem);
    const map = {
      start,
      end: start + BigInt(mem.length),
      perms: "r-xp",
      offset: 0n,
      dev: "00:00",
      inode: 0,
      path: "",
      vmFlags: new Set<string>(),
      anonKb: 0,
    };
    const want = (i: number) => i < 0 ? undefined : start + BigInt(i);
    const sig = [first(mem, SEQS.sigreturn), first(mem, SEQS.sigreturnEax)].filter((i) => i >= 0);
    const syscall = first(mem, SEQS.syscall);
    if (syscall < 0) {
      assertThrows(() => findGadgets(Deno.pid, [map]), /Cannot find a syscall instruction/);
      continue;
    }
    const g = findGadgets(Deno.pid, [map]);
    assertEquals(
      { syscall: g.syscall, syscallRet: g.syscallRet, sigreturn: g.sigreturn },
      {
        syscall: want(syscall),
        syscallRet: want(first(mem, SEQS.syscallRet)),
        sigreturn: want(sig.length ? Math.min(...sig) : -1),
      },
      `trial ${trial}`,
    );
  }
});

Deno.test("exists: a file, a directory, a dangling symlink and an id in use exist; a missing name, a name under a file and a free id do not, as lstat tells", () => {
  const dir = tmpDir();
  Deno.writeTextFileSync(`${dir}/f`, "x");
  Deno.symlinkSync(`${dir}/nowhere`, `${dir}/dangling`);
  const lstat = (p: string) => {
    try {
      Deno.lstatSync(p);
      return true;
    } catch {
      return false;
    }
  };
  let free = 4000000;
  while (lstat(`/proc/${free}`)) free--;
  const cases: [string, boolean][] = [
    [`${dir}/f`, true],
    [dir, true],
    [`${dir}/dangling`, true],
    [`/proc/${Deno.pid}`, true],
    [`${dir}/missing`, false],
    [`${dir}/f/under`, false],
    [`/proc/${free}`, false],
  ];
  for (const [path, want] of cases) {
    assertEquals(pathExists(path), want, path);
    assertEquals(exists(path), want, path);
    assertEquals(lstat(path), want, path);
  }
});

Deno.test("pagemap entries of a dump: a run is cut at the stack pointers' pages, as a walk of every page cuts it; mappings found by address", () => {
  const K = 0x1000n;
  // Private anonymous (may be lazy), a private file mapping (never lazy), private anonymous.
  const vma = (start: bigint, end: bigint, flags: number, status: number) =>
    ({ start: start * K, end: end * K, flags, status }) as Vma;
  const vmas = [vma(0n, 64n, 0x22, 0x201), vma(64n, 80n, 0x02, 0x41), vma(100n, 200n, 0x22, 0x201)];
  // The walk of every page, as pagemapEntries did it before.
  const reference = (runs: PageRun[], sps: bigint[]) => {
    const stack = new Set(sps.map((sp) => sp & ~0xfffn));
    const out: { vaddr: bigint; pages: number; lazy: boolean; parent?: boolean }[] = [];
    const add = (vaddr: bigint, pages: number, lazy: boolean, parent?: boolean) => {
      const last = out.at(-1);
      if (
        last && last.lazy === lazy && last.parent === parent &&
        last.vaddr + BigInt(last.pages) * K === vaddr
      ) {
        last.pages += pages;
      } else out.push({ vaddr, pages, lazy, parent });
    };
    for (const r of runs) {
      if (r.inParent) {
        add(r.vaddr, r.nrPages, false, true);
        continue;
      }
      const v = vmas.find((x) => x.start <= r.vaddr && r.vaddr < x.end)!;
      if (v.flags !== 0x22) {
        add(r.vaddr, r.nrPages, false);
        continue;
      }
      let start = r.vaddr;
      const end = r.vaddr + BigInt(r.nrPages) * K;
      for (let a = r.vaddr; a <= end; a += K) {
        if (a !== end && !stack.has(a)) continue;
        if (a > start) add(start, Number((a - start) / K), true);
        if (a < end) add(a, 1, false);
        start = a + K;
      }
    }
    return out;
  };
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
  for (let round = 0; round < 300; round++) {
    const runs: PageRun[] = [];
    for (const v of vmas) {
      let a = v.start / K;
      while (true) {
        a += BigInt(rand(6));
        const len = BigInt(1 + rand(12));
        if (a + len > v.end / K) break;
        runs.push({
          vaddr: a * K,
          nrPages: Number(len),
          ...(rand(9) === 0 ? { inParent: true } : {}),
        });
        a += len;
      }
    }
    // Stack pointers anywhere, some in the same page, some at a page's first byte.
    const sps = Array.from(
      { length: rand(6) },
      () => BigInt(rand(210)) * K + BigInt(rand(2) ? 0 : rand(4096)),
    );
    assertEquals(pagemapEntries(runs, vmas, sps), reference(runs, sps));
  }
  assertEquals(vmaAt(vmas, 70n * K), vmas[1]);
  assertEquals(vmaAt(vmas, 80n * K), undefined);
  assertEquals(vmaAt([vmas[2], vmas[0]], 3n * K), vmas[0]);
});
