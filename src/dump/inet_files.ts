/**
 * Inet sockets in the images: `inetEntry` makes a TCP or UDP socket's files.img entry.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  fd_types,
  type file_entry,
  file_entrySchema,
  inet_sk_entrySchema,
} from "../../proto/gen/files_pb.ts";
import type { InetSocketState } from "../net/inet.ts";
import { AF_INET6 } from "../syscalls/socket.ts";
import { noOwner, type OpenFile, skOptsEntry } from "./file_types.ts";

/** The file entry of IPv4 or IPv6 socket `ino`. */
export function inetEntry(file: OpenFile, ino: number, s: InetSocketState): file_entry {
  const o = s.opts;
  return create(file_entrySchema, {
    type: fd_types.INETSK,
    id: file.id,
    isk: create(inet_sk_entrySchema, {
      id: file.id,
      ino,
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
      opts: skOptsEntry(o, {
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
      v6only: s.family === AF_INET6 ? s.v6only : undefined,
    }),
  });
}
