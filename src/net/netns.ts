/**
 * A network namespace of the tree's own (the root made it), as criu carries one: its devices
 * (netdev-ID.img; only the loopback so far), its own sysctls (netns-ID.img: ipv4 and ipv6
 * conf/all and conf/default, net.unix, ping_group_range; each device's conf in its entry),
 * and what iproute2, iptables and nft save of it, kept as they print it (ifaddr-ID.img,
 * route-ID.img, route6-ID.img, rule-ID.img, iptables-ID.img, ip6tables-ID.img,
 * nftables-ID.img). Restored by the same tools in the new namespace.
 *
 * Deno cannot enter a namespace (setns is per thread, and it must not fork), so the tools run
 * under nsenter(1) with the namespace of a task in it; a fresh namespace (unshare(1)) gives the
 * defaults to compare with. Any writable sysctl under /proc/sys/net that differs from a fresh
 * namespace's and is not carried is refused by name: the restore would silently lose it.
 *
 * @module
 */
import { create, isFieldSet } from "../images/protobuf.ts";
import { inNetns, NetnsError, shellQuote } from "./in_netns.ts";
import { checkLinks, type Link, macvlanArgs, macvlanOf, readLinks } from "./netdev_kinds.ts";
import { makeTunDevice, readTunLinks, type TunHolder, type TunMaker } from "./tun.ts";
import { close, IFF_TUN } from "../syscalls/mod.ts";
import {
  macvlan_link_entrySchema,
  nd_type,
  type net_device_entry,
  net_device_entrySchema,
  type netns_entry,
  netns_entrySchema,
  type sysctl_entry,
  sysctl_entrySchema,
  sysctl_type,
} from "../../proto/gen/misc_pb.ts";

/** ipv4 conf names, in the order of criu's conf4 arrays. */
export const DEVCONFS4 = [
  "accept_local",
  "accept_redirects",
  "accept_source_route",
  "arp_accept",
  "arp_announce",
  "arp_filter",
  "arp_ignore",
  "arp_notify",
  "bootp_relay",
  "disable_policy",
  "disable_xfrm",
  "force_igmp_version",
  "forwarding",
  "igmpv2_unsolicited_report_interval",
  "igmpv3_unsolicited_report_interval",
  "log_martians",
  "medium_id",
  "promote_secondaries",
  "proxy_arp",
  "proxy_arp_pvlan",
  "route_localnet",
  "rp_filter",
  "secure_redirects",
  "send_redirects",
  "shared_media",
  "src_valid_mark",
  "tag",
  "ignore_routes_with_linkdown",
  "drop_gratuitous_arp",
  "drop_unicast_in_l2_multicast",
] as const;

/** ipv6 conf names, in the order of criu's conf6 arrays (stable_secret is a string). */
export const DEVCONFS6 = [
  "accept_dad",
  "accept_ra",
  "accept_ra_defrtr",
  "accept_ra_from_local",
  "accept_ra_min_hop_limit",
  "accept_ra_mtu",
  "accept_ra_pinfo",
  "accept_ra_rt_info_max_plen",
  "accept_ra_rtr_pref",
  "accept_redirects",
  "accept_source_route",
  "autoconf",
  "dad_transmits",
  "disable_ipv6",
  "drop_unicast_in_l2_multicast",
  "drop_unsolicited_na",
  "force_mld_version",
  "force_tllao",
  "forwarding",
  "hop_limit",
  "ignore_routes_with_linkdown",
  "keep_addr_on_down",
  "max_addresses",
  "max_desync_factor",
  "mldv1_unsolicited_report_interval",
  "mldv2_unsolicited_report_interval",
  "mtu",
  "ndisc_notify",
  "optimistic_dad",
  "proxy_ndp",
  "regen_max_retry",
  "router_probe_interval",
  "router_solicitation_delay",
  "router_solicitation_interval",
  "router_solicitations",
  "stable_secret",
  "suppress_frag_ndisc",
  "temp_prefered_lft",
  "temp_valid_lft",
  "use_oif_addrs_only",
  "use_optimistic",
  "use_tempaddr",
] as const;

const SYS = "/proc/sys/net";
const UNIX_CONF = ["max_dgram_qlen"] as const;
const IPV4_SYSCTLS = ["ping_group_range"] as const;

