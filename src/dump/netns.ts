/**
 * The images of the tree's own network namespace (net/netns.ts reads it): netdev-ID.img,
 * netns-ID.img, and the tools' raw outputs (ifaddr-ID.img, route-ID.img, ...), ID being the
 * namespace's id in ids-PID.img.
 *
 * @module
 */
import { net_device_entrySchema, netns_entrySchema } from "../../proto/gen/misc_pb.ts";
import { NETNS_RAW_IMAGES, type NetnsState } from "../net/netns.ts";
import type { DumpContext } from "./context.ts";

/** Writes the images of network namespace `id`. */
export function writeNetns(ctx: DumpContext, id: number, ns: NetnsState): void {
  const dev = ctx.image(`netdev-${id}.img`, "NETDEV");
  for (const d of ns.devices) dev.entry(net_device_entrySchema, d);
  ctx.image(`netns-${id}.img`, "NETNS").entry(netns_entrySchema, ns.netns);
  for (const name of NETNS_RAW_IMAGES) {
    ctx.image(`${name}-${id}.img`, "RAW").raw(ns.saved.get(name) ?? new Uint8Array());
  }
}
