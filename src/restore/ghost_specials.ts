/**
 * Deleted FIFOs, directories, devices and symlinks (ghosts without contents) are made again at
 * their old names for the time of a restore: the restored descriptors, working directories and
 * FIFO ends open them there like any other file, and they are removed when the restore ends,
 * as criu does with a deleted working directory. A name taken again since the dump is refused.
 *
 * @module
 */
import { exists } from "../util/exists.ts";
import { dirname } from "../util/path.ts";
import { addressOf, cString, NR, setFileTimes, syscall } from "../syscalls/mod.ts";
import { RestoreError } from "./files.ts";
import { type DumpImages, hostPath, outsideGid, outsideUid } from "./images.ts";
import { asRootOf } from "../tree/userns.ts";
import type { ghost_file_entry } from "../../proto/gen/files_pb.ts";

const S_IFMT = 0o170000;
const S = { REG: 0o100000, DIR: 0o040000, FIFO: 0o010000, CHR: 0o020000, LNK: 0o120000 };

/** The ghosts of a restore that are not regular files, made at their old names. */
export class GhostSpecials implements Disposable {
  /** What was made, parents first. */
  readonly #made: string[] = [];

  /** Makes every such ghost of `dump` (each inode once). */
  constructor(dump: DumpImages) {
    const done = new Set<number>();
    try {
      for (const [fileId, g] of dump.ghosts) {
        const type = g.entry.mode & S_IFMT;
        if (type === S.REG || done.has(g.id)) continue;
        done.add(g.id);
        const path = dump.files.get(fileId)?.reg?.name;
        if (!path) throw new RestoreError(`The name of deleted file ${fileId} is missing`);
        // Its owner as criu sees it (the images hold the tree's view).
        const what = `deleted file ${path}`;
        const entry = {
          ...g.entry,
          uid: outsideUid(dump, g.entry.uid, what),
          gid: outsideGid(dump, g.entry.gid, what),
        };
        asRootOf(dump.userns, () => this.#make(hostPath(dump, path), type, entry));
      }
    } catch (e) {
      this[Symbol.dispose]();
      throw e;
    }
  }

  #make(path: string, type: number, e: ghost_file_entry): void {
    try {
      Deno.lstatSync(path);
      throw new RestoreError(
        `Cannot make the deleted ${what(type)} ${path} again: the name is taken since the dump`,
      );
    } catch (err) {
      if (err instanceof RestoreError) throw err;
    }
    // Directories above it that went too are made for the time of the restore, as criu does.
    const missing: string[] = [];
    for (let dir = dirname(path); !exists(dir); dir = dirname(dir)) missing.unshift(dir);
    for (const dir of missing) {
      Deno.mkdirSync(dir);
      this.#made.push(dir);
    }
    const name = cString(path);
    const AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100;
    if (type === S.DIR) {
      Deno.mkdirSync(path, { mode: e.mode & 0o7777 });
      Deno.chmodSync(path, e.mode & 0o7777);
    } else if (type === S.LNK) {
      if (!e.symlnkTarget) {
        throw new RestoreError(`The target of deleted symlink ${path} is missing`);
      }
      Deno.symlinkSync(e.symlnkTarget, path);
    } else if (type === S.FIFO || type === S.CHR) {
      syscall(NR.mknodat, "mknod", path, AT_FDCWD, addressOf(name), e.mode, e.rdev ?? 0);
    } else {
      throw new RestoreError(`Cannot make deleted ${path} again: file type 0${type.toString(8)}`);
    }
    this.#made.push(path);
    syscall(
      NR.fchownat,
      "chown",
      path,
      AT_FDCWD,
      addressOf(name),
      e.uid,
      e.gid,
      AT_SYMLINK_NOFOLLOW,
    );
    if (type !== S.LNK && e.mtim) {
      const ts = (t?: { tvSec: bigint; tvUsec: bigint }) => ({
        sec: t?.tvSec ?? 0n,
        nsec: Number(t?.tvUsec ?? 0n) * 1000,
      });
      setFileTimes(path, ts(e.atim), ts(e.mtim));
    }
  }

  /** Removes what was made (the restored tasks hold it open, deleted again). */
  [Symbol.dispose](): void {
    for (const path of this.#made.splice(0).reverse()) {
      try {
        Deno.removeSync(path);
      } catch {
        // gone already
      }
    }
  }
}

function what(type: number): string {
  return { [S.DIR]: "directory", [S.FIFO]: "FIFO", [S.CHR]: "device", [S.LNK]: "symlink" }[type] ??
    "file";
}
