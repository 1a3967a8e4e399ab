/**
 * tcp-stream-INO.img (INO in hex, as criu names it): one tcp_stream_entry followed by the
 * bytes of the receive queue and then of the send queue.
 *
 * @module
 */
import { create } from "./protobuf.ts";
import { type tcp_stream_entry, tcp_stream_entrySchema } from "../../proto/gen/tcp_stream_pb.ts";
import type { TcpStream } from "../net/tcp_repair.ts";
import { ImageError, type ImageWriter, readImage } from "./image.ts";

/** The image file name of the stream of socket `ino`. */
export function tcpStreamImageName(ino: number): string {
  return `tcp-stream-${ino.toString(16)}.img`;
}

/** Appends the entry and the queues of `t` to `img`. */
export function writeTcpStream(img: ImageWriter, t: TcpStream): void {
  const w = t.window;
  img.entry(
    tcp_stream_entrySchema,
    create(tcp_stream_entrySchema, {
      inqLen: t.inqLen,
      inqSeq: t.inqSeq,
      outqLen: t.outqLen,
      outqSeq: t.outqSeq,
      optMask: t.optMask,
      sndWscale: t.sndWscale,
      rcvWscale: t.rcvWscale,
      mssClamp: t.mssClamp,
      timestamp: t.timestamp,
      cork: t.cork,
      nodelay: t.nodelay,
      unsqLen: t.unsqLen,
      sndWl1: w.sndWl1,
      sndWnd: w.sndWnd,
      maxWindow: w.maxWindow,
      rcvWnd: w.rcvWnd,
      rcvWup: w.rcvWup,
    }),
  );
  img.raw(t.inq).raw(t.outq);
}

/** Reads the stream image at `path` for a connection in TCP state `state`. */
export function readTcpStream(path: string, state: number): TcpStream {
  const entries = readImage(path, "TCP_STREAM", tcp_stream_entrySchema, {
    payloadSize: (m: tcp_stream_entry) => m.inqLen + m.outqLen,
  });
  if (entries.length !== 1) {
    throw new ImageError(`Image ${path} has ${entries.length} entries, expected 1`);
  }
  const m = entries[0].message;
  const payload = entries[0].payload ?? new Uint8Array();
  if (payload.length !== m.inqLen + m.outqLen || m.unsqLen! > m.outqLen) {
    throw new ImageError(`Image ${path} is truncated: its queues are not all there`);
  }
  return {
    state,
    inqSeq: m.inqSeq,
    inqLen: m.inqLen,
    outqSeq: m.outqSeq,
    outqLen: m.outqLen,
    unsqLen: m.unsqLen ?? 0,
    optMask: m.optMask,
    sndWscale: m.sndWscale,
    rcvWscale: m.rcvWscale ?? 0,
    mssClamp: m.mssClamp,
    timestamp: m.timestamp ?? 0,
    cork: m.cork ?? false,
    nodelay: m.nodelay ?? false,
    window: {
      sndWl1: m.sndWl1 ?? 0,
      sndWnd: m.sndWnd ?? 0,
      maxWindow: m.maxWindow ?? 0,
      rcvWnd: m.rcvWnd ?? 0,
      rcvWup: m.rcvWup ?? 0,
    },
    inq: payload.slice(0, m.inqLen),
    outq: payload.slice(m.inqLen),
  };
}
