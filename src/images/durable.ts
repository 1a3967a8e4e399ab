/**
 * A directory's files made durable together. An fsync on a journaling file system (ext4, xfs)
 * commits the journal and waits for it; files synced one after another pay a commit each,
 * files synced at once share them. A dump of a tree of 21 processes (238 images, 168 MiB of
 * pages) into ext4 here spent some 300 ms in fsyncs made one by one as each image was written.
 *
 * @module
 */
import { close, fsync, inMemoryFs, O, open } from "../syscalls/mod.ts";

/** How many files are synced at once (each on a thread of Deno's blocking pool). */
const AT_ONCE = 128;

/**
 * Files of criu's own that a directory of images may hold for a while, never images: a spare
 * pages file not taken (up to 64 MiB a sync would write for nothing), a probe of the directory.
 */
export const SCRATCH_PREFIX = ".deno-criu-";

/**
 * Syncs the data and metadata of every regular file in directory `dir` (fsync), many at once,
 * but criu's scratch files ({@link SCRATCH_PREFIX}), then the directory itself (the files'
 * names); throws naming the first file that fails. On a file system in memory (tmpfs, ramfs),
 * whose fsync does nothing, it does nothing.
 */
export async function syncDirectoryFiles(dir: string): Promise<void> {
  // One descriptor of the directory: which file system it is on, and its own fsync at the end.
  const fd = open(dir, O.RDONLY | O.DIRECTORY | O.CLOEXEC, 0);
  try {
    if (!inMemoryFs(fd, dir)) {
      await syncFiles(dir);
      fsync(fd, dir);
    }
  } finally {
    close(fd);
  }
}

async function syncFiles(dir: string): Promise<void> {
  const paths = [...Deno.readDirSync(dir)]
    .filter((e) => e.isFile && !e.name.startsWith(SCRATCH_PREFIX))
    .map((e) => `${dir}/${e.name}`);
  for (let i = 0; i < paths.length; i += AT_ONCE) {
    const batch = paths.slice(i, i + AT_ONCE);
    const results = await Promise.allSettled(batch.map(async (path) => {
      using f = await Deno.open(path, { read: true });
      await f.sync();
    }));
    const failed = results.findIndex((r) => r.status === "rejected");
    if (failed >= 0) {
      const reason = (results[failed] as PromiseRejectedResult).reason as Error;
      throw new Error(`Cannot sync ${batch[failed]}: ${reason.message}`);
    }
  }
}
