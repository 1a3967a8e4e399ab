/**
 * Starting the restore helper (parasite/helpers/restore_helper.c): the static executable that
 * creates each restored task with clone3(set_tid), because the Deno process must never fork.
 *
 * The helper is executed from a memfd holding the embedded binary (no file is written). The
 * memfd is reopened read-only before exec: a file still open for writing cannot be executed
 * (ETXTBSY).
 *
 * @module
 */
import { HELPERS } from "../../parasite/blobs_gen.ts";
import { close, NR, O, open, syscall, writeAll } from "../syscalls/mod.ts";
import { cString } from "../syscalls/ffi.ts";
import { addressOf } from "../syscalls/ffi.ts";
import { decodeBase64 } from "../util/base64.ts";

const MFD_CLOEXEC = 1;

let helperFd = -1;

/** A read-only descriptor of the helper executable, made once per process. */
function helperPath(): string {
  if (helperFd < 0) {
    const name = cString("criu-restore-helper");
    const rw = Number(
      syscall(NR.memfd_create, "memfd_create", "restore helper", addressOf(name), MFD_CLOEXEC),
    );
    try {
      writeAll(rw, decodeBase64(HELPERS.restore_helper), "restore helper memfd");
      helperFd = open(`/proc/self/fd/${rw}`, O.RDONLY | O.CLOEXEC);
    } finally {
      close(rw);
    }
  }
  return `/proc/${Deno.pid}/fd/${helperFd}`;
}

/** The PID asked for is in use. */
export class PidTakenError extends Error {
  /** The PID. */
  readonly pid: number;
  constructor(pid: number) {
    super(
      `Cannot restore task ${pid}: PID ${pid} is in use; stop that process, or restore into a ` +
        `fresh PID namespace (e.g. unshare --pid --fork --mount-proc deno run -A main.ts restore ...)`,
    );
    this.name = "PidTakenError";
    this.pid = pid;
  }
}

/** A task made by the helper, sleeping until we seize it. */
export interface HelperTask {
  /** The new task's PID (the dumped one). */
  pid: number;
  /** The helper process: exits at once when detached, else when the task exits. */
  helper: Deno.ChildProcess;
}

/** Creates a task with PID `pid`; `detach` lets the helper exit instead of waiting for it. */
export async function spawnTask(pid: number, detach: boolean): Promise<HelperTask> {
  const helper = new Deno.Command(helperPath(), {
    args: detach ? [`${pid}`, "detach"] : [`${pid}`],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = helper.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  helper.stdout.cancel().catch(() => {});
  const m = /^(child|error) (-?\d+)/.exec(text);
  if (!m) {
    await helper.status;
    throw new Error(`The restore helper failed to start task ${pid}: ${JSON.stringify(text)}`);
  }
  if (m[1] === "error") {
    await helper.status;
    if (Number(m[2]) === 17) throw new PidTakenError(pid);
    throw new Error(`Cannot create task ${pid}: clone3 failed with errno ${m[2]}`);
  }
  return { pid: Number(m[2]), helper };
}
