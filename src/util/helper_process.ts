/**
 * A helper process of criu's (one of parasite/helpers/, run from its memfd): started with
 * posix_spawn (syscalls/posix_spawn.ts), its standard input a pipe criu writes or /dev/null,
 * its standard output a pipe criu reads its first line from, its standard error criu's.
 *
 * Deno.Command would do as well, but loads Deno's process module and its streams the first
 * time (some 4 ms of a command that starts one helper).
 *
 * @module
 */
import type { HELPERS } from "../../parasite/blobs_gen.ts";
import { close, O, open, pidfdOpen, pipe2, tryRead, waitPid } from "../syscalls/mod.ts";
import { spawnProgram } from "../syscalls/posix_spawn.ts";
import { readable } from "../syscalls/socket.ts";
import { helperExecutable } from "./helper_exe.ts";

/** A running helper. */
export interface HelperProcess {
  pid: number;
  /** The first line it wrote (newline included), or all it wrote before closing its output. */
  firstLine: string;
  /** Criu's end of its standard input (close-on-exec), or -1 when that is /dev/null. */
  input: number;
  /** Settles when it has exited: its exit code, or 128 + the signal that killed it. */
  status: Promise<{ code: number }>;
}

/**
 * Starts helper `name` with `args` and criu's environment plus `env`, and reads its first line
 * (it blocks until the helper writes one or exits). With `input`, its standard input is a pipe
 * whose write end criu holds ({@link HelperProcess.input}): closed, the helper reads its end.
 */
export function startHelper(
  name: keyof typeof HELPERS,
  args: string[],
  options: { input: boolean; env?: Record<string, string> },
): HelperProcess {
  const exe = helperExecutable(name);
  const env = options.env ? { ...Deno.env.toObject(), ...options.env } : Deno.env.toObject();
  const ours: number[] = [], theirs: number[] = [];
  let pid: number;
  try {
    const [inR, inW] = options.input
      ? pipe2(O.CLOEXEC)
      : [open("/dev/null", O.RDONLY | O.CLOEXEC), -1];
    theirs.push(inR);
    if (inW >= 0) ours.push(inW);
    const [outR, outW] = pipe2(O.CLOEXEC);
    ours.push(outR);
    theirs.push(outW);
    pid = spawnProgram(exe, [exe, ...args], env, { stdin: inR, stdout: outW });
  } catch (e) {
    for (const fd of ours) close(fd);
    throw e;
  } finally {
    for (const fd of theirs) close(fd);
  }
  const [input, output] = options.input ? ours : [-1, ours[0]];
  const status = exitOf(pid);
  try {
    return { pid, firstLine: readLine(output), input, status };
  } finally {
    close(output);
  }
}

/** What `fd` yields up to and including its first newline, or until it ends. */
function readLine(fd: number): string {
  const dec = new TextDecoder();
  const buf = new Uint8Array(256);
  let text = "";
  while (!text.includes("\n")) {
    const n = tryRead(fd, buf);
    if (n === -4 /* EINTR */) continue;
    if (n <= 0) break;
    text += dec.decode(buf.subarray(0, n), { stream: true });
  }
  return text;
}

/** The exit of child `pid`, waited for off the event loop (its pidfd turns readable). */
async function exitOf(pid: number): Promise<{ code: number }> {
  let pidfd: number;
  try {
    pidfd = pidfdOpen(pid);
  } catch {
    return exitCode(pid);
  }
  try {
    await readable(pidfd);
  } finally {
    close(pidfd);
  }
  return exitCode(pid);
}

/** Reaps exited child `pid`; code 1 should it be reaped already (by nothing of criu's). */
function exitCode(pid: number): { code: number } {
  try {
    const st = waitPid(pid, 0);
    return { code: st.signaled ? 128 + st.termSig : st.exitCode };
  } catch {
    return { code: 1 };
  }
}
