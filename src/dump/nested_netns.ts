/**
 * Network namespaces nested in the tree's: made by its tasks (a service's own, unshare(1)),
 * each read and written as the root's own is (net/netns.ts: devices, sysctls, addresses,
 * routes, rules, firewall), with a socket helper in it for the sockets that belong to it.
 *
 * @module
 */
import { isFieldSet } from "../images/protobuf.ts";
import { nd_type, net_device_entrySchema } from "../../proto/gen/misc_pb.ts";
import { NetnsError } from "../net/in_netns.ts";
import { mapPingGroups, type NetnsState, readNetns } from "../net/netns.ts";
import { nsidOf } from "../net/nsid.ts";
import { NamespaceSockets, withSocketsIn } from "../net/ns_sockets.ts";
import { relatedNamespace } from "../syscalls/mod.ts";
import type { FrozenTree } from "../tree/collect.ts";
import { nsLink } from "../tree/proc.ts";
import type { DumpContext } from "./context.ts";
import { UnsupportedError } from "./file_types.ts";
import { writeNetns } from "./netns.ts";
import { tunHolders } from "./tun_files.ts";

/**
 * Reads and writes every network namespace of the tree's tasks other than the root's, whose
 * state (`rootNs`, when the root has a namespace of its own) is read already and written by
 * the caller after this: a veth pair between two of the tree's namespaces gets each end's
 * peer namespace (peer_nsid, as criu's link_nsid writes it). Their socket helpers go with
 * `stack`. Refused: a task in criu's namespace below a root with one of its own, and a
 * namespace of another user namespace than the tree's.
 */
export async function readNestedNetns(
  ctx: DumpContext,
  tree: FrozenTree,
  rootNs: NetnsState | undefined,
  stack: DisposableStack,
): Promise<void> {
  const root = tree.root;
  const rootLink = nsLink(root, "net");
  const criuLink = nsLink(Deno.pid, "net");
  // The tree's user namespace (criu's, or the root's own), which must own each.
  const owner = Number(Deno.statSync(`/proc/${root}/ns/user`).ino);
  const read: Read[] = rootNs ? [{ pid: root, ns: rootNs }] : [];
  for (const p of tree.processes) {
    if (p.zombieExit !== undefined) continue;
    const link = nsLink(p.pid, "net");
    if (link === rootLink || ctx.nestedNets.has(link)) continue;
    if (link === criuLink) {
      throw new UnsupportedError(
        `Cannot dump task ${p.pid}: it is in criu's network namespace, outside the tree's ` +
          `own (task ${root}'s)`,
      );
    }
    if (relatedNamespace(`/proc/${p.pid}/ns/net`, "owner") !== owner) {
      throw new UnsupportedError(
        `Cannot dump task ${p.pid}: its network namespace belongs to another user namespace ` +
          `than the tree's`,
      );
    }
    const id = ctx.nsIds(p.pid).netNsId!;
    const sockets = stack.use(NamespaceSockets.enter(p.pid));
    const holders = () => tunHolders(tree.processes.map((x) => x.pid));
    let ns;
    try {
      ns = await withSocketsIn(sockets, () => readNetns(p.pid, id, holders));
    } catch (e) {
      if (e instanceof NetnsError) throw new UnsupportedError(e.message);
      throw e;
    }
    mapPingGroups(ns, (g) => ctx.gid(g, "net.ipv4.ping_group_range"));
    ctx.nestedNets.set(link, { id, pid: p.pid, sockets });
    read.push({ pid: p.pid, ns, sockets });
  }
  pairVeths(read);
  for (const r of read) if (r.sockets) writeNetns(ctx, r.ns.id, r.ns);
}

/** A namespace read: a task in it, its state, its socket helper (none: the root's, current). */
interface Read {
  pid: number;
  ns: NetnsState;
  sockets?: NamespaceSockets;
}

/**
 * Gives each end of a veth pair between two of the tree's namespaces its peer's namespace.
 * Each end sees the other outside (no peer_nsid); the pair is told by the two ends naming each
 * other's index, and checked by the id each namespace gives the other (RTM_GETNSID), which is
 * the one the end shows as its peer's (link-netnsid).
 */
function pairVeths(read: Read[]): void {
  const outside = read.flatMap((r) =>
    r.ns.devices.filter((d) =>
      d.type === nd_type.VETH && !isFieldSet(d, net_device_entrySchema.field.peerNsid)
    ).map((d) => ({ r, d }))
  );
  const idIn = (from: Read, to: Read) =>
    from.sockets ? withSocketsIn(from.sockets, () => nsidOf(to.pid)) : nsidOf(to.pid);
  for (const a of outside) {
    if (isFieldSet(a.d, net_device_entrySchema.field.peerNsid)) continue;
    const b = outside.find((x) =>
      x.r !== a.r && x.d.ifindex === a.d.peerIfindex && x.d.peerIfindex === a.d.ifindex &&
      !isFieldSet(x.d, net_device_entrySchema.field.peerNsid)
    );
    if (!b) continue;
    const seenA = a.r.ns.linkNetnsids?.get(a.d.ifindex);
    const seenB = b.r.ns.linkNetnsids?.get(b.d.ifindex);
    if (seenA === undefined || seenA !== idIn(a.r, b.r)) continue;
    if (seenB === undefined || seenB !== idIn(b.r, a.r)) continue;
    a.d.peerNsid = b.r.ns.id;
    b.d.peerNsid = a.r.ns.id;
  }
}
