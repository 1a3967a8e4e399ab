/**
 * File locks (`-l`): `collectLocks` reads them from fdinfo, `writeLocks` writes filelocks.img.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { file_lock_entrySchema } from "../../proto/gen/files_pb.ts";
import type { DumpContext } from "./context.ts";
import { UnsupportedError } from "./file_types.ts";

/** criu's lock kinds (FL_POSIX, FL_FLOCK, FL_OFD, FL_LEASE). */
const LOCK_FLAG: Record<string, number> = { POSIX: 1, FLOCK: 2, OFDLCK: 4, LEASE: 8 };
/** A lease's type in the image: F_RDLCK, F_WRLCK, F_UNLCK, with this bit while it breaks. */
export const LEASE_BREAKING = 4;
const LEASE_TYPE: Record<string, number> = { READ: 0, WRITE: 1, UNLCK: 2 };

/**
 * Locks held through descriptor `fd`, from the "lock:" lines of its fdinfo `text` (as the caller
 * read it), refused without `-l`.
 */
export function collectLocks(
  ctx: DumpContext,
  pid: number,
  fd: number,
  fileId: number,
  text: string,
): void {
  for (
    const m of text.matchAll(
      /^lock:\s*\d+:\s*(\w+)\s+(\w+)\s+(\w+)\s+(-?\d+)\s+\S+\s+(\d+)\s+(\d+|EOF)/gm,
    )
  ) {
    const [, kind, mode, rw, , start, end] = m;
    const flag = LOCK_FLAG[kind];
    if (!ctx.opts.fileLocks) {
      throw new UnsupportedError(
        `Cannot dump fd ${fd} of task ${pid}: it holds a ${kind} lock; dump with --file-locks (-l)`,
      );
    }
    if (flag === 8) {
      // A lease belongs to the open file description: once, whichever descriptor shows it.
      // A breaking one shows the type it is being broken to.
      const key = `LEASE:${fileId}`;
      if (ctx.lockKeys.has(key)) continue;
      ctx.lockKeys.add(key);
      if ((mode !== "ACTIVE" && mode !== "BREAKING") || LEASE_TYPE[rw] === undefined) {
        throw new UnsupportedError(
          `Cannot dump fd ${fd} of task ${pid}: a ${mode} ${rw} lease is not supported`,
        );
      }
      ctx.locks.push(
        create(file_lock_entrySchema, {
          flag,
          type: LEASE_TYPE[rw] | (mode === "BREAKING" ? LEASE_BREAKING : 0),
          pid: ctx.pids.virt(pid),
          fd,
          start: 0n,
          len: 0n,
        }),
      );
      continue;
    }
    if (flag === undefined || mode !== "ADVISORY") {
      throw new UnsupportedError(
        `Cannot dump fd ${fd} of task ${pid}: ${mode} ${kind} locks are not supported`,
      );
    }
    const s = BigInt(start);
    // A lock shows on every descriptor of its file; record it once (POSIX: once per process).
    const key = `${kind}:${flag === 1 ? pid : 0}:${fileId}:${start}:${end}`;
    if (ctx.lockKeys.has(key)) continue;
    ctx.lockKeys.add(key);
    ctx.locks.push(
      create(file_lock_entrySchema, {
        flag,
        type: rw === "WRITE" ? 1 : 0,
        pid: ctx.pids.virt(pid),
        fd,
        start: s,
        len: end === "EOF" ? 0n : BigInt(end) - s + 1n,
      }),
    );
  }
}

/** filelocks.img. */
export function writeLocks(ctx: DumpContext): void {
  if (!ctx.locks.length) return;
  const img = ctx.image("filelocks.img", "FILE_LOCKS");
  for (const l of ctx.locks) img.entry(file_lock_entrySchema, l);
}
