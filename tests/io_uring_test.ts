/**
 * io_uring instances: idle ones carried (their setup, counters, rings, where they were
 * mapped), busy or registered ones refused by name.
 *
 * @module
 */
import { readImage } from "../src/images/image.ts";
import { file_entrySchema, type io_uring_file_entry } from "../proto/gen/files_pb.ts";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  critDecodeAll,
  criu,
  dumpRefused,
  killAll,
  oracleRefuses,
  roundTrip,
  sleep,
  startVictim,
  stopVictim,
  tmpDir,
  verdict,
  waitGone,
  waitReport,
} from "./helpers.ts";
import { KernelBtf } from "../src/syscalls/btf.ts";
import { fileObjects, openFiles, perCpuOffsets } from "../src/syscalls/bpf.ts";
import { registeredRingFds, ringKernelState } from "../src/syscalls/io_uring.ts";

/** What the kernel holds of each instance of task `pid` (by descriptor), read from outside. */
function kernelRings(pid: number, fds: number[]): Record<number, unknown> {
  const btf = KernelBtf.load();
  const perCpu = perCpuOffsets(btf);
  const objects = fileObjects(btf, pid);
  return Object.fromEntries(fds.map((fd) => {
    const k = ringKernelState(btf, objects.get(fd)!, perCpu);
    return [fd, {
      flags: k.flags,
      sqEntries: k.sqEntries,
      cqEntries: k.cqEntries,
      sqHead: k.sqHead,
      cqTail: k.cqTail,
      clockid: k.clockid,
      inflight: k.inflight,
      drainDisabled: k.drainDisabled,
      files: k.files,
      buffers: k.buffers,
      fileSlots: k.fileSlots.map((x) => x.index),
      bufferSlots: k.bufferSlots.map((x) => [x.index, x.buffer!.address, x.buffer!.length]),
      chargedUid: k.chargedUid,
      eventfd: k.eventfd && { async: k.eventfd.async, lastCqTail: k.eventfd.lastCqTail },
    }];
  }));
}

for (
  const [mode, userns] of [["idle", false], ["worker", false], ["idle", true]] as const
) {
  Deno.test(
    `idle io_uring instances (${
      mode === "worker" ? "their requests done by io-wq workers, " : ""
    }setup flags, a clock, wrapped indices, unreaped completions, a queued SQE, a disabled one, registered files, buffers and an eventfd, one charged for its pinned memory) come back as they were, where they were mapped, and work on${
      userns ? ", in a user namespace of the tree's own (unshare -U -r)" : ""
    }`,
    async () => {
      const bin = await buildVictim("uring");
      const v = startVictim([
        "setsid",
        ...(userns ? ["unshare", "-U", "-r"] : []),
        bin,
        "{out}",
        ...(mode === "idle" ? [] : [mode]),
      ]);
      let pid = 0;
      try {
        const r = await waitReport(v);
        const fds = [r.a, r.b, r.c, r.d, r.e, r.f, r.g].map(Number);
        const before = kernelRings(v.pid, fds);
        const imgs = tmpDir();
        const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
        assertEquals(d.code, 0, d.stderr);
        assert(await waitGone(v.pid), "gone after the dump");
        // Its rings carried in files.img (type UND, which criu refuses); their mappings by a
        // status bit of ours (crit shows it as a number), none of their pages in pages-N.img.
        const img = await critDecodeAll(imgs);
        const mm = img.get(`mm-${v.pid}.img`)!.entries[0];
        const rings = mm.vmas.filter((x: { status: string }) => /\| 0x1000000$/.test(x.status));
        assertEquals(
          rings.length,
          15,
          JSON.stringify(mm.vmas.map((x: { status: string }) => x.status)),
        );
        await oracleRefuses(imgs, /Unknown file type 0/, [v.pid]);
        const rs = await criu(["restore", "-d", "-D", imgs]);
        assertEquals(rs.code, 0, rs.stderr);
        pid = v.pid;
        // From outside: the kernel's own state of each, as it was.
        assertEquals(kernelRings(pid, fds), before);
        assertMatch(await verdict(v), new RegExp(`PASS uring ${mode}`));
      } finally {
        if (pid) killAll(pid);
        await stopVictim(v);
      }
    },
  );
}

