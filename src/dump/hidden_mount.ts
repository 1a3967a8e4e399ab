/**
 * A detached copy of a mount that later mounts hide (overmounted), for its files: taken by the
 * hidden_mount helper (parasite/helpers/hidden_mount.c) in a private copy of the task's mount
 * namespace with the hiding mounts unmounted, so that neither the task's namespace nor the
 * task changes.
 *
 * @module
 */
import { close, Errno, pidfdGetfd, pidfdOpen } from "../syscalls/mod.ts";
import { helperExecutable } from "../util/helper_exe.ts";

/**
 * A descriptor of a detached copy of the mount `target` (a path of task `pid`'s mount
 * namespace, as its root shows it) reaches once the mounts at `hiders` are gone (unmounted in
 * that order, lazily), taken in the namespace's own user namespace when `userns` (one not
 * criu's). The caller closes it.
 */
export async function openHiddenMount(
  pid: number,
  userns: boolean,
  target: string,
  hiders: readonly string[],
): Promise<number> {
  const child = new Deno.Command(helperExecutable("hidden_mount"), {
    args: [`${pid}`, userns ? "1" : "0", target, ...hiders],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  try {
    const reader = child.stdout.getReader();
    const got: number[] = [];
    while (got.length < 4) {
      const { value, done } = await reader.read();
      if (done) break;
      got.push(...value);
    }
    reader.releaseLock();
    if (got.length < 4) throw new Error(`the hidden_mount helper ended early`);
    const fd = new DataView(new Uint8Array(got.slice(0, 4)).buffer).getInt32(0, true);
    if (fd < 0) {
      throw new Errno("copy the hidden mount", -fd, `${target} of task ${pid}`);
    }
    const pidfd = pidfdOpen(child.pid);
    try {
      return pidfdGetfd(pidfd, fd, child.pid);
    } finally {
      close(pidfd);
    }
  } finally {
    await writer.close().catch(() => {});
    await child.stdout.cancel().catch(() => {});
    await child.status;
  }
}
