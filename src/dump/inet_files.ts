/**
 * Inet sockets in the images: `inetEntry` makes a TCP or UDP socket's files.img entry,
 * `inetState` reads one back for the restorer.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  fd_types,
  type file_entry,
  file_entrySchema,
  inet_sk_entrySchema,
  sk_opts_entrySchema,
} from "../../proto/gen/files_pb.ts";
import type { InetSocketState } from "../net/inet.ts";
import { noOwner, type OpenFile } from "./file_types.ts";

/** The file entry of an IPv4 or IPv6 socket. */
export function inetEntry(file: OpenFile, s: InetSocketState): file_entry {
  const o = s.opts;
  return create(file_entrySchema, {
    type: fd_types.INETSK,
    id: file.id,
    isk: create(inet_sk_entrySchema, {
      id: file.id,
      ino: file.kind.type === "inet" ? file.kind.ino : 0,
      family: s.family,
      type: s.type,
      proto: s.proto,
      state: s.state,
      srcPort: s.srcPort,
      dstPort: s.dstPort,
      flags: file.flags,
      backlog: s.backlog,
      srcAddr: s.srcAddr,
      dstAddr: s.dstAddr,
      fown: noOwner(),
      opts: create(sk_opts_entrySchema, {
        soSndbuf: o.sndbuf,
        soRcvbuf: o.rcvbuf,
        soSndTmoSec: o.sndTimeo[0],
        soSndTmoUsec: o.sndTimeo[1],
        soRcvTmoSec: o.rcvTimeo[0],
        soRcvTmoUsec: o.rcvTimeo[1],
        reuseaddr: o.reuseaddr,
        soReuseport: o.reuseport,
        soKeepalive: o.keepalive,
        soBroadcast: o.broadcast,
        soPriority: o.priority,
        soRcvlowat: o.rcvlowat,
        soMark: o.mark,
        soBoundDev: o.boundDev || undefined,
        tcpKeepcnt: o.keepcnt || undefined,
        tcpKeepidle: o.keepidle || undefined,
        tcpKeepintvl: o.keepintvl || undefined,
      }),
      v6only: s.family === 10 ? s.v6only : undefined,
    }),
  });
}

/** Reads an inet_sk_entry back into the state the restorer needs. */
export function inetState(e: NonNullable<file_entry["isk"]>): InetSocketState {
  const o = e.opts!;
  return {
    family: e.family,
    type: e.type,
    proto: e.proto,
    state: e.state,
    srcPort: e.srcPort,
    dstPort: e.dstPort,
    srcAddr: e.srcAddr,
    dstAddr: e.dstAddr,
    backlog: e.backlog,
    v6only: e.v6only ?? false,
    opts: {
      sndbuf: o.soSndbuf,
      rcvbuf: o.soRcvbuf,
      sndTimeo: [o.soSndTmoSec, o.soSndTmoUsec],
      rcvTimeo: [o.soRcvTmoSec, o.soRcvTmoUsec],
      reuseaddr: o.reuseaddr ?? false,
      reuseport: o.soReuseport ?? false,
      keepalive: o.soKeepalive ?? false,
      broadcast: o.soBroadcast ?? false,
      priority: o.soPriority ?? 0,
      rcvlowat: o.soRcvlowat ?? 0,
      mark: o.soMark ?? 0,
      boundDev: o.soBoundDev ?? "",
      keepcnt: o.tcpKeepcnt ?? 0,
      keepidle: o.tcpKeepidle ?? 0,
      keepintvl: o.tcpKeepintvl ?? 0,
    },
  };
}
