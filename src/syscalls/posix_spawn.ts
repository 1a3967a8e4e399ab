/**
 * Starting a program as criu's child with posix_spawn(3), as Deno.Command does, without loading
 * Deno's process module and its streams (some 4 ms of a command that starts one helper).
 *
 * @module
 */
import { Errno } from "./errno.ts";
import { libc } from "./ffi.ts";
import { close, F, fcntl } from "./process.ts";
import { type ExecArgs, execArgs } from "./spawn.ts";

/** posix_spawn_file_actions_t and posix_spawnattr_t are 80 and 336 bytes in glibc. */
const OPAQUE = 512;
const POSIX_SPAWN_SETSIGDEF = 0x04, POSIX_SPAWN_SETSIGMASK = 0x08;
const SIGPIPE = 13;

/**
 * Starts `path` with `argv` (its argv[0] first) and the environment `env`, its standard input
 * and output descriptors `stdin` and `stdout` of ours (standard error is ours), every signal
 * unblocked and SIGPIPE at its default (Deno ignores it, and an ignored signal survives exec).
 * Returns the child's PID; it is ours to wait for.
 */
export function spawnProgram(
  path: string,
  argv: string[],
  env: Record<string, string>,
  stdio: { stdin: number; stdout: number },
): number {
  const x = execArgs(path, argv, env);
  // A descriptor among 0-2 (criu started with its standard ones closed) could be overwritten
  // by the other's dup2 in the child: copied above them for the time of the spawn.
  const lifted: number[] = [];
  const above = (fd: number) => {
    if (fd > 2) return fd;
    lifted.push(fcntl(fd, F.DUPFD_CLOEXEC, 3));
    return lifted.at(-1)!;
  };
  try {
    return spawn(path, x, above(stdio.stdin), above(stdio.stdout));
  } finally {
    for (const fd of lifted) close(fd);
  }
}

function spawn(path: string, x: ExecArgs, stdin: number, stdout: number): number {
  const actions = new Uint8Array(OPAQUE), attr = new Uint8Array(OPAQUE);
  const check = (ret: number, what: string) => {
    if (ret !== 0) throw new Errno(what, ret, path);
  };
  check(libc.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init");
  try {
    check(libc.posix_spawnattr_init(attr), "posix_spawnattr_init");
    try {
      check(libc.posix_spawn_file_actions_adddup2(actions, stdin, 0), "adddup2");
      check(libc.posix_spawn_file_actions_adddup2(actions, stdout, 1), "adddup2");
      const none = new BigUint64Array(16), pipe = new BigUint64Array(16);
      pipe[0] = 1n << BigInt(SIGPIPE - 1);
      check(libc.posix_spawnattr_setsigmask(attr, u8(none)), "posix_spawnattr_setsigmask");
      check(libc.posix_spawnattr_setsigdefault(attr, u8(pipe)), "posix_spawnattr_setsigdefault");
      check(
        libc.posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK),
        "posix_spawnattr_setflags",
      );
      const pid = new Int32Array(1);
      check(
        libc.posix_spawn(u8(pid), x.strings[0], actions, attr, u8(x.argv), u8(x.envp)),
        "posix_spawn",
      );
      return pid[0];
    } finally {
      libc.posix_spawnattr_destroy(attr);
    }
  } finally {
    libc.posix_spawn_file_actions_destroy(actions);
  }
}

function u8(a: Int32Array | BigUint64Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(a.buffer as ArrayBuffer);
}
