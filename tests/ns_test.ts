/**
 * Namespaces: a tree in namespaces of its own, made again at restore (the containers issue,
 * kind by kind), and nested ones refused by name.
 */
import { assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  checkAcrossRoundTrip,
  dumpRefused,
  sleep,
  startVictim,
  stopVictim,
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
