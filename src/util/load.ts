/**
 * Loading a module of this program only when it is needed, by its path under src/
 * (`load<typeof import("../cli/run_dump.ts")>("cli/run_dump.ts")`): a specifier Deno does not load up
 * front (a literal `import("...")` it would, so every command would load dump, restore and
 * check first). In the bundled build (scripts/bundle.ts) every such module a bundle's commands
 * load is in it already, registered by its entry (src/cli/bundled.ts, bundled_dump.ts,
 * bundled_restore.ts), and taken from there.
 *
 * @module
 */

/** src/, where the paths start (this module is src/util/load.ts, the bundle src/.bundle/...). */
const SRC = new URL("../", import.meta.url);
const bundled = new Map<string, unknown>();

/**
 * Imports the module at `path` under src/ ("cli/run_dump.ts"). In a bundled build, a module
 * its bundle lacks is an error: imported from the sources, it would come with second copies
 * of the modules the bundle holds already (the libc binding, the reaper, the log), each with
 * its own state.
 */
export function load<T>(path: string): Promise<T> {
  const m = bundled.get(path);
  if (m !== undefined) return Promise.resolve(m as T);
  if (bundled.size) return Promise.reject(new Error(`bug: the bundle in use lacks ${path}`));
  return import(new URL(path, SRC).href);
}

/**
 * The URL of a worker's entry, `path` under src/ ("pagemap/worker_entry.ts"); in the bundled
 * build, its own bundle (src/.bundle/, named by the entry's file: "worker_entry.js").
 */
export function workerUrl(path: string): URL {
  if (bundled.size === 0) return new URL(path, SRC);
  return new URL(`.bundle/${path.slice(path.lastIndexOf("/") + 1).replace(/\.ts$/, ".js")}`, SRC);
}

/** The bundle's modules, by path under src/: {@link load} takes them from here. */
export function registerBundled(modules: Record<string, unknown>): void {
  for (const [path, m] of Object.entries(modules)) bundled.set(path, m);
}
