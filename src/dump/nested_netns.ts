/**
 * Network namespaces nested in the tree's: made by its tasks (a service's own, unshare(1)),
 * each read and written as the root's own is (net/netns.ts: devices, sysctls, addresses,
 * routes, rules, firewall), with a socket helper in it for the sockets that belong to it.
 *
 * @module
 */
import { isFieldSet } from "@bufbuild/protobuf";
import { nd_type, type net_device_entry, net_device_entrySchema } from "../../proto/gen/misc_pb.ts";
import { NetnsError } from "../net/in_netns.ts";
import { mapPingGroups, readNetns } from "../net/netns.ts";
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
 * devices (`rootDevices`, when the root has a namespace of its own) are read already. Their
 * socket helpers go with `stack`. Refused: a task in criu's namespace below a root with one of
 * its own, a namespace of another user namespace than the tree's, and a veth pair between two
 * of the tree's namespaces.
 */
export async function readNestedNetns(
  ctx: DumpContext,
  tree: FrozenTree,
  rootDevices: net_device_entry[] | undefined,
  stack: DisposableStack,
): Promise<void> {
  const root = tree.root;
  const rootLink = nsLink(root, "net");
  const criuLink = nsLink(Deno.pid, "net");
  const owner = relatedNamespace(`/proc/${root}/ns/user`, "owner") === undefined
    ? undefined
    : inode(`/proc/${root}/ns/user`);
  const devices = new Map<number, net_device_entry[]>();
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
    if (owner !== undefined && relatedNamespace(`/proc/${p.pid}/ns/net`, "owner") !== owner) {
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
    writeNetns(ctx, id, ns);
    ctx.nestedNets.set(link, { id, pid: p.pid, sockets });
    devices.set(p.pid, ns.devices);
  }
  if (rootDevices) devices.set(root, rootDevices);
  checkVethPairs(devices);
}

/**
 * Refuses a veth pair whose ends are in two of the tree's namespaces: each end sees the other
 * outside, so a restore would make two pairs, each with an end outside. (The kernel names the
 * peer's namespace by an id local to each namespace: the pair is told by the two ends naming
 * each other's index.)
 */
function checkVethPairs(byTask: Map<number, net_device_entry[]>): void {
  const outside = [...byTask].flatMap(([pid, ds]) =>
    ds.filter((d) =>
      d.type === nd_type.VETH && !isFieldSet(d, net_device_entrySchema.field.peerNsid)
    ).map((d) => ({ pid, d }))
  );
  for (const a of outside) {
    const b = outside.find((x) =>
      x.pid !== a.pid && x.d.ifindex === a.d.peerIfindex && x.d.peerIfindex === a.d.ifindex
    );
    if (b) {
      throw new UnsupportedError(
        `Cannot dump the network namespace of task ${a.pid}: veth ${a.d.name} has its peer ` +
          `${b.d.name} in task ${b.pid}'s, another of the tree's network namespaces; not ` +
          `supported yet`,
      );
    }
  }
}

function inode(path: string): number {
  return Number(Deno.statSync(path).ino);
}
