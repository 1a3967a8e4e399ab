/**
 * CRIU image files: framing, magics, reading and writing.
 *
 * ```
 * common image (core-PID.img, mm-PID.img, files.img, ...)
 *   +------------+-----------+-----------+----------------+-----------+------------
 *   | IMG_COMMON | type magic| u32 size  | entry (size B) | u32 size  | entry ...
 *   +------------+-----------+-----------+----------------+-----------+------------
 * service image (stats-dump, stats-restore): IMG_SERVICE, type magic, entries
 * inventory.img: INVENTORY magic alone, then entries
 * pages-N.img: raw pages, no header
 * ```
 * Sizes are u32 little-endian (not varints). Some entries carry a raw payload right after them
 * (pipes-data.img: `pipe_data_entry.bytes` bytes of pipe contents).
 *
 * Readers validate both magics, cap entry sizes before allocating, and name the file and offset
 * of any short read.
 *
 * @module
 */
import { type DescMessage, fromBinary, type MessageShape, toBinary } from "./protobuf.ts";
import { join } from "../util/path.ts";
import { MAGIC } from "./magic_table.ts";

export { MAGIC };

/** A CRIU image type name, e.g. `CORE`. */
export type MagicName = keyof typeof MAGIC;

/** Largest entry a reader accepts. */
export const MAX_ENTRY_SIZE = 64 << 20;

/**
 * Mode of every file deno-criu writes into an images directory: images hold process memory
 * (those of a tree in a user namespace of its own are shared with its root's group after:
 * dump/userns.ts).
 */
export const IMAGE_MODE = 0o600;

const SERVICE_IMAGES = new Set<MagicName>(["STATS", "IRMAP_CACHE", "KDAT"]);

/** The header words of an image of type `name` (none for RAW: a tool's own output, as criu keeps it). */
export function headerOf(name: MagicName | "RAW"): number[] {
  if (name === "RAW") return [];
  if (name === "INVENTORY") return [MAGIC.INVENTORY];
  return [SERVICE_IMAGES.has(name) ? MAGIC.IMG_SERVICE : MAGIC.IMG_COMMON, MAGIC[name]];
}

/** An image file or its contents is not what it should be. */
export class ImageError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ImageError";
  }
}

/**
 * An image being written: entries are framed in memory and written with one write and an fsync
 * on {@link ImageWriter.close}, so a crashed dump never leaves a half-framed file that looks whole.
 */
export class ImageWriter {
  readonly path: string;
  #chunks: Uint8Array[] = [];
  #size = 0;
  #closed = false;

  constructor(dir: string, file: string, type: MagicName | "RAW") {
    this.path = join(dir, file);
    const header = new Uint8Array(headerOf(type).length * 4);
    const view = new DataView(header.buffer);
    headerOf(type).forEach((m, i) => view.setUint32(i * 4, m, true));
    this.#push(header);
  }

