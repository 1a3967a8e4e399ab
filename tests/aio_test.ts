/**
 * Native AIO contexts (io_setup): idle ones carried (rings, counters, slots, where they were),
 * those with requests in flight, or a ring without its context, refused by name.
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  critDecodeAll,
  criu,
  dumpRefused,
  killAll,
  startVictim,
  stopVictim,
  tmpDir,
  verdict,
  waitGone,
  waitReport,
} from "./helpers.ts";
import { KernelBtf } from "../src/syscalls/btf.ts";
import { perCpuOffsets } from "../src/syscalls/bpf.ts";
import { aioContexts } from "../src/syscalls/aio.ts";

/** What the kernel holds of each AIO context of task `pid`, read from outside, by slot. */
function kernelContexts(pid: number) {
  const btf = KernelBtf.load();
  return aioContexts(btf, pid, perCpuOffsets(btf)).sort((a, b) => a.id - b.id);
}

for (const mode of ["plain", "holes"]) {
  Deno.test(
    `idle AIO contexts (unreaped events, a wrapped ring, an unused one${
      mode === "holes" ? ", a slot of the table left empty" : ""
    }) come back as they were, at their rings' addresses, and work on`,
    async () => {
      const bin = await buildVictim("aio");
      const v = startVictim(["setsid", bin, "{out}", mode]);
      let pid = 0;
      try {
        const r = await waitReport(v);
        const before = kernelContexts(v.pid);
        assertEquals(before.length, 3);
        assertEquals(before.map((c) => c.id), mode === "holes" ? [0, 2, 3] : [0, 1, 2]);
        assertEquals(before.map((c) => c.userId.toString(16)), [r.a, r.w, r.i]);
        const imgs = tmpDir();
        const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs]);
        assertEquals(d.code, 0, d.stderr);
        assert(await waitGone(v.pid), "gone after the dump");
        // As criu writes them: the rings' mappings (AIORING) and their contexts.
        const img = await critDecodeAll(imgs);
        const mm = img.get(`mm-${v.pid}.img`)!.entries[0];
        const rings = mm.vmas.filter((x: { status: string }) => x.status === "VMA_AREA_AIORING");
        assertEquals(
          rings.map((x: { start: string }) => x.start),
          [r.i, r.w, r.a].map((a) => `0x${a}`),
        );
        assertEquals(
          mm.aios.map((a: { id: number; nr_req: number }) => [a.id.toString(16), a.nr_req]),
          [[r.i, 16], [r.w, 1], [r.a, 128]],
        );
        const rs = await criu(["restore", "-d", "-D", imgs]);
        assertEquals(rs.code, 0, rs.stderr);
        pid = v.pid;
        // From outside: each context in its slot, at its ring, its sizes and tail as they were.
        assertEquals(kernelContexts(pid), before);
        assertMatch(await verdict(v), new RegExp(`PASS aio ${mode}`));
      } finally {
        if (pid) killAll(pid);
        await stopVictim(v);
      }
    },
  );
}

Deno.test("an AIO context with a request in flight (a poll), or a ring a child has without its context, is refused by name, the tree left running", async () => {
  const bin = await buildVictim("aio");
  for (
    const [mode, why] of [
      ["poll", /AIO context at [0-9a-f]+ of task \d+: it has requests waiting/],
      ["fork", /AIO ring at [0-9a-f]+ of task \d+: its context is not the task's/],
    ] as const
  ) {
    const v = startVictim(["setsid", bin, "{out}", mode]);
    try {
      const r = await waitReport(v);
      await dumpRefused(v.pid, why);
      assertEquals(kernelContexts(v.pid)[0].inFlight, mode === "poll" ? 1 : 0);
      assertMatch(await verdict(v), new RegExp(`PASS aio ${mode}`));
      assertEquals(r.child === "0", mode !== "fork");
    } finally {
      await stopVictim(v);
    }
  }
});
