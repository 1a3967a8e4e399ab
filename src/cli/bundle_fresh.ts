/**
 * Whether the bundled build (scripts/bundle.ts) may run: it is there, was built by this Deno,
 * and every source it was built from is as it was then (size and modification time, from its
 * manifest). Imports nothing: main.ts asks before it loads anything else.
 *
 * @module
 */

/** Where the bundle and its manifest are, under the repository's root. */
export const BUNDLE = { code: "src/.bundle/criu.js", manifest: "src/.bundle/criu.json" } as const;

/** The manifest: the Deno that built the bundle, and each source as [path, mtime ms, size]. */
export interface BundleManifest {
  deno: string;
  files: [string, number, number][];
}

/**
 * The bundle's URL when it is current for the sources under `root`; undefined when it is
 * missing or stale (a source edited since, another Deno), or `DENO_CRIU_SOURCES` is set.
 */
export function freshBundle(root: URL): string | undefined {
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
    return new URL(BUNDLE.code, root).href;
  } catch {
    return undefined;
  }
}