/** ifi_flags bits by the names `ip -j link` prints. */
const IFF: Record<string, number> = {
  UP: 0x1,
  BROADCAST: 0x2,
  DEBUG: 0x4,
  LOOPBACK: 0x8,
  POINTOPOINT: 0x10,
  NOTRAILERS: 0x20,
  RUNNING: 0x40,
  NOARP: 0x80,
  PROMISC: 0x100,
  ALLMULTI: 0x200,
  MASTER: 0x400,
  SLAVE: 0x800,
  MULTICAST: 0x1000,
  PORTSEL: 0x2000,
  AUTOMEDIA: 0x4000,
  DYNAMIC: 0x8000,
  LOWER_UP: 0x10000,
  DORMANT: 0x20000,
  ECHO: 0x40000,
};

/** Every writable sysctl under /proc/sys/net of the namespace, by path. */
async function readSysctls(pid: number | undefined): Promise<Map<string, string>> {
  const text = new TextDecoder().decode(
    await inNetns(pid, [
      "sh",
      "-c",
      `find ${SYS} -type f -perm -200 -print0 | xargs -0 grep -s -H '' || true`,
    ]),
  );
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    const [path, value] = [line.slice(0, i), line.slice(i + 1)];
    out.set(path, out.has(path) ? `${out.get(path)}\n${value}` : value);
  }
  return out;
}

/** Where the outside end of a veth goes at restore (`--external veth[IN]:NAME[@BRIDGE]`). */
export interface VethOutside {
  name: string;
  bridge?: string;
}

/** The devices outside the namespace its own devices hang on, by their names inside. */
export interface OutsideLinks {
  /** `--external veth[IN]:NAME[@BRIDGE]`: the outside end of each veth. */
  veths?: Map<string, VethOutside>;
  /** `--external macvlan[IN]:NAME`: the lower device of each macvlan. */
  macvlans?: Map<string, string>;
}

/** The image type of each device kind made again. */
const ND_TYPES: Record<string, nd_type> = {
  veth: nd_type.VETH,
  tun: nd_type.TUN,
  bridge: nd_type.BRIDGE,
  macvlan: nd_type.MACVLAN,
};

/** What a dump keeps of a network namespace. */
export interface NetnsState {
  /** Its id in ids-PID.img, which names its images and its devices' peers inside it. */
  id: number;
  devices: net_device_entry[];
  netns: netns_entry;
  /** Raw outputs of the tools, by image name prefix (ifaddr, route, ...). */
  saved: Map<string, Uint8Array>;
  /**
   * At the dump, the id this namespace gives the namespace of each device's peer or lower
   * device outside it (`link-netnsid`), by the device's index.
   */
  linkNetnsids?: Map<number, number>;
  /**
   * The key the dump gave a namespace named external (`--external net[INODE]:KEY`): nothing of
   * it is in the images; the restore joins the namespace the caller gives for KEY.
   */
  external?: string;
}

/**
 * Veth pairs between two of the tree's network namespaces, at restore (criu's link_nsid): the
 * end made first makes both, its peer in the other namespace.
 */
export interface VethsAcross {
  /** A task in namespace `id` (the tree's id), made by now; its devices may not be. */
  pidOf(id: number): number | undefined;
  /** The devices of namespace `id` in the images. */
  devicesOf(id: number): net_device_entry[] | undefined;
  /** The ends made so far, as "NSID:IFINDEX". */
  made: Set<string>;
}

function entries(
  values: Map<string, string>,
  dir: string,
  names: readonly string[],
): sysctl_entry[] {
  return names.map((name) => {
    const v = values.get(`${dir}/${name}`);
    if (name === "stable_secret" || name === "ping_group_range") {
      return create(sysctl_entrySchema, { type: sysctl_type.CTL_STR, sarg: v });
    }
    return create(sysctl_entrySchema, {
      type: sysctl_type.CTL_32,
      iarg: v === undefined ? undefined : Number(v),
    });
  });
}

/**
 * Turns the groups of the namespace's ping_group_range through `map` (from criu's to the
 * tree's user namespace at the dump, as criu carries them, and back at the restore, which
 * writes them from criu's); its default, "1 0" (no group), stays.
 */
export function mapPingGroups(ns: NetnsState, map: (gid: number) => number): void {
  for (const e of ns.netns.ipv4Sysctl) {
    const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(e.sarg ?? "");
    if (!m || (m[1] === "1" && m[2] === "0")) continue;
    e.sarg = `${map(Number(m[1]))}\t${map(Number(m[2]))}`;
  }
}

