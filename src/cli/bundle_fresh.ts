/**
 * Whether the bundled build (scripts/bundle.ts) may run: it is there, was built by this Deno,
 * and every source it was built from is as it was then (size and modification time, from its
 * manifest). Imports nothing: main.ts asks before it loads anything else.
 *
 * @module
 */

/**
 * Where the bundles and their manifest are, under the repository's root: the whole command
 * line, and the command line with one command's modules only, by the command's name. A
 * command's own bundle is some 40% smaller than the whole, and loading it ~20 ms quicker.
 */
export const BUNDLE = {
  code: "src/.bundle/criu.js",
  manifest: "src/.bundle/criu.json",
  commands: {
    "dump": "src/.bundle/dump.js",
    "pre-dump": "src/.bundle/dump.js",
    "restore": "src/.bundle/restore.js",
  } as Readonly<Record<string, string>>,
} as const;

/** The manifest: the Deno that built the bundle, and each source as [path, mtime ms, size]. */
export interface BundleManifest {
  deno: string;
  files: [string, number, number][];
}

/**
 * The bundle's URL when the bundles are current for the sources under `root`; undefined when
 * they are missing or stale (a source edited since, another Deno), or `DENO_CRIU_SOURCES` is
 * set. Which bundle: the command's own when `first`, the first argument, is a command that has
 * one (`criu dump -t 1 ...`), else the whole (`criu -v4 dump ...`: an option first could take
 * the next word as its value, and only the option parser knows).
 */
export function freshBundle(root: URL, first?: string): string | undefined {
  try {
    if (Deno.env.get("DENO_CRIU_SOURCES")) return undefined;
    const manifest: BundleManifest = JSON.parse(
      Deno.readTextFileSync(new URL(BUNDLE.manifest, root)),
    );
    if (manifest.deno !== Deno.version.deno) return undefined;
    // Paths as strings: a URL per source would cost more than its stat (some 4 ms in all).
    const dir = decodeURIComponent(root.pathname);
    for (const [path, mtime, size] of manifest.files) {
      const st = Deno.statSync(dir + path);
      if (st.mtime?.getTime() !== mtime || st.size !== size) return undefined;
    }
    const own = first !== undefined && Object.hasOwn(BUNDLE.commands, first);
    return new URL(own ? BUNDLE.commands[first] : BUNDLE.code, root).href;
  } catch {
    return undefined;
  }
}
