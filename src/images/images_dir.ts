/**
 * An images directory: where a dump writes its images and a restore, a page server or the
 * lazy-pages daemon reads them, with its link to the parent images (`parent`, made from
 * `--prev-images-dir`) that pre-dumps chain. A directory an RPC caller passes by descriptor
 * (`images_dir_fd`) is reached through /proc/PID/fd/N.
 *
 * ```
 *  dump-3/  pagemap-1.img pages-1.img ... parent -> ../dump-2
 *  dump-2/  pagemap-1.img pages-1.img ... parent -> ../dump-1
 *  dump-1/  pagemap-1.img pages-1.img ...
 * ```
 *
 * @module
 */
import { join } from "../util/path.ts";
import { exists } from "../util/exists.ts";
import { ImageWriter, type MagicName } from "./image.ts";
import { syncDirectoryFiles } from "./durable.ts";

/** The name of the link to the parent images. */
const PARENT = "parent";

/** An images directory. */
export class ImagesDir {
  /** Where it is. */
  readonly path: string;

  constructor(path: string) {
    this.path = path;
  }

  /** The path of file `name` in it. */
  file(name: string): string {
    return join(this.path, name);
  }

  /** The names of the files in it. */
  names(): string[] {
    return [...Deno.readDirSync(this.path)].map((e) => e.name);
  }

  /** Whether it holds file `name`. */
  has(name: string): boolean {
    return exists(this.file(name));
  }

  /** Its parent images, when it links to some that are there. */
  get parent(): ImagesDir | undefined {
    const up = this.ancestor(1);
    return exists(join(up.path, ".")) ? up : undefined;
  }

  /** The images `depth` links up the chain (0: these), reached through the links. */
  ancestor(depth: number): ImagesDir {
    return depth === 0 ? this : new ImagesDir(join(this.path, ...Array(depth).fill(PARENT)));
  }

  /**
   * Links `prev` (`--prev-images-dir`: a path as given, relative to this directory) as its
   * parent, in place of any link there was; refused when nothing is there.
   */
  linkParent(prev: string): void {
    const link = this.file(PARENT);
    try {
      Deno.removeSync(link);
    } catch {
      // none yet
    }
    Deno.symlinkSync(prev, link);
    if (!this.parent) {
      throw new Error(`The parent images ${prev} (--prev-images-dir) do not exist`);
    }
  }

  /** An image to write in it (written and synced when closed). */
  writer(name: string, type: MagicName | "RAW"): ImageWriter {
    return new ImageWriter(this.path, name, type);
  }

  /**
   * Makes every file in it durable, and then their names: the files together (durable.ts), so
   * that whoever writes them may leave them unsynced until now.
   */
  sync(): Promise<void> {
    return syncDirectoryFiles(this.path);
  }
}
