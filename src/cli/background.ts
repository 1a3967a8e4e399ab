/**
 * A criu of ours started in the background (`-d`, or a page server an RPC request asks for),
 * that tells on a status descriptor when it is ready: a zero byte, then perhaps a line (a
 * page server's port); or, failing first, its reason.
 *
 * @module
 */
import { close, O, pipe2, setCloseOnExec, tryRead } from "../syscalls/mod.ts";
import { readable } from "../syscalls/socket.ts";
import { selfCommand } from "../util/self.ts";

/**
 * Runs this criu with `args` (`--status-fd` added; in a session of its own with `setsid`),
 * stdio on /dev/null, and waits until it is ready: then its PID and the line it gave after the
 * zero byte (`line`: one is awaited). Throws its reason if it failed first.
 */
export async function startInBackground(
  args: readonly string[],
  opts: { env?: Record<string, string>; setsid?: boolean; line?: boolean; what: string },
): Promise<{ pid: number; line: string }> {
  const [rd, wr] = pipe2(O.CLOEXEC);
  let child: Deno.ChildProcess;
  try {
    setCloseOnExec(wr, false);
    const self = [...selfCommand(), ...args, "--status-fd", `${wr}`];
    const [cmd, ...rest] = opts.setsid ? ["setsid", ...self] : self;
    child = new Deno.Command(cmd, {
      args: rest,
      env: opts.env,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
  } finally {
    close(wr);
  }
  try {
    let text = "";
    const got = new Uint8Array(4096);
    for (;;) {
      await readable(rd);
      const n = tryRead(rd, got);
      if (n <= 0) break;
      text += new TextDecoder().decode(got.subarray(0, n));
      if (text.startsWith("\0") && (!opts.line || text.endsWith("\n"))) {
        child.status.then(() => {}); // reaped whenever it ends
        return { pid: child.pid, line: text.slice(1).trim() };
      }
    }
    throw new Error(text.replace(/^\0/, "") || `${opts.what} exited before it was ready`);
  } finally {
    close(rd);
  }
}
