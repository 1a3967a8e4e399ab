/**
 * Unix sockets in the images: `unixEntry` makes a socket's files.img entry, `checkUnixSockets`
 * refuses what cannot be rebuilt (a peer outside the tree), `writeSkQueues` writes
 * sk-queues.img.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  fd_types,
  type file_entry,
  file_entrySchema,
  file_perms_entrySchema,
  scm_entrySchema,
  sk_packet_entrySchema,
  type sk_shutdown,
  unix_sk_entrySchema,
} from "../../proto/gen/files_pb.ts";
import type { UnixSocketState } from "../net/unix.ts";
import { defaultOptions } from "../net/sk_opts.ts";
import type { ImageWriter } from "../images/image.ts";
import { SOCK_DGRAM } from "../syscalls/socket.ts";
import type { UnixSocketInfo } from "../net/unix_diag.ts";
import { TCP_STATE } from "../net/tcp_state.ts";
import type { DumpContext } from "./context.ts";
import { noOwner, type OpenFile, skOptsEntry, UnsupportedError } from "./file_types.ts";

/**
 * The file entry of a unix socket. A client whose connection still waits in a listener's queue
 * names the listener as its peer, as criu writes it (the socket in the queue has no descriptor
 * and no entry): `queuedAt` gives the listener of each such client, by the client's inode.
 */
export function unixEntry(
  ctx: DumpContext,
  file: OpenFile,
  st: UnixSocketState,
  queuedAt?: ReadonlyMap<number, number>,
): file_entry {
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
      // As criu: sock_diag's write-queue slot (for a listener, its backlog).
      backlog: i.wqueue,
      peer: queuedAt?.get(i.ino) ?? i.peer,
      fown: file.fown,
      opts: skOptsEntry(st.opts),
      name: i.name,
      shutdown: i.shutdown as sk_shutdown,
      filePerms: st.file && !st.file.deleted
        ? create(file_perms_entrySchema, {
          mode: st.file.mode,
          uid: ctx.uid(st.file.uid, `the owner of socket file ${i.name}`),
          gid: ctx.gid(st.file.gid, `the group of socket file ${i.name}`),
        })
        : undefined,
      nameDir: st.file?.dir,
      deleted: st.file?.deleted || undefined,
      nsId: file.kind.type === "unix" ? file.kind.netNsId : undefined,
    }),
  });
}

/**
 * Refuses unix sockets that cannot be rebuilt: a peer outside the tree, a server side whose
 * listener is not dumped, a connection waiting in a listener's queue with data in it (a client
 * is connected again at restore; what it sent before cannot be).
 */