  #push(bytes: Uint8Array): void {
    this.#chunks.push(bytes);
    this.#size += bytes.length;
  }

  /** Appends one framed entry. */
  entry<D extends DescMessage>(schema: D, message: MessageShape<D>): this {
    const body = toBinary(schema, message);
    const size = new Uint8Array(4);
    new DataView(size.buffer).setUint32(0, body.length, true);
    this.#push(size);
    this.#push(body);
    return this;
  }

  /** Appends raw bytes (a payload that follows an entry). */
  raw(bytes: Uint8Array): this {
    this.#push(bytes);
    return this;
  }

  /**
   * Writes the file (mode 0600) and, unless `sync` is false (its directory's files are to be
   * synced together: images_dir.ts ImagesDir.sync), syncs it. Idempotent.
   */
  close(sync = true): void {
    if (this.#closed) return;
    this.#closed = true;
    const all = new Uint8Array(this.#size);
    let off = 0;
    for (const c of this.#chunks) {
      all.set(c, off);
      off += c.length;
    }
    writeWholeFile(this.path, all, sync);
  }
}

/** Writes a whole file with mode 0600 and fsyncs it. */
export function writeFileSynced(path: string, data: Uint8Array): void {
  writeWholeFile(path, data, true);
}

function writeWholeFile(path: string, data: Uint8Array, sync: boolean): void {
  using f = Deno.openSync(path, { write: true, create: true, truncate: true, mode: IMAGE_MODE });
  Deno.chmodSync(path, IMAGE_MODE);
  let off = 0;
  while (off < data.length) off += f.writeSync(data.subarray(off));
  if (sync) f.syncSync();
}

/** One entry read from an image, with the raw payload that followed it if any. */
export interface ImageEntry<T> {
  /** The decoded message. */
  message: T;
  /** Payload bytes after the entry (see {@link ReadOptions.payloadSize}). */
  payload?: Uint8Array;
  /** File offset of the entry's size word. */
  offset: number;
}

/** Options for {@link readImage}. */
export interface ReadOptions<T> {
  /** Size of a raw payload following each entry (e.g. pipe data). */
  payloadSize?: (message: T) => number;
}

/** Reads the bytes of an image file, naming it in the error when missing or unreadable. */
export function readImageBytes(path: string): Uint8Array {
  try {
    return Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new ImageError(`Missing image ${path}`);
    throw new ImageError(`Cannot read image ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Checks the magic words at the start of an image; returns the offset of the first entry. */
export function checkHeader(path: string, bytes: Uint8Array, type: MagicName): number {
  const want = headerOf(type);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < want.length * 4) {
    throw new ImageError(`Image ${path} is truncated: ${bytes.length} bytes, no ${type} header`);
  }
  want.forEach((m, i) => {
    const got = view.getUint32(i * 4, true);
    if (got !== m) {
      throw new ImageError(
        `Image ${path} has magic 0x${got.toString(16)} at offset ${i * 4}, ` +
          `expected 0x${m.toString(16)} (${type})`,
      );
    }
  });
  return want.length * 4;
}

/**
 * Reads every entry of an image of type `type` as messages of `schema`.
 * Throws {@link ImageError} on a wrong magic, a truncated entry or an impossible size.
 */
export function readImage<D extends DescMessage>(
  path: string,
  type: MagicName,
  schema: D,
  options: ReadOptions<MessageShape<D>> = {},
): ImageEntry<MessageShape<D>>[] {
  const bytes = readImageBytes(path);
  return decodeEntries(path, bytes, checkHeader(path, bytes, type), schema, options);
}

/** Decodes framed entries of `schema` from `bytes` starting at `start`. */
export function decodeEntries<D extends DescMessage>(
  path: string,
  bytes: Uint8Array,
  start: number,
  schema: D,
  options: ReadOptions<MessageShape<D>> = {},
): ImageEntry<MessageShape<D>>[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: ImageEntry<MessageShape<D>>[] = [];
  let off = start;
  while (off < bytes.length) {
    if (off + 4 > bytes.length) {
      throw new ImageError(`Image ${path} is truncated at offset ${off}: partial entry size`);
    }
    const size = view.getUint32(off, true);
    if (size > MAX_ENTRY_SIZE) {
      throw new ImageError(
        `Image ${path} has an entry of impossible size ${size} at offset ${off}`,
      );
    }
    if (off + 4 + size > bytes.length) {
      throw new ImageError(
        `Image ${path} is truncated at offset ${off}: entry of ${size} bytes, ` +
          `${bytes.length - off - 4} left`,
      );
    }
    let message: MessageShape<D>;
    try {
      message = fromBinary(schema, bytes.subarray(off + 4, off + 4 + size));
    } catch (e) {
      throw new ImageError(
        `Image ${path} has a corrupt ${schema.typeName} entry at offset ${off}: ${
          (e as Error).message
        }`,
        { cause: e },
      );
    }
    const entry: ImageEntry<MessageShape<D>> = { message, offset: off };
    off += 4 + size;
    const extra = options.payloadSize?.(message) ?? 0;
    if (extra) {
      if (off + extra > bytes.length) {
        throw new ImageError(
          `Image ${path} is truncated at offset ${off}: payload of ${extra} bytes, ` +
            `${bytes.length - off} left`,
        );
      }
      entry.payload = bytes.subarray(off, off + extra);
      off += extra;
    }
    out.push(entry);
  }
  return out;
}

/**
 * The first entry of an image whose first entry has a schema of its own (pagemap_head,
 * ghost_file_entry); returns it and the offset after it.
 */
export function readHeadEntry<D extends DescMessage>(
  path: string,
  bytes: Uint8Array,
  start: number,
  schema: D,
): { message: MessageShape<D>; next: number } {
  if (bytes.length < start + 4) {
    throw new ImageError(`Image ${path} is truncated: no ${schema.typeName} entry`);
  }
  const size = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(
    start,
    true,
  );
  const [head] = decodeEntries(path, bytes.subarray(0, start + 4 + size), start, schema);
  if (!head) throw new ImageError(`Image ${path} is truncated: no ${schema.typeName} entry`);
  return { message: head.message, next: start + 4 + size };
}
