/**
 * POSIX paths, as node:path's posix functions treat them: loading node:path (Deno's Node layer)
 * costs a command-line run about 15 ms, more than all it is used for here.
 *
 * @module
 */

/** `path` with `.` and `..` worked out and repeated slashes made one (a trailing one kept). */
export function normalize(path: string): string {
  if (path === "") return ".";
  const absolute = path.startsWith("/");
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (out.length && out[out.length - 1] !== "..") out.pop();
      else if (!absolute) out.push("..");
    } else {
      out.push(seg);
    }
  }
  let body = out.join("/");
  if (body === "" && !absolute) body = ".";
  if (body !== "" && path.endsWith("/")) body += "/";
  return absolute ? `/${body}` : body;
}

/** The parts joined by slashes, normalized; "." for nothing. */
export function join(...parts: string[]): string {
  const joined = parts.filter((p) => p !== "").join("/");
  return joined === "" ? "." : normalize(joined);
}

/** Whether `path` starts at the root. */
export function isAbsolute(path: string): boolean {
  return path.startsWith("/");
}

/** The absolute path the parts lead to, from the right, the working directory last. */
export function resolve(...parts: string[]): string {
  let path = "";
  for (let i = parts.length - 1; i >= -1 && !path.startsWith("/"); i--) {
    const p = i >= 0 ? parts[i] : Deno.cwd();
    if (p !== "") path = path === "" ? p : `${p}/${path}`;
  }
  const n = normalize(path);
  return n.length > 1 && n.endsWith("/") ? n.slice(0, -1) : n;
}

/** `path` less its trailing slashes (the root stays). */
function trimEnd(path: string): string {
  let end = path.length;
  while (end > 1 && path[end - 1] === "/") end--;
  return path.slice(0, end);
}

/** The directory part of `path`: "." when it has none, "/" for what is in the root. */
export function dirname(path: string): string {
  if (path === "") return ".";
  const p = trimEnd(path);
  const i = p.lastIndexOf("/");
  if (i < 0) return ".";
  if (i === 0) return "/";
  // As node:path: the slashes before the last one stay ("a//b" gives "a/", "//a" gives "//").
  return i === 1 && p[0] === "/" ? "//" : p.slice(0, i);
}

/** The last part of `path`, trailing slashes aside. */
export function basename(path: string): string {
  const p = trimEnd(path);
  if (p === "/") return "";
  return p.slice(p.lastIndexOf("/") + 1);
}

/** The path of a file: URL. */
export function fileURLToPath(url: string | URL): string {
  const u = typeof url === "string" ? new URL(url) : url;
  if (u.protocol !== "file:") throw new TypeError(`Not a file URL: ${u.href}`);
  return decodeURIComponent(u.pathname);
}