export function checkUnixSockets(ctx: DumpContext, files: ImageWriter): void {
  const socks = new Map<number, OpenFile>();
  for (const f of ctx.openFiles) if (f.kind.type === "unix") socks.set(f.kind.ino, f);
  const info = (f: OpenFile) => (f.kind as { socket: UnixSocketState }).socket.info;
  const same = (a: Uint8Array, b: Uint8Array) =>
    a.length === b.length && a.every((x, i) => x === b[i]);
  const listeners = [...socks.values()].filter((f) =>
    info(f).state === TCP_STATE.LISTEN && info(f).name.length
  );
  const pending = new Set<number>();
  const externals = new Map<number, UnixSocketInfo>();
  for (const l of listeners) {
    const li = info(l);
    // sock_diag lists a listener's waiting connections by their clients' inodes.
    for (const client of li.icons) {
      const what = `fd ${l.owner.fd} of task ${l.owner.pid} (socket:[${li.ino}])`;
      const c = socks.get(client);
      if (!c) {
        throw new UnsupportedError(
          `Cannot dump ${what}: a connection waiting to be accepted comes from outside the ` +
            `dumped tree; --ext-unix-sk is not supported yet`,
        );
      }
      const ino = info(c).peer;
      const e = ctx.unixSockets?.get(ino) ??
        {
          ...li,
          ino,
          state: 1,
          peer: client,
          rqueue: info(c).wqueue,
          wqueue: 0,
          icons: [],
          shutdown: 0,
        };
      if (e.rqueue) {
        throw new UnsupportedError(
          `Cannot dump ${what}: a connection waiting to be accepted has data queued; not supported yet`,
        );
      }
      pending.add(ino);
    }
  }
  for (const f of socks.values()) {
    const i = info(f);
    const what = `fd ${f.owner.fd} of task ${f.owner.pid} (socket:[${i.ino}])`;
    if (i.peer && !socks.has(i.peer) && !pending.has(i.peer)) {
      const peer = ctx.unixSockets?.get(i.peer);
      // --external unix[INO]: the user lets it come back disconnected (or gives it with
      // --inherit-fd fd[N]:socket:[INO]).
      const letGo = ctx.opts.external?.includes(`unix[${i.ino}]`) && peer;
      // --ext-unix-sk: a datagram socket connected to a named socket outside is connected to
      // that name again at restore (the outside socket is not ours to make).
      if (letGo) {
        ctx.log.warn(`${what}: its peer socket:[${i.peer}] is outside; it comes back disconnected`);
      } else if (!ctx.opts.extUnixSk || i.type !== SOCK_DGRAM || !peer?.name.length) {
        throw new UnsupportedError(
          `Cannot dump ${what}: its peer socket:[${i.peer}] is outside the dumped tree` +
            (ctx.opts.extUnixSk
              ? "; only a datagram socket connected to a named one can be restored so"
              : "; dump with --ext-unix-sk if it is a named datagram socket, or with " +
                `--external unix[${i.ino}] to restore it disconnected`),
        );
      }
      if (!externals.has(peer.ino)) externals.set(peer.ino, peer);
    }
    const serverSide = i.type !== SOCK_DGRAM && i.peer && i.name.length &&
      i.state !== TCP_STATE.LISTEN;
    if (serverSide && !listeners.some((l) => same(info(l).name, i.name))) {
      const peer = socks.get(i.peer);
      const peerIsServer = peer && info(peer).name.length &&
        listeners.some((l) => same(info(l).name, info(peer).name));
      // Its listener closed since: made again for a moment at the restore, when the other
      // side (unnamed) says which one was accepted.
      const listenerGone = peer && !info(peer).name.length;
      if (!peerIsServer && !listenerGone) {
        throw new UnsupportedError(
          `Cannot dump ${what}: it was accepted from a listening socket that is not in the ` +
            `dumped tree, or both its ends are named; not supported yet`,
        );
      }
    }
  }
  // The outside peers, as criu writes them: entries of their own, marked external.
  for (const peer of externals.values()) {
    const id = ctx.fileId();
    files.entry(
      file_entrySchema,
      create(file_entrySchema, {
        type: fd_types.UNIXSK,
        id,
        usk: create(unix_sk_entrySchema, {
          id,
          ino: peer.ino,
          type: peer.type,
          state: peer.state,
          flags: 2,
          uflags: USK_EXTERN,
          backlog: 0,
          peer: 0,
          fown: noOwner(),
          opts: skOptsEntry(defaultOptions()),
          name: peer.name,
        }),
      }),
    );
  }
}

/** unix_sk_entry uflags: a socket outside the tree (criu's USK_EXTERN). */
const USK_EXTERN = 1;

/** sk-queues.img: data queued in unix sockets. */
export function writeSkQueues(ctx: DumpContext): void {
  if (ctx.skQueues.size) {
    const img = ctx.image("sk-queues.img", "SK_QUEUES");
    for (const [id, queue] of ctx.skQueues) {
      for (const m of queue) {
        // Descriptors in flight with it, by file entry (SCM_RIGHTS), as criu writes them.
        const scm = m.ids?.length ? [create(scm_entrySchema, { type: 1, rights: m.ids })] : [];
        img.entry(
          sk_packet_entrySchema,
          create(sk_packet_entrySchema, { idFor: id, length: m.data.length, scm }),
        );
        img.raw(m.data);
      }
    }
  }
}

/** The listener each waiting client is queued at (client inode to listener inode). */
export function queuedClients(all: ReadonlyMap<number, UnixSocketInfo>): Map<number, number> {
  const out = new Map<number, number>();
  for (const l of all.values()) for (const client of l.icons) out.set(client, l.ino);
  return out;
}
