/**
 * Tools run inside a network namespace. Deno cannot enter one (setns is per thread, and it must
 * not fork), so they run under nsenter(1) with the namespace of a task in it, or under
 * unshare(1) in a fresh one.
 *
 * @module
 */

/** `text` quoted for sh(1): between single quotes, each of its own written '\''. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** A tool failed inside a network namespace. */
export class NetnsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NetnsError";
  }
}

/**
 * Runs `argv` in the network namespace of task `pid` (a fresh one when undefined), with
 * `input` on its stdin (a file: `ip ... restore` seeks in it); returns its stdout. A non-zero
 * exit fails with its stderr.
 */
export async function inNetns(
  pid: number | undefined,
  argv: string[],
  input?: Uint8Array,
): Promise<Uint8Array> {
  const file = input ? Deno.makeTempFileSync({ prefix: "deno-criu-netns-" }) : undefined;
  try {
    if (file) Deno.writeFileSync(file, input!);
    const run = file ? ["sh", "-c", `f=$1; shift; exec "$@" < "$f"`, "sh", file, ...argv] : argv;
    const [cmd, ...args] = pid === undefined
      ? ["unshare", "-n", "--", ...run]
      : ["nsenter", "-t", `${pid}`, "-n", "--", ...run];
    const out = await new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" },
    }).output();
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim();
      throw new NetnsError(`${argv.join(" ")} in the network namespace failed: ${err}`);
    }
    return out.stdout;
  } finally {
    if (file) Deno.removeSync(file);
  }
}
