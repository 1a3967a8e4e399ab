/**
 * Unix sockets in the images: `unixEntry` makes a socket's files.img entry, `checkUnixSockets`
 * refuses what cannot be rebuilt (a peer outside the tree), `writeSkQueues` writes
 * sk-queues.img.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  fd_types,
  type file_entry,
  file_entrySchema,
  sk_opts_entrySchema,
  sk_packet_entrySchema,
  type sk_shutdown,
  unix_sk_entrySchema,
} from "../../proto/gen/files_pb.ts";
import { TCP_LISTEN, type UnixSocketState } from "../net/unix.ts";
import type { DumpContext } from "./context.ts";
import { noOwner, type OpenFile, UnsupportedError } from "./file_types.ts";

/** The file entry of a unix socket. */
export function unixEntry(file: OpenFile, st: UnixSocketState): file_entry {
  const i = st.info;
  return create(file_entrySchema, {
    type: fd_types.UNIXSK,
    id: file.id,
    usk: create(unix_sk_entrySchema, {
      id: file.id,
      ino: i.ino,
      type: i.type,
      state: i.state,
      flags: file.flags,
      uflags: 0,
      // For a listener, sock_diag reports its backlog in the write-queue slot.
      backlog: i.state === TCP_LISTEN ? i.wqueue : 0,
      peer: i.peer,
      fown: noOwner(),
      opts: create(sk_opts_entrySchema, {
        soSndbuf: st.sndbuf,
        soRcvbuf: st.rcvbuf,
        soSndTmoSec: st.sndTimeo[0],
        soSndTmoUsec: st.sndTimeo[1],
        soRcvTmoSec: st.rcvTimeo[0],
        soRcvTmoUsec: st.rcvTimeo[1],
      }),
      name: i.name,
      shutdown: i.shutdown as sk_shutdown,
    }),
  });
}

/** Refuses unix sockets whose other side is not in the dump, or that we cannot rebuild. */
export function checkUnixSockets(ctx: DumpContext): void {
  const dumped = new Set(
    ctx.openFiles.flatMap((f) => (f.kind.type === "unix" ? [f.kind.ino] : [])),
  );
  for (const f of ctx.openFiles) {
    if (f.kind.type !== "unix") continue;
    const i = f.kind.socket.info;
    const what = `fd ${f.owner.fd} of task ${f.owner.pid} (socket:[${i.ino}])`;
    if (i.state === TCP_LISTEN && i.icons.length) {
      throw new UnsupportedError(
        `Cannot dump ${what}: ${i.icons.length} connections wait to be accepted; not supported yet`,
      );
    }
    if (i.peer && !dumped.has(i.peer)) {
      throw new UnsupportedError(
        `Cannot dump ${what}: its peer socket:[${i.peer}] is outside the dumped tree; ` +
          `--ext-unix-sk is not supported yet`,
      );
    }
    if (i.peer && i.name.length) {
      throw new UnsupportedError(
        `Cannot dump ${what}: connected named unix sockets are not supported yet`,
      );
    }
  }
}

/** sk-queues.img: data queued in unix sockets. */
export function writeSkQueues(ctx: DumpContext): void {
  if (ctx.skQueues.size) {
    const img = ctx.image("sk-queues.img", "SK_QUEUES");
    for (const [id, queue] of ctx.skQueues) {
      for (const m of queue) {
        img.entry(
          sk_packet_entrySchema,
          create(sk_packet_entrySchema, { idFor: id, length: m.length }),
        );
        img.raw(m);
      }
    }
  }
}
