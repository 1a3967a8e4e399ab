/**
 * `deno task bundle`: the bundled build of the command line (src/cli/bundled.ts, everything in
 * one file, npm packages included) into src/.bundle/criu.js, of the command line with one
 * command's modules only (src/cli/bundled_dump.ts, bundled_restore.ts), and of the dump's worker thread
 * (src/pagemap/worker_entry.ts) into src/.bundle/ under its entry's name,
 * with their manifest: the Deno that built them and every local source they hold, by size and
 * modification time. main.ts runs them while those are unchanged (src/cli/bundle_fresh.ts), else
 * the sources. They sit one directory below src/, as the modules do, so that a URL a module
 * makes from its own names the same file from inside a bundle.
 *
 * Usage: deno task bundle
 */
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { BUNDLE, type BundleManifest } from "../src/cli/bundle_fresh.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Entry → bundle (src/util/load.ts workerUrl names a worker's bundle by its entry's name). */
const ENTRIES: [string, string][] = [
  ["src/cli/bundled.ts", BUNDLE.code],
  ["src/cli/bundled_dump.ts", BUNDLE.commands.dump],
  ["src/cli/bundled_restore.ts", BUNDLE.commands.restore],
  ["src/pagemap/worker_entry.ts", "src/.bundle/worker_entry.js"],
];

async function deno(args: string[]): Promise<string> {
  const o = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!o.success) {
    throw new Error(`deno ${args[0]} failed: ${new TextDecoder().decode(o.stderr).trim()}`);
  }
  return new TextDecoder().decode(o.stdout);
}

// The sources first (a source edited while bundling leaves the manifest stale, not wrong).
const locals = new Set<string>();
for (const [entry] of ENTRIES) {
  const info = JSON.parse(await deno(["info", "--json", join(ROOT, entry)]));
  for (const m of info.modules as { specifier: string }[]) {
    if (m.specifier.startsWith("file://")) locals.add(fileURLToPath(m.specifier));
  }
}
const files = [...locals, join(ROOT, "deno.json"), join(ROOT, "deno.lock")].sort();
const manifest: BundleManifest = {
  deno: Deno.version.deno,
  files: files.map((f) => {
    const st = Deno.statSync(f);
    return [relative(ROOT, f), st.mtime!.getTime(), st.size];
  }),
};
for (const [entry, bundle] of ENTRIES) {
  const out = join(ROOT, bundle);
  Deno.mkdirSync(dirname(out), { recursive: true });
  const tmp = `${out}.tmp`;
  await deno([
    "bundle",
    "--quiet",
    "--platform",
    "deno",
    "--packages",
    "bundle",
    "-o",
    tmp,
    join(ROOT, entry),
  ]);
  Deno.renameSync(tmp, out);
}
Deno.writeTextFileSync(join(ROOT, BUNDLE.manifest), JSON.stringify(manifest) + "\n");
console.log(`bundled ${locals.size} modules into ${ENTRIES.map(([, b]) => b).join(" and ")}`);
