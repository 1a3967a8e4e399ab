/**
 * `deno task bundle`: the bundled build of the command line (src/cli/bundled.ts, everything in
 * one file, npm packages included) into src/.bundle/criu.js, with its manifest: the Deno that
 * built it and every local source it holds, by size and modification time. main.ts runs it
 * while those are unchanged (src/cli/bundle_fresh.ts), else the sources. It sits one directory
 * below src/, as the modules do, so that a URL a module makes from its own (a worker's entry)
 * names the same file from inside the bundle.
 *
 * Usage: deno task bundle
 */
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { BUNDLE, type BundleManifest } from "../src/cli/bundle_fresh.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const ENTRY = join(ROOT, "src/cli/bundled.ts");
const out = join(ROOT, BUNDLE.code);

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
const info = JSON.parse(await deno(["info", "--json", ENTRY]));
const locals: string[] = info.modules
  .map((m: { specifier: string }) => m.specifier)
  .filter((s: string) => s.startsWith("file://"))
  .map((s: string) => fileURLToPath(s));
const files = [...locals, join(ROOT, "deno.json"), join(ROOT, "deno.lock")].sort();
const manifest: BundleManifest = {
  deno: Deno.version.deno,
  files: files.map((f) => {
    const st = Deno.statSync(f);
    return [relative(ROOT, f), st.mtime!.getTime(), st.size];
  }),
};
Deno.mkdirSync(dirname(out), { recursive: true });
const tmp = `${out}.tmp`;
await deno(["bundle", "--quiet", "--platform", "deno", "--packages", "bundle", "-o", tmp, ENTRY]);
Deno.renameSync(tmp, out);
Deno.writeTextFileSync(join(ROOT, BUNDLE.manifest), JSON.stringify(manifest) + "\n");
console.log(`bundled ${locals.length} modules into ${relative(ROOT, out)}`);