/** The carried sysctl paths of a namespace whose devices are `names`. */
function carried(names: string[]): Set<string> {
  const out = new Set<string>();
  for (const dev of ["all", "default", ...names]) {
    for (const c of DEVCONFS4) out.add(`${SYS}/ipv4/conf/${dev}/${c}`);
    for (const c of DEVCONFS6) out.add(`${SYS}/ipv6/conf/${dev}/${c}`);
  }
  for (const c of UNIX_CONF) out.add(`${SYS}/unix/${c}`);
  for (const c of IPV4_SYSCTLS) out.add(`${SYS}/ipv4/${c}`);
  // The same value as conf/all/forwarding, which sets it.
  out.add(`${SYS}/ipv4/ip_forward`);
  return out;
}

/**
 * Reads the network namespace `id` of task `pid` (the tree frozen); `tunHolders` finds the
 * tree's descriptors attached to its tun devices. Refuses a device a restore would not make
 * the same (netdev_kinds.ts, tun.ts), and a sysctl changed from a fresh namespace's that is
 * not carried.
 */
export async function readNetns(
  pid: number,
  id: number,
  tunHolders: () => Map<string, TunHolder>,
): Promise<NetnsState> {
  const links = await readLinks(pid);
  const [values, fresh] = await Promise.all([readSysctls(pid), readSysctls(undefined)]);
  // A stable_secret written (the device's or the default's, both carried) puts the device in
  // stable-privacy address generation (mode 2), and the restore writes it again.
  const secret = new Set(
    links.map((l) => l.ifname).filter((n) =>
      [n, "default"].some((d) => values.has(`${SYS}/ipv6/conf/${d}/stable_secret`))
    ),
  );
  await checkLinks(pid, links, secret);
  const tunNames = links.filter((l) => l.linkinfo?.info_kind === "tun").map((l) => l.ifname);
  const up = new Set(links.filter((l) => l.flags.includes("UP")).map((l) => l.ifname));
  const tuns = await readTunLinks(pid, tunNames, tunNames.length ? tunHolders() : new Map(), up);
  const kept = carried(links.map((l) => l.ifname));
  // Address modes the restore brings again: stable privacy (2) from a stable_secret, random (3)
  // on a device without a hardware address (a tun) once it has a carrier (on a tun, the
  // secret then stands for random mode: stable privacy is refused).
  for (const l of links) {
    const mode = `${SYS}/ipv6/conf/${l.ifname}/addr_gen_mode`;
    const v = values.get(mode);
    const none = l.link_type === "none";
    if ((v === "2" && secret.has(l.ifname) && !none) || (v === "3" && none)) {
      kept.add(mode);
    }
  }
  // A device a new namespace lacks starts from the namespace's defaults: conf/default, and
  // for its neighbour table what the loopback got (a namespace has no neigh/default).
  const devs = links.filter((l) => l.link_type !== "loopback").map((l) => l.ifname);
  const freshOf = (p: string) => {
    const m = /^(.*\/(conf|neigh))\/([^/]+)\/(.*)$/.exec(p);
    if (!m || !devs.includes(m[3])) return fresh.get(p);
    return fresh.get(`${m[1]}/${m[2] === "conf" ? "default" : "lo"}/${m[4]}`);
  };
  const changed = [...values].filter(([p, v]) => !kept.has(p) && freshOf(p) !== v);
  if (changed.length) {
    const [p, v] = changed[0];
    throw new NetnsError(
      `Cannot dump the network namespace of task ${pid}: sysctl ${
        p.slice("/proc/sys/".length).replaceAll("/", ".")
      } is ${JSON.stringify(v)} (a new namespace has ${
        JSON.stringify(freshOf(p) ?? "none")
      }), which is not carried${changed.length > 1 ? ` (and ${changed.length - 1} more)` : ""}`,
    );
  }
  const devices = links.map((l) =>
    create(net_device_entrySchema, {
      type: l.link_type === "loopback" ? nd_type.LOOPBACK : ND_TYPES[l.linkinfo!.info_kind!],
      ifindex: l.ifindex,
      mtu: l.mtu,
      // (None for the loopback, as criu, nor for a device without one, a tun.)
      address: l.link_type === "loopback" || !l.address ? undefined : macBytes(l.address),
      // As criu: the device it hangs on (a veth's peer, a macvlan's lower device; itself for
      // the others), with the id of its namespace when that is this one.
      peerIfindex: l.link_index ?? links.find((x) => x.ifname === l.link)?.ifindex ?? l.ifindex,
      peerNsid: l.link_netnsid === undefined ? id : undefined,
      macvlan: l.linkinfo?.info_kind === "macvlan" ? macvlanEntry(l) : undefined,
      tun: tuns.get(l.ifname),
      master: links.find((x) => x.ifname === l.master)?.ifindex,
      // ip hides RUNNING; a loopback runs whenever its lower layer is up.
      flags: l.flags.reduce((f, n) => f | (IFF[n] ?? 0), 0) |
        (l.flags.includes("LOWER_UP") ? IFF.RUNNING : 0),
      name: l.ifname,
      conf4: entries(values, `${SYS}/ipv4/conf/${l.ifname}`, DEVCONFS4),
      conf6: entries(values, `${SYS}/ipv6/conf/${l.ifname}`, DEVCONFS6),
    })
  );
  const netns = create(netns_entrySchema, {
    defConf4: entries(values, `${SYS}/ipv4/conf/default`, DEVCONFS4),
    allConf4: entries(values, `${SYS}/ipv4/conf/all`, DEVCONFS4),
    defConf6: entries(values, `${SYS}/ipv6/conf/default`, DEVCONFS6),
    allConf6: entries(values, `${SYS}/ipv6/conf/all`, DEVCONFS6),
    unixConf: entries(values, `${SYS}/unix`, UNIX_CONF),
    ipv4Sysctl: entries(values, `${SYS}/ipv4`, IPV4_SYSCTLS),
  });
  const saved = new Map<string, Uint8Array>();
  // As criu: iptables over nf_tables shows what nft shows; its images then hold the legacy
  // tables only (the ones nft does not see).
  const legacy = await xtablesLegacy();
  const tools: [string, string[] | undefined][] = [
    ["ifaddr", ["ip", "addr", "save"]],
    ["route", ["ip", "route", "save"]],
    ["route6", ["ip", "-6", "route", "save"]],
    ["rule", ["ip", "rule", "save"]],
    ["iptables", legacy.ipv4 ? [legacy.ipv4] : undefined],
    ["ip6tables", legacy.ipv6 ? [legacy.ipv6] : undefined],
    ["nftables", ["nft", "list", "ruleset"]],
  ];
  for (const [name, argv] of tools) {
    saved.set(name, argv ? await inNetns(pid, argv) : new Uint8Array());
  }
  const linkNetnsids = new Map<number, number>();
  for (const l of links) {
    if (l.link_netnsid !== undefined) linkNetnsids.set(l.ifindex, l.link_netnsid);
  }
  return { id, devices, netns, saved, linkNetnsids };
}