Deno.test("an io_uring request in flight that completes by itself (an open in io-wq) is let complete at the dump: its completion and its descriptor come back", async () => {
  const bin = await buildVictim("uring");
  const fifo = `${tmpDir()}/fifo`;
  new Deno.Command("mkfifo", { args: [fifo] }).outputSync();
  const v = startVictim(["setsid", bin, "{out}", "settle", fifo]);
  let pid = 0;
  try {
    await waitReport(v);
    const imgs = tmpDir();
    const dump = criu(["dump", "-t", `${v.pid}`, "-D", imgs, "-v4", "-o", "dump.log"]);
    // Once the tree is frozen, the open finds its writer (outside the tree).
    await sleep(1000);
    Deno.openSync(fifo, { write: true }).close();
    const d = await dump;
    assertEquals(d.code, 0, d.stderr);
    assertMatch(Deno.readTextFileSync(`${imgs}/dump.log`), /letting them complete/);
    assert(await waitGone(v.pid), "gone after the dump");
    const rs = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(rs.code, 0, rs.stderr);
    pid = v.pid;
    assertMatch(await verdict(v), /PASS uring settle/);
  } finally {
    if (pid) killAll(pid);
    await stopVictim(v);
  }
});

Deno.test("a registered buffer in transparent huge pages (held by the instance as folios) is checked against the task's memory, carried, and read and written through after", async () => {
  const bin = await buildVictim("uring");
  const v = startVictim(["setsid", bin, "{out}", "hugebuf"]);
  try {
    const r = await waitReport(v);
    const thp = Deno.readTextFileSync("/sys/kernel/mm/transparent_hugepage/enabled");
    if (!thp.includes("[never]")) assertEquals(r.thp, "1", "the area is in huge pages");
    await roundTrip(v);
    assertMatch(await verdict(v), /PASS uring hugebuf/);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

/**
 * Takes the uring victim in `mode` (a parent and its child holding one instance) round trip:
 * one instance for both before and after (by inode), then `check` on the instances' entries
 * in files.img, and the victim's verdict.
 */
async function sharedRoundTrip(
  mode: string,
  check: (rings: io_uring_file_entry[], pid: number) => void,
): Promise<void> {
  const bin = await buildVictim("uring");
  const v = startVictim(["setsid", bin, "{out}", mode]);
  try {
    const r = await waitReport(v);
    const inode = (pid: string | number) => Deno.statSync(`/proc/${pid}/fd/${r.fd}`).ino;
    assertEquals(inode(r.child), inode(v.pid), "one instance before");
    const imgs = await roundTrip(v);
    check(
      readImage(`${imgs}/files.img`, "FILES", file_entrySchema)
        .map((e) => e.message.ioUring).filter((e) => e !== undefined),
      v.pid,
    );
    assertEquals(inode(r.child), inode(v.pid), "one instance after");
    assertMatch(await verdict(v), new RegExp(`PASS uring ${mode}`));
  } finally {
    killAll(v.pid, Number((await waitReport(v)).child));
    await stopVictim(v);
  }
}

Deno.test("an io_uring instance inherited through fork (held by a process and its child, rings mapped in both, a buffer registered before) comes back one instance for both, made by the parent and taken by the child", async () => {
  // One files.img entry, with the parent as its maker.
  await sharedRoundTrip("shared", (rings, pid) => assertEquals(rings.map((e) => e.holder), [pid]));
});

Deno.test("an io_uring instance set up on the process's own shared memory (IORING_SETUP_NO_MMAP) and held by its child too, as PostgreSQL 18 makes its backends', comes back set up on that memory again, one instance for both, its counters, unreaped completion and rings' bytes kept", async () => {
  await sharedRoundTrip("nommap", (rings, pid) => {
    assertEquals(rings.length, 1);
    assert(rings[0].ringsAddress && rings[0].sqesAddress === rings[0].ringsAddress + 4096n);
    // Its regions are the task's memory again (no mapping of the instance's file).
    const maps = Deno.readTextFileSync(`/proc/${pid}/maps`);
    assert(!maps.includes("io_uring"), maps);
  });
});

Deno.test("an io_uring instance the main thread registered as its ring descriptor (IORING_REGISTER_RING_FDS) comes back registered at the same index", async () => {
  const bin = await buildVictim("uring");
  const v = startVictim(["setsid", bin, "{out}", "ringfd"]);
  try {
    const r = await waitReport(v);
    const btf = KernelBtf.load();
    // Slot 2 of the main thread holds the instance of its descriptor, before and after.
    const registered = () => {
      const file = openFiles(btf, v.pid).get(Number(r.fd));
      return (registeredRingFds(btf, v.pid).get(v.pid) ?? []).map((s) =>
        `${s.index}:${s.file === file}`
      );
    };
    assertEquals(registered(), ["2:true"]);
    const imgs = await roundTrip(v);
    const rings = readImage(`${imgs}/files.img`, "FILES", file_entrySchema)
      .map((e) => e.message.ioUring).filter((e) => e !== undefined);
    assertEquals(rings.map((e) => e.registeredIndex), [2]);
    assertEquals(registered(), ["2:true"]);
    assertMatch(await verdict(v), /PASS uring ringfd/);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

for (
  const [mode, why] of [
    ["inflight", "has 1 request\\(s\\) in flight \\(1 polled\\): only an idle one is carried"],
    ["files", "has a registered file \\(slot 0\\) the task holds no descriptor of"],
    ["sqpoll", "was set up with SQPOLL, which is not supported yet"],
    [
      "remapped",
      "has a registered buffer \\(slot 0\\) that holds other pages than the task maps at " +
      "0x[0-9a-f]+, 8192 bytes \\(remapped, unmapped or discarded since it was registered\\)",
    ],
  ]
) {
  const what = {
    inflight: "has a request in flight",
    files: "has a registered file no descriptor holds",
    sqpoll: "has an SQPOLL thread",
    remapped: "has a registered buffer with a page mapped over it since",
  }[mode];
  Deno.test(`an io_uring instance that ${what} is refused by name, and the task keeps running`, async () => {
    const bin = await buildVictim("uring");
    const v = startVictim(["setsid", bin, "{out}", mode]);
    try {
      const r = await waitReport(v);
      await dumpRefused(
        v.pid,
        new RegExp(
          `fd ${r.fd} of task ${v.pid} \\(anon_inode:\\[io_uring\\]\\): its io_uring instance ${why}`,
        ),
      );
      assertMatch(await verdict(v), new RegExp(`PASS uring ${mode}`));
    } finally {
      await stopVictim(v);
    }
  });
}

for (
  const [mode, what, why] of [
    [
      "iowqaff",
      "whose io_uring workers are bound to CPUs of its own (IORING_REGISTER_IOWQ_AFF)",
      "thread PID bound its io_uring workers to CPUs 0 \\(IORING_REGISTER_IOWQ_AFF\\), " +
      "which is not supported yet",
    ],
    [
      "ringfdthread",
      "other than the main one that registered an io_uring descriptor (IORING_REGISTER_RING_FDS)",
      "thread \\d+ registered 1 io_uring descriptor\\(s\\) \\(IORING_REGISTER_RING_FDS\\); " +
      "only the main thread's are supported",
    ],
  ] as const
) {
  Deno.test({
    name: `a thread ${what} is refused by name, and the task keeps running`,
    // On one CPU, CPU 0 alone is the default.
    ignore: mode === "iowqaff" && navigator.hardwareConcurrency < 2,
    fn: async () => {
      const bin = await buildVictim("uring");
      const v = startVictim(["setsid", bin, "{out}", mode]);
      try {
        await waitReport(v);
        await dumpRefused(v.pid, new RegExp(why.replace("PID", `${v.pid}`)));
        assertMatch(await verdict(v), new RegExp(`PASS uring ${mode}`));
      } finally {
        await stopVictim(v);
      }
    },
  });
}
