/**
 * The kinds of network device a namespace of the tree's may hold, and the settings of each that
 * its image does not carry. criu's netdev image keeps, for every device, its index, name, MTU,
 * flags, address, master and conf sysctls, and for a macvlan its mode and flags; nothing of a
 * bridge's STP timers, a port's cost or a device's queue length. Those are checked instead: the
 * devices are made again the way a restore makes them, in a scratch namespace, and any setting
 * that comes out different there is refused by name, since the restore would silently lose it.
 *
 * @module
 */
import { inNetns, NetnsError, shellQuote } from "./in_netns.ts";

/** A network device as `ip -j -d link` shows it. */
export interface Link {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  link_type: string;
  address?: string;
  qdisc?: string;
  /** The master's name (a bridge's port). */
  master?: string;
  /** A veth's peer or a macvlan's lower device: by name when in this namespace, else by index
   * in the namespace of `link_netnsid`. */
  link?: string;
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: {
    info_kind?: string;
    info_data?: Record<string, unknown>;
    info_slave_kind?: string;
    info_slave_data?: Record<string, unknown>;
  };
  [key: string]: unknown;
}

/** Reads every device of the network namespace of task `pid` (a fresh one when undefined). */
export async function readLinks(pid: number | undefined, setup?: string): Promise<Link[]> {
  const argv = setup === undefined
    ? ["ip", "-j", "-d", "link", "show"]
    : ["sh", "-c", `set -e\n${setup}\nexec ip -j -d link show`];
  return JSON.parse(new TextDecoder().decode(await inNetns(pid, argv))) as Link[];
}

/** The device kinds made again, beside the loopback. */
export const MADE_KINDS = ["veth", "tun", "bridge", "macvlan"] as const;

/** IFLA_MACVLAN_MODE values by the names `ip` prints. */
export const MACVLAN_MODES: Record<string, number> = {
  private: 1,
  vepa: 2,
  bridge: 4,
  passthru: 8,
  source: 16,
};

/** IFLA_MACVLAN_FLAGS bits by the names `ip` prints. */
export const MACVLAN_FLAGS: Record<string, number> = { nopromisc: 1, nodst: 2 };

/** The `ip link add ... type macvlan` words for `mode` and `flags`. */
export function macvlanArgs(mode: number, flags: number): string[] {
  const name = Object.keys(MACVLAN_MODES).find((k) => MACVLAN_MODES[k] === mode);
  if (!name) throw new NetnsError(`macvlan mode ${mode} is unknown`);
  const out = ["mode", name];
  for (const [f, bit] of Object.entries(MACVLAN_FLAGS)) if (flags & bit) out.push(f);
  return out;
}

/** A macvlan's mode and flags as `ip -j -d` shows them. */
export function macvlanOf(l: Link): { mode: number; flags: number } {
  const data = l.linkinfo?.info_data ?? {};
  const mode = MACVLAN_MODES[String(data.mode)];
  if (mode === undefined) {
    throw new NetnsError(`macvlan ${l.ifname} has mode ${data.mode}, which is unknown`);
  }
  let flags = 0;
  for (const [f, bit] of Object.entries(MACVLAN_FLAGS)) if (data[f]) flags |= bit;
  return { mode, flags };
}

/** Device-wide settings compared with a device made afresh (`ip -j -d link` keys). */
const LINK_KEYS = [
  "txqlen",
  "group",
  "ifalias",
  "linkmode",
  "inet6_addr_gen_mode",
  "num_tx_queues",
  "num_rx_queues",
  "gso_max_size",
  "gso_max_segs",
  "gro_max_size",
  "gso_ipv4_max_size",
  "gro_ipv4_max_size",
  "proto_down",
  "link_type",
  "qdisc",
];

/** State, not settings: identifiers, timers and STP's running results. */
const DERIVED = new RegExp(
  "(_timer|_id)$|^(designated_.*|state|id|no|root_port|root_path_cost|topology_change.*|" +
    "config_pending|usedbcqueuelen|persist|numqueues|numdisabled)$",
);

/**
 * Refuses a device of task `pid`'s namespace that a restore would make differently: a kind not
 * made again, a macvlan on a device of the same namespace or in source mode, or any setting of
 * a device (its queueing discipline too), its kind or its bridge port that differs from the
 * same devices made afresh and brought up as they were. The devices in `secret` have a stable_secret, which the restore
 * writes again: they generate IPv6 addresses in stable-privacy mode.
 */
