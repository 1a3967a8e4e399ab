/**
 * criu's configuration files: one option per line, without its dashes (`tcp-established`,
 * `verbosity 4`, `lsm-profile "apparmor:unconfined"`), `#` starting a comment. Each file becomes
 * the argv words it stands for, read by the same parser as the command line.
 *
 * A value is attached to its option (`--verbosity=4`), so that options whose value is optional
 * take it too (criu's getopt would drop it and count `verbosity 4` as one `-v`); a value given to
 * an option that takes none is an error, not ignored.
 *
 * Where they are read from, in order (later ones override earlier ones, the command line last):
 * `/etc/criu/default.conf` and `$HOME/.criu/default.conf` (both skipped with
 * `--no-default-config` or `--config`), `$CRIU_CONFIG_FILE`, `--config FILE`.
 *
 * @module
 */
import { UsageError } from "./usage_error.ts";

/** The system-wide configuration file. */
export const GLOBAL_CONFIG = "/etc/criu/default.conf";

/** The user's configuration file, below $HOME. */
export const USER_CONFIG = ".criu/default.conf";

/** The argv words of a configuration file's text. */
export function configWords(text: string, path: string): string[] {
  const words: string[] = [];
  const bad = (n: number) =>
    new UsageError(
      `Unsupported configuration file format in ${path}, line ${n + 1}; see criu(8)`,
    );
  for (const [n, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const sep = line.search(/[ \t]/);
    if (sep < 0) {
      words.push(`--${line}`);
      continue;
    }
    const name = `--${line.slice(0, sep)}`;
    const rest = line.slice(sep + 1).trimStart();
    if (!rest || rest.startsWith("#")) {
      words.push(name);
      continue;
    }
    if (rest.startsWith('"')) {
      // A quoted value, with \" standing for a quote inside it.
      let end = 1;
      while (end < rest.length && !(rest[end] === '"' && rest[end - 1] !== "\\")) end++;
      if (end >= rest.length) throw bad(n);
      const after = rest.slice(end + 1).trim();
      if (after && !after.startsWith("#")) throw bad(n);
      words.push(`${name}=${rest.slice(1, end).replaceAll('\\"', '"')}`);
      continue;
    }
    const hash = rest.indexOf("#");
    const value = (hash < 0 ? rest : rest.slice(0, hash)).trim();
    if (/\s/.test(value)) throw bad(n);
    words.push(`${name}=${value}`);
  }
  return words;
}

/** Where the configuration comes from, besides the command line. */
export interface ConfigSources {
  /** `--no-default-config` (or `--config`) was given. */
  noDefault: boolean;
  /** `--config FILE`. */
  file?: string;
  /** The environment ($HOME, $CRIU_CONFIG_FILE). */
  env: (name: string) => string | undefined;
}

/**
 * The argv words of every configuration file that applies, in the order criu reads them.
 * The default files may be absent; a file named by `--config` or $CRIU_CONFIG_FILE must exist.
 */
export function configFileWords(src: ConfigSources): { path: string; words: string[] }[] {
  const out: { path: string; words: string[] }[] = [];
  const read = (path: string, optional: boolean) => {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (e) {
      if (optional && e instanceof Deno.errors.NotFound) return;
      throw new UsageError(`Cannot read configuration file ${path}: ${(e as Error).message}`);
    }
    out.push({ path, words: configWords(text, path) });
  };
  if (!src.noDefault) {
    read(GLOBAL_CONFIG, true);
    const home = src.env("HOME");
    if (home) read(`${home}/${USER_CONFIG}`, true);
  }
  const fromEnv = src.env("CRIU_CONFIG_FILE");
  if (fromEnv) read(fromEnv, false);
  if (src.file) read(src.file, false);
  return out;
}
