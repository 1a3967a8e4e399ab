/**
 * `criu check` speaks CRIU 4.2's feature names and wording, and says yes only where the kernel
 * has the feature and deno-criu uses it. Where the CRIU 4.2 oracle is present, every feature we
 * call supported must be supported by the kernel according to it too.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { criu, ORACLE, oracle } from "./helpers.ts";
import { FEATURES } from "../src/check.ts";

/** CRIU 4.2's feature names, from its cr-check.c. */
const CRIU_FEATURES = [
  "mnt_id",
  "mem_dirty_track",
  "aio_remap",
  "timerfd",
  "tun",
  "tun_ns",
  "userns",
  "fdinfo_lock",
  "seccomp_suspend",
  "seccomp_filters",
  "loginuid",
  "cgroupns",
  "autofs",
  "tcp_half_closed",
  "compat_cr",
  "uffd",
  "uffd-noncoop",
  "can_map_vdso",
  "sk_ns",
  "sk_unix_file",
  "net_diag_raw",
  "nsid",
  "link_nsid",
  "kcmp_epoll",
  "timens",
  "external_net_ns",
  "clone3_set_tid",
  "newifindex",
  "nftables",
  "has_ipt_legacy",
  "pidfd_store",
  "ns_pid",
  "apparmor_stacking",
  "network_lock_nftables",
  "sockopt_buf_lock",
  "memfd_hugetlb",
  "move_mount_set_group",
  "openat2",
  "get_rseq_conf",
  "ipv6_freebind",
  "pagemap_scan",
  "timer_cr_ids",
  "overlayfs_maps",
  "breakpoints",
  "pagemap_scan_guard_pages",
]; // deno-fmt-ignore

Deno.test("criu check knows every CRIU 4.2 feature name and answers as criu words it", async () => {
  const known = new Set(FEATURES.map((f) => f.name));
  for (const name of CRIU_FEATURES) assert(known.has(name), `feature ${name}`);

  const plain = await criu(["check", "--no-default-config"]);
  assertEquals([plain.code, plain.stdout.trim()], [0, "Looks good."], plain.stderr);

  const bogus = await criu(["check", "--feature", "bogus"]);
  assertEquals(bogus.code, 1);
  assertMatch(bogus.stderr, /Unknown feature bogus/);

  // Things deno-criu does, on a kernel that has them.
  for (
    const name of [
      "clone3_set_tid",
      "get_rseq_conf",
      "tcp_half_closed",
      "timerfd",
      "mnt_id",
      "tun",
      "userns",
      "uffd",
      "uffd-noncoop",
    ]
  ) {
    const run = await criu(["check", "-v0", "--feature", name]);
    assertEquals([run.code, run.stdout.trim()], [0, `${name} is supported`], run.stderr);
  }
  // Things it does not do yet: refused with the reason, whatever the kernel has.
  const autofs = await criu(["check", "--feature", "autofs"]);
  assertEquals(autofs.code, 1);
  assertMatch(autofs.stderr, /autofs is not supported: /);
});

Deno.test("what we call supported, CRIU 4.2 finds in the kernel too", async (t) => {
  const bin = oracle();
  if (!bin) {
    console.log(`skipped: no CRIU 4.2 oracle at ${ORACLE}`);
    return;
  }
  // Beyond CRIU: dirty tracking without soft-dirty, which CRIU 4.2 needs and this kernel lacks.
  const beyond = new Set(["mem_dirty_track"]);
  for (const name of CRIU_FEATURES.filter((n) => !beyond.has(n))) {
    const ours = await criu(["check", "--feature", name]);
    if (ours.code !== 0) continue;
    await t.step(name, async () => {
      const theirs = await new Deno.Command(bin, {
        args: ["check", "--feature", name],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(theirs.code, 0, `CRIU 4.2 says ${name} is missing here`);
    });
  }
});
