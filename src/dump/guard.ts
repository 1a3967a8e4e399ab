/**
 * The dump's guard (parasite/helpers/guard.c): a small process that undoes what a dump did
 * outside its tasks, the network lock and TCP sockets in repair mode, if criu dies before the
 * dump is over. Started on first need; the dump tells it what to undo before doing it, and
 * {@link DumpGuard.finish} when nothing is left to undo (the dump finished, or undid it).
 *
 * Records go through a pipe whose only write end criu holds, written synchronously, so that a
 * record is in the pipe before the action it undoes; when criu dies, the pipe ends.
 *
 * ```
 * record: u8 kind | u32 length (LE) | payload
 *   'F'  s32 pid, s32 fd, s32 reuseaddr         a socket about to go into repair mode
 *   'C'  argv\0...\0 \0 stdin bytes             a command that removes a lock
 *   'S'  s32 pids                              processes about to get a SIGSTOP (tree/stop_hold.ts)
 *   'U'                                         their SIGSTOPs were taken back
 *   'T'  s32 pids                              images complete: the tree dies with criu
 *   'K'                                         over: nothing to undo
 * ```
 *
 * @module
 */
import { close, O, pipe2, writeAll } from "../syscalls/mod.ts";
import { type HelperProcess, startHelper } from "../util/helper_process.ts";
import type { StopWatcher } from "../tree/stop_hold.ts";

/** The guard of one dump. */
export class DumpGuard implements StopWatcher {
  #fd: number;
  #child: HelperProcess;

  private constructor(fd: number, child: HelperProcess) {
    this.#fd = fd;
    this.#child = child;
  }

  /** Starts a guard; resolves once it listens. */
  static async start(): Promise<DumpGuard> {
    const [r, w] = pipe2(O.CLOEXEC);
    let child: HelperProcess;
    try {
      child = startHelper("guard", [`/proc/${Deno.pid}/fd/${r}`], { input: false });
      if (!child.firstLine.startsWith("ready")) {
        await child.status;
        throw new Error(`The dump guard did not start: ${JSON.stringify(child.firstLine)}`);
      }
    } catch (e) {
      close(w);
      throw e;
    } finally {
      close(r);
    }
    return new DumpGuard(w, child);
  }

  #record(kind: string, payload: Uint8Array): void {
    if (this.#fd < 0) throw new Error("The dump guard is finished");
    const head = new Uint8Array(5);
    head[0] = kind.charCodeAt(0);
    new DataView(head.buffer).setUint32(1, payload.length, true);
    const rec = new Uint8Array(5 + payload.length);
    rec.set(head, 0);
    rec.set(payload, 5);
    writeAll(this.#fd, rec, "the dump guard");
  }

  /** Socket `fd` of task `pid` is about to go into repair mode. */
  watchSocket(pid: number, fd: number, reuseaddr: boolean): void {
    this.#record("F", new Uint8Array(new Int32Array([pid, fd, reuseaddr ? 1 : 0]).buffer));
  }

  /**
   * Processes `pids` are about to get a SIGSTOP: should criu die before {@link released}, the
   * guard continues them (SIGCONT) once it has put their sockets right.
   */
  stopping(pids: number[]): void {
    this.#record("S", new Uint8Array(new Int32Array(pids).buffer));
  }

  /** The SIGSTOPs announced by {@link stopping} were taken back. */
  released(): void {
    this.#record("U", new Uint8Array());
  }

  /** Should criu die, run `argv` (an absolute path first) with `input` on its stdin. */
  undoWith(argv: string[], input = ""): void {
    const enc = new TextEncoder();
    const parts = [...argv.map((a) => enc.encode(a + "\0")), enc.encode("\0"), enc.encode(input)];
    const payload = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) {
      payload.set(p, off);
      off += p.length;
    }
    this.#record("C", payload);
  }

  /**
   * The images are complete and the tree is to die: should criu die from now on, the guard
   * kills processes `pids` (the whole tree) and closes the connections silently, leaving the
   * lock to the restore, instead of letting the tree go on.
   */
  commit(pids: number[]): void {
    this.#record("T", new Uint8Array(new Int32Array(pids).buffer));
  }

  /** Nothing is left to undo: the guard lets go of its sockets and exits. */
  async finish(): Promise<void> {
    if (this.#fd < 0) return;
    this.#record("K", new Uint8Array());
    close(this.#fd);
    this.#fd = -1;
    await this.#child.status;
  }
}