export async function checkLinks(pid: number, links: Link[], secret: Set<string>): Promise<void> {
  const fail = (l: Link, what: string) => {
    throw new NetnsError(
      `Cannot dump the network namespace of task ${pid}: its device ${l.ifname} ${what}`,
    );
  };
  for (const l of links) {
    const kind = l.linkinfo?.info_kind;
    if (l.link_type === "loopback") continue;
    if (!MADE_KINDS.includes(kind as typeof MADE_KINDS[number])) {
      fail(
        l,
        `(${kind ?? l.link_type}) is not supported yet; only the loopback, ${
          MADE_KINDS.join(", ")
        } devices are`,
      );
    }
    if (kind === "macvlan") {
      if (l.link !== undefined) {
        fail(
          l,
          `is a macvlan on ${l.link}, a device of its own namespace; criu's images name a macvlan's lower device only outside it`,
        );
      }
      if (l.linkinfo?.info_data?.mode === "source") {
        fail(l, "is a macvlan in source mode, whose list of source addresses is not carried");
      }
    }
  }
  const fresh = new Map((await readLinks(undefined, replica(links))).map((l) => [l.ifname, l]));
  for (const l of links) {
    const f = fresh.get(l.ifname);
    if (!f) fail(l, "could not be made afresh to compare its settings");
    const [li, fi] = [l.linkinfo ?? {}, f!.linkinfo ?? {}];
    // A macvlan's offload sizes are its lower device's.
    const linkKey = (k: string) =>
      LINK_KEYS.includes(k) && !(li.info_kind === "macvlan" && /_max_/.test(k)) &&
      !(k === "inet6_addr_gen_mode" && l[k] === "stable_secret" && secret.has(l.ifname) &&
        l.link_type !== "none") &&
      // A device without a hardware address (a tun) gets random addresses once it has a
      // carrier, which one made afresh lacks.
      !(k === "inet6_addr_gen_mode" && l[k] === "random" && l.link_type === "none");
    const kindKey = (k: string) => !DERIVED.test(k);
    const compared: [string, Record<string, unknown>, Record<string, unknown>, typeof linkKey][] = [
      ["", l, f!, linkKey],
      [`${li.info_kind} setting `, li.info_data ?? {}, fi.info_data ?? {}, kindKey],
      [
        `${li.info_slave_kind} port setting `,
        li.info_slave_data ?? {},
        fi.info_slave_data ?? {},
        kindKey,
      ],
    ];
    for (const [what, a, b, keep] of compared) {
      for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
        if (!keep(k) || JSON.stringify(a[k]) === JSON.stringify(b[k])) continue;
        fail(
          l,
          `has ${what}${k} ${JSON.stringify(a[k] ?? "unset")} (made afresh: ${
            JSON.stringify(b[k] ?? "unset")
          }), which is not carried`,
        );
      }
    }
  }
  if (links.some((l) => l.linkinfo?.info_kind === "bridge")) await checkFdb(pid, links);
}

/** An entry of `bridge -j fdb show`. */
interface FdbEntry {
  mac: string;
  ifname: string;
  flags?: string[];
  master?: string;
  state?: string;
}

/**
 * Refuses a bridge forwarding entry the restore would not make again: one added by hand
 * (static, or permanent for another address than its port's own). criu's images carry none;
 * the bridge makes its ports' own again, and learned ones are learned again.
 */
async function checkFdb(pid: number, links: Link[]): Promise<void> {
  const out = await inNetns(pid, ["bridge", "-j", "fdb", "show"]);
  const entries = JSON.parse(new TextDecoder().decode(out)) as FdbEntry[];
  const own = new Map(links.map((l) => [l.ifname, l.address]));
  const added = entries.find((e) =>
    e.master !== undefined && !e.flags?.includes("self") &&
    (e.state === "static" || (e.state === "permanent" && e.mac !== own.get(e.ifname)))
  );
  if (added) {
    throw new NetnsError(
      `Cannot dump the network namespace of task ${pid}: bridge ${added.master} has a ` +
        `${added.state} forwarding entry for ${added.mac} on ${added.ifname}, which is not ` +
        `carried`,
    );
  }
}

/**
 * A shell script making `links` in a fresh namespace as a restore makes them: same names,
 * kinds, tun flags, macvlan modes and bridge ports, up where they were; outside peers and lower
 * devices stand in as veths.
 */
function replica(links: Link[]): string {
  const names = new Set(links.map((l) => l.ifname));
  let n = 0;
  const spare = () => {
    let s;
    do s = `criu-x${n++}`; while (names.has(s));
    return s;
  };
  const q = shellQuote;
  const lines: string[] = [];
  const made = new Set<string>();
  // Stand-ins for lower devices come up first, then the devices that were up.
  const ups: string[] = [];
  for (const l of links) {
    const kind = l.linkinfo?.info_kind;
    if (l.link_type === "loopback" || made.has(l.ifname)) continue;
    made.add(l.ifname);
    if (kind === "bridge") lines.push(`ip link add ${q(l.ifname)} type bridge`);
    else if (kind === "veth") {
      const peer = l.link !== undefined && names.has(l.link) ? l.link : spare();
      made.add(peer);
      lines.push(`ip link add ${q(l.ifname)} type veth peer name ${q(peer)}`);
    } else if (kind === "tun") {
      const d = l.linkinfo?.info_data ?? {};
      const words = [`mode ${d.type === "tap" ? "tap" : "tun"}`];
      for (const f of ["pi", "vnet_hdr", "multi_queue"]) if (d[f]) words.push(f);
      for (const f of ["user", "group"]) {
        if (d[f] !== undefined) words.push(`${f} ${q(String(d[f]))}`);
      }
      lines.push(`ip tuntap add ${q(l.ifname)} ${words.join(" ")}`);
    } else if (kind === "macvlan") {
      const lower = spare();
      ups.push(lower);
      const { mode, flags } = macvlanOf(l);
      lines.push(
        `ip link add ${q(lower)} type veth peer name ${q(spare())}`,
        `ip link add ${q(l.ifname)} link ${q(lower)} type macvlan ${
          macvlanArgs(mode, flags).join(" ")
        }`,
      );
    }
  }
  for (const l of links) {
    if (l.master !== undefined) lines.push(`ip link set ${q(l.ifname)} master ${q(l.master)}`);
  }
  ups.push(...links.filter((l) => l.flags.includes("UP")).map((l) => l.ifname));
  for (const n of ups) lines.push(`ip link set ${q(n)} up`);
  return lines.join("\n");
}