/** A macvlan's image entry; flags only when some are set, as criu writes it. */
function macvlanEntry(l: Link) {
  const { mode, flags } = macvlanOf(l);
  return create(macvlan_link_entrySchema, { mode, flags: flags || undefined });
}

/** A MAC address's bytes ("aa:bb:..."). */
function macBytes(mac: string): Uint8Array {
  return new Uint8Array(mac.split(":").filter(Boolean).map((b) => parseInt(b, 16)));
}

/** A MAC address's text. */
function macText(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

/**
 * The save tools of the legacy iptables tables: iptables-save itself when it is legacy, the
 * -legacy- ones beside an nf_tables iptables, none where there are none.
 */
async function xtablesLegacy(): Promise<{ ipv4?: string; ipv6?: string }> {
  const version = await new Deno.Command("iptables-save", { args: ["--version"] }).output()
    .then((o) => new TextDecoder().decode(o.stdout)).catch(() => "");
  if (!version) return {};
  if (!version.includes("nf_tables")) return { ipv4: "iptables-save", ipv6: "ip6tables-save" };
  const has = (tool: string) =>
    ["/usr/sbin", "/sbin", "/usr/bin"].some((d) => {
      try {
        return Deno.statSync(`${d}/${tool}`).isFile;
      } catch {
        return false;
      }
    });
  return {
    ipv4: has("iptables-legacy-save") ? "iptables-legacy-save" : undefined,
    ipv6: has("ip6tables-legacy-save") ? "ip6tables-legacy-save" : undefined,
  };
}

/**
 * nft's ruleset without criu's lock of the namespace (a chain CRIU dropping everything but its
 * marked packets, jumped to from INPUT and OUTPUT), which criu's own images hold: criu takes it
 * away once the tree runs, as this restore does before.
 */
export function withoutCriuLock(ruleset: string): string {
  const out: string[] = [];
  let skipping = false;
  for (const line of ruleset.split("\n")) {
    if (/^\s*chain CRIU \{\s*$/.test(line)) {
      skipping = true;
      continue;
    }
    if (skipping) {
      if (/^\s*\}\s*$/.test(line)) skipping = false;
      continue;
    }
    if (/\bjump CRIU\s*$/.test(line)) continue;
    out.push(line);
  }
  return out.join("\n");
}

/**
 * The order of a restore's writes: a path and its value, as the sysctl files take them. A value
 * the dump could not read (the field unset, not 0) is not written.
 */
export function sysctlWrites(
  dir: string,
  names: readonly string[],
  list: sysctl_entry[],
): [string, string][] {
  const out: [string, string][] = [];
  list.forEach((e, i) => {
    const name = names[i];
    if (!name) return;
    if (e.type === sysctl_type.CTL_STR) {
      if (e.sarg) out.push([`${dir}/${name}`, e.sarg]);
    } else if (isFieldSet(e, sysctl_entrySchema.field.iarg)) {
      out.push([`${dir}/${name}`, `${e.iarg}`]);
    }
  });
  return out;
}

/**
 * Makes the network namespace task `pid` was just made in what the images say: devices (a veth's
 * outside end or a macvlan's lower device as `outside` names them), sysctls, MTUs, addresses
 * and states, routes, rules, and firewall rules. Returns the tun files that made their devices
 * (`tunMakers`), attached, by file id.
 */
export async function restoreNetns(
  pid: number,
  ns: NetnsState,
  outside: OutsideLinks = {},
  tunMakers = new Map<string, TunMaker>(),
  across?: VethsAcross,
): Promise<Map<number, number>> {
  const made = new Map<number, number>();
  try {
    await restoreNetnsWith(pid, ns, outside, tunMakers, made, across);
    return made;
  } catch (e) {
    for (const fd of made.values()) close(fd);
    throw e;
  }
}

async function restoreNetnsWith(
  pid: number,
  ns: NetnsState,
  outside: OutsideLinks,
  tunMakers: Map<string, TunMaker>,
  madeTunFiles: Map<number, number>,
  across?: VethsAcross,
): Promise<void> {
  const run = async (argv: string[], input?: Uint8Array) => void await inNetns(pid, argv, input);
  await makeDevices(pid, ns, outside, tunMakers, madeTunFiles, across);
  // MTUs before the sysctls: a device's MTU set resets its IPv6 MTU. Bridges last: one whose
  // MTU and address follow its ports' gets them from them, and is set only where it kept
  // values of its own.
  const bridge = (d: net_device_entry) => d.type === nd_type.BRIDGE;
  const setLink = async (d: net_device_entry, has?: Link) => {
    if (has?.mtu !== d.mtu) await run(["ip", "link", "set", d.name, "mtu", `${d.mtu}`]);
    if (d.address?.length && has?.address !== macText(d.address)) {
      await run(["ip", "link", "set", d.name, "address", macText(d.address)]);
    }
  };
  for (const d of ns.devices.filter((d) => !bridge(d))) await setLink(d);
  const bridges = ns.devices.filter(bridge);
  const live = bridges.length ? await readLinks(pid) : [];
  for (const d of bridges) await setLink(d, live.find((l) => l.ifname === d.name));
  const writes = [
    ...sysctlWrites(`${SYS}/ipv4/conf/all`, DEVCONFS4, ns.netns.allConf4),
    ...sysctlWrites(`${SYS}/ipv4/conf/default`, DEVCONFS4, ns.netns.defConf4),
    ...sysctlWrites(`${SYS}/ipv6/conf/all`, DEVCONFS6, ns.netns.allConf6),
    ...sysctlWrites(`${SYS}/ipv6/conf/default`, DEVCONFS6, ns.netns.defConf6),
    ...sysctlWrites(`${SYS}/unix`, UNIX_CONF, ns.netns.unixConf),
    ...sysctlWrites(`${SYS}/ipv4`, IPV4_SYSCTLS, ns.netns.ipv4Sysctl),
  ];
  for (const d of ns.devices) {
    writes.push(
      ...sysctlWrites(`${SYS}/ipv4/conf/${d.name}`, DEVCONFS4, d.conf4),
      ...sysctlWrites(`${SYS}/ipv6/conf/${d.name}`, DEVCONFS6, d.conf6),
    );
  }
  // Every value this kernel has, whatever the namespace holds now: a write changes others
  // (all's forwarding sets every device's, and all's accept_redirects to its opposite). So
  // the devices after all and default, and accept_redirects last, as criu writes it.
  const now = await readSysctls(pid);
  const last = ([p]: [string, string]) => p.endsWith("/accept_redirects") ? 1 : 0;
  // (An unset stable_secret does not read.)
  const known = ([p]: [string, string]) => now.has(p) || p.endsWith("/stable_secret");
  const todo = writes.filter(known).sort((a, b) => last(a) - last(b));
  // A tun's secret was made by the kernel for its random addresses: written back, it puts the
  // device in stable-privacy mode, which random mode then follows again.
  for (const d of ns.devices) {
    const secret = `${SYS}/ipv6/conf/${d.name}/stable_secret`;
    if (d.tun && d.tun.flags & IFF_TUN.TUN && todo.some(([p]) => p === secret)) {
      todo.push([`${SYS}/ipv6/conf/${d.name}/addr_gen_mode`, "3"]);
    }
  }
  await writeSysctls(pid, todo);
  const saved = (name: string) => ns.saved.get(name) ?? new Uint8Array();
  // The loopback up first, as it was brought up: the kernel gives it 127.0.0.1 and ::1 then
  // (the same addresses added by hand would bring a prefix route of their own), and the
  // others follow them; one of those two removed since is removed again.
  let addrs = saved("ifaddr");
  for (const d of ns.devices) {
    if (!(d.flags & IFF.UP)) continue;
    await run(["ip", "link", "set", d.name, "up"]);
    if (d.type !== nd_type.LOOPBACK) continue;
    const own = splitLoopbackAddresses(addrs, d.ifindex);
    addrs = own.rest;
    // (The kernel gives none where IPv6 is off or the address mode does not, at this time.)
    const given = new TextDecoder().decode(
      await inNetns(pid, ["ip", "-o", "addr", "show", "dev", d.name]),
    );
    for (const [have, addr] of [[own.v4, "127.0.0.1/8"], [own.v6, "::1/128"]] as const) {
      if (!have && given.includes(` ${addr} `)) {
        await run(["ip", "addr", "del", addr, "dev", d.name]);
      }
    }
  }
  // A device coming up takes its MTU as its IPv6 MTU: those again.
  await writeSysctls(pid, todo.filter(([p]) => /^.*\/ipv6\/conf\/[^/]+\/mtu$/.test(p)));
  if (addrs.length > 4) await run(["ip", "addr", "restore"], addrs);
  if (saved("route").length > 4) await run(["ip", "route", "restore"], saved("route"));
  if (saved("route6").length > 4) await run(["ip", "-6", "route", "restore"], saved("route6"));
  if (saved("rule").length > 4) {
    await run(["ip", "rule", "flush"]);
    await run(["ip", "rule", "delete", "table", "local"]);
    await run(["ip", "rule", "restore"], saved("rule"));
  }
  // The legacy tables (criu writes those only, beside nft's ruleset).
  const legacy = await xtablesLegacy();
  for (const [image, save] of [["iptables", legacy.ipv4], ["ip6tables", legacy.ipv6]] as const) {
    if (!saved(image).length) continue;
    if (!save) throw new NetnsError(`Cannot restore ${image}: no legacy iptables here`);
    await run([save.replace("-save", "-restore")], saved(image));
  }
  const ruleset = withoutCriuLock(new TextDecoder().decode(saved("nftables")));
  if (ruleset.trim()) await run(["nft", "-f", "-"], new TextEncoder().encode(ruleset));
}

/** Writes `values` (path, value) in the network namespace of task `pid`, in their order. */
async function writeSysctls(pid: number, values: [string, string][]): Promise<void> {
  if (!values.length) return;
  const q = shellQuote;
  const script = values.map(([p, v]) => `printf '%s' ${q(v)} > ${q(p)} || exit 1`).join("\n");
  await inNetns(pid, ["sh", "-c", script]);
}

/**
 * Makes `devices` in the namespace of task `pid`, each with its index (addresses and routes
 * name them by index; tun devices through a tun file of the namespace sockets are made in now,
 * ns_sockets.ts), then puts the bridges' ports in them.
 */
async function makeDevices(
  pid: number,
  ns: NetnsState,
  outside: OutsideLinks,
  tunMakers: Map<string, TunMaker>,
  madeTunFiles: Map<number, number>,
  across?: VethsAcross,
): Promise<void> {
  const devices = ns.devices;
  const madeVeths = new Set<string>();
  for (const d of devices) {
    switch (d.type) {
      case nd_type.LOOPBACK:
        break;
      case nd_type.VETH: {
        const other = isFieldSet(d, net_device_entrySchema.field.peerNsid) &&
            d.peerNsid !== ns.id
          ? d.peerNsid
          : undefined;
        if (other !== undefined && across) {
          await makeVethAcross(pid, ns.id, d, other, across);
        } else {
          await makeVeth(pid, d, peerInside(ns, d), outside.veths ?? new Map(), madeVeths);
        }
        break;
      }
      case nd_type.TUN:
        if (!d.tun) throw new NetnsError(`The image of tun device ${d.name} has no tun entry`);
        {
          const maker = tunMakers.get(d.name);
          const fd = makeTunDevice(d.name, d.ifindex, d.tun, maker);
          if (fd !== undefined) madeTunFiles.set(maker!.id, fd);
        }
        break;
      case nd_type.BRIDGE:
        await inNetns(pid, ["ip", "link", "add", ...named(d), "type", "bridge"]);
        break;
      case nd_type.MACVLAN:
        await makeMacvlan(pid, d, outside.macvlans ?? new Map());
        break;
      default:
        throw new NetnsError(`Cannot restore network device ${d.name}: its kind is not supported`);
    }
  }
  for (const d of devices) {
    if (!isFieldSet(d, net_device_entrySchema.field.master)) continue;
    const master = devices.find((x) => x.ifindex === d.master);
    if (!master) {
      throw new NetnsError(
        `Cannot restore network device ${d.name}: its master (index ${d.master}) is not in the images`,
      );
    }
    await inNetns(pid, ["ip", "link", "set", d.name, "master", master.name]);
  }
}

/**
 * The veth at the other end of `d` when that end is in namespace `ns` too: as criu writes it,
 * the peer's index with the namespace's id (none when the peer is outside).
 */
function peerInside(ns: NetnsState, d: net_device_entry): net_device_entry | undefined {
  // Proto2 optional fields read 0 when absent: isFieldSet tells.
  const field = net_device_entrySchema.field;
  if (!isFieldSet(d, field.peerNsid) || d.peerNsid !== ns.id) return undefined;
  return ns.devices.find((x) => x !== d && x.type === nd_type.VETH && x.ifindex === d.peerIfindex);
}

/**
 * Makes macvlan device `d` in the namespace of task `pid`, on the device of criu's namespace
 * that `--external macvlan[NAME]:LOWER` names, with its index, mode and flags.
 */
async function makeMacvlan(
  pid: number,
  d: net_device_entry,
  lowers: Map<string, string>,
): Promise<void> {
  const lower = lowers.get(d.name);
  if (!lower) {
    throw new NetnsError(
      `Cannot restore network device ${d.name}: a macvlan on a device outside its namespace; ` +
        `name that device with --external macvlan[${d.name}]:NAME`,
    );
  }
  if (!d.macvlan) throw new NetnsError(`The image of macvlan ${d.name} has no mode`);
  const kind = ["type", "macvlan", ...macvlanArgs(d.macvlan.mode, d.macvlan.flags ?? 0)];
  await here(["ip", "link", "add", "link", lower, ...named(d), "netns", `${pid}`, ...kind]);
}

/** The `ip link add` words naming device `d` and asking for its index. */
function named(d: net_device_entry): string[] {
  return ["name", d.name, "index", `${d.ifindex}`];
}

/** Runs `argv` in criu's own namespaces. */
async function here(argv: string[]): Promise<void> {
  const r = await new Deno.Command(argv[0], { args: argv.slice(1), stderr: "piped" }).output();
  if (!r.success) {
    throw new NetnsError(`${argv.join(" ")} failed: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
}

/**
 * Makes veth device `d` with its index: with `peer` (both ends inside), the pair in the
 * namespace of task `pid`; with its peer outside, the pair with its other end in
 * criu's namespace, named as `--external veth[NAME]:OUTSIDE[@BRIDGE]` says, up (and in the
 * bridge). `made` collects the names made, so that a pair is made once.
 */
async function makeVeth(
  pid: number,
  d: net_device_entry,
  peer: net_device_entry | undefined,
  veths: Map<string, VethOutside>,
  made: Set<string>,
): Promise<void> {
  if (made.has(d.name)) return;
  // As criu: an outside end named by --external comes first.
  if (peer && !veths.has(d.name)) {
    made.add(peer.name);
    made.add(d.name);
    await inNetns(pid, ["ip", "link", "add", ...named(d), "type", "veth", "peer", ...named(peer)]);
    return;
  }
  const out = veths.get(d.name);
  if (!out) {
    throw new NetnsError(
      `Cannot restore network device ${d.name}: a veth whose peer is outside its namespace; ` +
        `name the outside end with --external veth[${d.name}]:NAME[@BRIDGE]`,
    );
  }
  made.add(d.name);
  // Made from inside, the inside end first: the kernel gives a peer made in another
  // namespace the next free index, whatever the request says.
  const outName = ["name", out.name, "netns", `${Deno.pid}`];
  await inNetns(pid, ["ip", "link", "add", ...named(d), "type", "veth", "peer", ...outName]);
  if (out.bridge) await here(["ip", "link", "set", out.name, "master", out.bridge]);
  await here(["ip", "link", "set", out.name, "up"]);
}

/**
 * Makes veth `d` of namespace `id` (of task `pid`) with its peer in another of the tree's
 * namespaces, `other`, unless the peer's side made both; each end at its index (the kernel
 * takes a peer's index in another namespace too).
 */
async function makeVethAcross(
  pid: number,
  id: number,
  d: net_device_entry,
  other: number,
  across: VethsAcross,
): Promise<void> {
  const key = `${id}:${d.ifindex}`;
  if (across.made.has(key)) return;
  const peer = across.devicesOf(other)?.find((x) =>
    x.type === nd_type.VETH && x.ifindex === d.peerIfindex
  );
  const target = across.pidOf(other);
  if (!peer || target === undefined) {
    throw new NetnsError(
      `Cannot restore network device ${d.name}: its peer (index ${d.peerIfindex} of network ` +
        `namespace ${other}) is not in the images`,
    );
  }
  await inNetns(pid, [
    "ip",
    "link",
    "add",
    ...named(d),
    "type",
    "veth",
    "peer",
    ...named(peer),
    "netns",
    `${target}`,
  ]);
  across.made.add(key);
  across.made.add(`${other}:${peer.ifindex}`);
}

/**
 * Splits `ip addr save` output: whether it holds the loopback addresses the kernel gives device
 * `ifindex` when it comes up (127.0.0.1/8, ::1/128), and the stream without them.
 */
export function splitLoopbackAddresses(
  saved: Uint8Array,
  ifindex: number,
): { v4: boolean; v6: boolean; rest: Uint8Array } {
  const out: Uint8Array[] = [saved.subarray(0, 4)];
  let v4 = false, v6 = false;
  const view = new DataView(saved.buffer, saved.byteOffset, saved.byteLength);
  const IFA_ADDRESS = 1, IFA_LOCAL = 2, AF_INET = 2, AF_INET6 = 10;
  for (let off = 4; off + 16 <= saved.length;) {
    const len = view.getUint32(off, true);
    if (len < 16 || off + len > saved.length) {
      throw new NetnsError("ip addr save output is corrupt");
    }
    const msg = saved.subarray(off, off + len);
    const family = msg[16], prefix = msg[17], index = view.getUint32(off + 20, true);
    let addr = "";
    for (let a = 24; a + 4 <= len;) {
      const alen = view.getUint16(off + a, true), type = view.getUint16(off + a + 2, true);
      if (alen < 4) break;
      if (type === (family === AF_INET ? IFA_LOCAL : IFA_ADDRESS)) {
        addr = [...msg.subarray(a + 4, a + alen)].join(".");
      }
      a += (alen + 3) & ~3;
    }
    const lo4 = family === AF_INET && prefix === 8 && addr === "127.0.0.1";
    const lo6 = family === AF_INET6 && prefix === 128 && addr === "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1";
    if (index === ifindex && (lo4 || lo6)) {
      if (lo4) v4 = true;
      else v6 = true;
    } else {
      out.push(msg);
    }
    off += (len + 3) & ~3;
  }
  const rest = new Uint8Array(out.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of out) {
    rest.set(b, at);
    at += b.length;
  }
  return { v4, v6, rest };
}

/** The raw images of a network namespace, in the order a dump writes them. */
export const NETNS_RAW_IMAGES = [
  "ifaddr",
  "route",
  "route6",
  "rule",
  "iptables",
  "ip6tables",
  "nftables",
] as const;
