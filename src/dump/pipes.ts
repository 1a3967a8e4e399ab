/**
 * Pipe and FIFO contents: `peekPipe` copies what is queued without taking it, `writePipeData`
 * writes pipes-data.img / fifo-data.img.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { pipe_data_entrySchema } from "../../proto/gen/files_pb.ts";
import {
  close,
  errno,
  F,
  fcntl,
  O,
  pipe2,
  SPLICE_F_NONBLOCK,
  tee,
  tryOpen,
  tryRead,
} from "../syscalls/mod.ts";
import type { DumpContext } from "./context.ts";
import { type PipeData, UnsupportedError } from "./file_types.ts";

/**
 * Copies the bytes queued in a pipe without consuming them: a new read end is opened through
 * /proc (same pipe), and tee(2) duplicates the queue into a private pipe we then drain.
 */
export function peekPipe(pid: number, fd: number, ino: number): PipeData {
  const path = `/proc/${pid}/fd/${fd}`;
  const src = tryOpen(path, O.RDONLY | O.NONBLOCK | O.CLOEXEC);
  if (src < 0) {
    throw new UnsupportedError(`Cannot open pipe ${ino} through ${path} (errno ${-src})`);
  }
  const [r, w] = pipe2(O.CLOEXEC | O.NONBLOCK);
  try {
    const size = fcntl(src, F.GETPIPE_SZ);
    fcntl(w, F.SETPIPE_SZ, size);
    const n = tee(src, w, size, SPLICE_F_NONBLOCK);
    if (n < 0 && n !== -errno.EAGAIN) {
      throw new UnsupportedError(`Cannot copy the data of pipe ${ino} (errno ${-n})`);
    }
    const data = new Uint8Array(Math.max(n, 0));
    let off = 0;
    while (off < data.length) {
      const got = tryRead(r, data.subarray(off));
      if (got <= 0) throw new UnsupportedError(`Cannot read the data of pipe ${ino}`);
      off += got;
    }
    return { ino, data, size };
  } finally {
    close(src);
    close(r);
    close(w);
  }
}

/**
 * pipes-data.img or fifo-data.img: an entry for every pipe (its size, even when empty, as criu
 * writes it), then its queued bytes.
 */
export function writePipeData(
  ctx: DumpContext,
  file: string,
  type: "PIPES_DATA" | "FIFO_DATA",
  pipes: Map<number, PipeData>,
): void {
  if (pipes.size) {
    const img = ctx.image(file, type);
    for (const p of pipes.values()) {
      img.entry(
        pipe_data_entrySchema,
        create(pipe_data_entrySchema, { pipeId: p.ino, bytes: p.data.length, size: p.size }),
      );
      img.raw(p.data);
    }
  }
}
