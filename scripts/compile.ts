/**
 * `deno task compile`: one self-contained `criu` binary (deno compile).
 *
 * deno compile needs the `denort` runtime: it downloads it, or uses DENORT_BIN when set. On a
 * machine without network access and without DENORT_BIN this says so and exits 1; everything
 * else in the project works without the binary (`deno run -A main.ts` is the same program).
 *
 * Usage: deno task compile [--output ./criu]
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { output: { type: "string", default: "./criu" } } });
const denort = Deno.env.get("DENORT_BIN");
const args = [
  "compile",
  "--allow-all",
  "--include",
  "parasite/blobs_gen.ts",
  // Loaded by the commands that need them (src/util/load.ts), not found by deno's graph.
  ...[
    // main.ts's command line from the sources (a compiled binary has no bundled build).
    "src/cli/sources.ts",
    "src/cli/run_dump.ts",
    "src/cli/run_restore.ts",
    "src/cli/lazy_pages.ts",
    "src/check.ts",
    "src/images/show.ts",
    "src/rpc/swrk.ts",
    "src/rpc/service.ts",
    "src/cli/page_server.ts",
    "src/images/dedup.ts",
    "src/syscalls/uffd.ts",
    // A dump's worker thread (src/dump/dump_worker.ts).
    "src/pagemap/worker_entry.ts",
  ]
    .flatMap((m) => ["--include", m]),
  "--output",
  values.output!,
  "main.ts",
];
const out = await new Deno.Command(Deno.execPath(), {
  args,
  stdout: "inherit",
  stderr: "piped",
  env: denort ? { DENORT_BIN: denort } : {},
}).output();
const err = new TextDecoder().decode(out.stderr);
if (!out.success) {
  Deno.stderr.writeSync(new TextEncoder().encode(err));
  const offline = /dns|resolve|connect|network|download|fetch|tcp|timed out/i.test(err);
  console.error(
    offline
      ? "compile: deno compile could not download its denort runtime (no network here). " +
        "Set DENORT_BIN=/path/to/denort (the denort binary of deno " + Deno.version.deno +
        ") and run again, or use bin/criu (deno run -A main.ts) instead of a binary."
      : "compile: deno compile failed (see above).",
  );
  Deno.exit(1);
}
console.log(`compile: wrote ${values.output}`);
