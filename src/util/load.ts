/**
 * Loading a module of this program only when it is needed: a specifier Deno does not load up
 * front (a literal `import("...")` it would, so every command would load dump, restore and
 * check first). Callers give the type: `load<typeof import("./x.ts")>(new URL(...))`.
 *
 * @module
 */

/** Imports the module at `url` (built from the caller's `import.meta.url`). */
export function load<T>(url: URL): Promise<T> {
  return import(url.href);
}
