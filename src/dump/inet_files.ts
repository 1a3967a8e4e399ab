/**
 * Inet sockets in the images: `inetEntry` makes a TCP or UDP socket's files.img entry.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  fd_types,
  type file_entry,
  file_entrySchema,
  inet_sk_entrySchema,
  ip_opts_entrySchema,
  ip_opts_raw_entrySchema,
  tcp_opts_entrySchema,
} from "../../proto/gen/files_pb.ts";
import type { InetSocketState } from "../net/inet.ts";
import { AF_INET6 } from "../syscalls/socket.ts";
import { type OpenFile, skOptsEntry } from "./file_types.ts";

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
      fown: file.fown,
      opts: skOptsEntry(o),
      nsId: file.kind.type === "inet" ? file.kind.netNsId : undefined,
      ipOpts: create(ip_opts_entrySchema, {
        freebind: s.ip.freebind || undefined,
        pktinfo: s.ip.pktinfo || undefined,
        tos: s.ip.tos || undefined,
        ttl: s.ip.ttl || undefined,
        raw: s.ip.raw
          ? create(ip_opts_raw_entrySchema, {
            hdrincl: s.ip.raw.hdrincl || undefined,
            nodefrag: s.ip.raw.nodefrag || undefined,
            icmpvFilter: s.ip.raw.icmpFilter,
          })
          : undefined,
      }),
      tcpOpts: s.tcp
        ? create(tcp_opts_entrySchema, {
          cork: s.tcp.cork,
          nodelay: s.tcp.nodelay,
          keepcnt: o.keepcnt || undefined,
          keepidle: o.keepidle || undefined,
          keepintvl: o.keepintvl || undefined,
        })
        : undefined,
      shutdown: s.shutdown || undefined,
      v6only: s.family === AF_INET6 ? s.v6only : undefined,
    }),
  });
}
