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
import { create, isFieldSet } from "@bufbuild/protobuf";
import {
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

/** A tool failed inside a network namespace. */
export class NetnsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NetnsError";
  }
}

/**
 * Runs `argv` in the network namespace of task `pid` (a fresh one when undefined), with
 * `input` on its stdin (a file: `ip ... restore` seeks in it); returns its stdout. A non-zero
 * exit fails with its stderr.
 */
export async function inNetns(
  pid: number | undefined,
  argv: string[],
  input?: Uint8Array,
): Promise<Uint8Array> {
  const file = input ? Deno.makeTempFileSync({ prefix: "deno-criu-netns-" }) : undefined;
  try {
    if (file) Deno.writeFileSync(file, input!);
    const run = file ? ["sh", "-c", `f=$1; shift; exec "$@" < "$f"`, "sh", file, ...argv] : argv;
    const [cmd, ...args] = pid === undefined
      ? ["unshare", "-n", "--", ...run]
      : ["nsenter", "-t", `${pid}`, "-n", "--", ...run];
    const out = await new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" },
    }).output();
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim();
      throw new NetnsError(`${argv.join(" ")} in the network namespace failed: ${err}`);
    }
    return out.stdout;
  } finally {
    if (file) Deno.removeSync(file);
  }
}

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

/** A network device as `ip -j -d link` shows it. */
interface Link {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  link_type: string;
  address?: string;
  /** A veth's peer: by name when in this namespace, else by index in that of `link_netnsid`. */
  link?: string;
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: { info_kind?: string };
}

/** Where the outside end of a veth goes at restore (`--external veth[IN]:NAME[@BRIDGE]`). */
export interface VethOutside {
  name: string;
  bridge?: string;
}

/** What a dump keeps of a network namespace. */
export interface NetnsState {
  devices: net_device_entry[];
  netns: netns_entry;
  /** Raw outputs of the tools, by image name prefix (ifaddr, route, ...). */
  saved: Map<string, Uint8Array>;
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
 * Reads the network namespace of task `pid` (the tree frozen). Refuses a device other than
 * the loopback, and a sysctl changed from a fresh namespace's that is not carried.
 */
export async function readNetns(pid: number): Promise<NetnsState> {
  const links = JSON.parse(
    new TextDecoder().decode(await inNetns(pid, ["ip", "-j", "-d", "link", "show"])),
  ) as Link[];
  for (const l of links) {
    if (l.link_type !== "loopback" && l.linkinfo?.info_kind !== "veth") {
      throw new NetnsError(
        `Cannot dump the network namespace of task ${pid}: its device ${l.ifname} ` +
          `(${l.linkinfo?.info_kind ?? l.link_type}) is not supported yet; only the loopback ` +
          `and veth devices are`,
      );
    }
  }
  const [values, fresh] = await Promise.all([readSysctls(pid), readSysctls(undefined)]);
  const kept = carried(links.map((l) => l.ifname));
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
      type: l.link_type === "loopback" ? nd_type.LOOPBACK : nd_type.VETH,
      ifindex: l.ifindex,
      mtu: l.mtu,
      address: l.link_type === "loopback" ? undefined : macBytes(l.address ?? ""),
      peerIfindex: l.link_index ?? links.find((x) => x.ifname === l.link)?.ifindex,
      peerNsid: l.link_netnsid,
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
  return { devices, netns, saved };
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
    } else if (isFieldSet(e, sysctl_entrySchema.field.iarg) && name !== "mtu") {
      out.push([`${dir}/${name}`, `${e.iarg}`]);
    }
  });
  return out;
}

/**
 * Makes the network namespace task `pid` was just made in what the images say: sysctls, the
 * loopback's conf, MTU, addresses and state, routes, rules, and firewall rules.
 */
export async function restoreNetns(
  pid: number,
  ns: NetnsState,
  veths = new Map<string, VethOutside>(),
): Promise<void> {
  const now = await readSysctls(pid);
  const writes = [
    ...sysctlWrites(`${SYS}/ipv4/conf/all`, DEVCONFS4, ns.netns.allConf4),
    ...sysctlWrites(`${SYS}/ipv4/conf/default`, DEVCONFS4, ns.netns.defConf4),
    ...sysctlWrites(`${SYS}/ipv6/conf/all`, DEVCONFS6, ns.netns.allConf6),
    ...sysctlWrites(`${SYS}/ipv6/conf/default`, DEVCONFS6, ns.netns.defConf6),
    ...sysctlWrites(`${SYS}/unix`, UNIX_CONF, ns.netns.unixConf),
    ...sysctlWrites(`${SYS}/ipv4`, IPV4_SYSCTLS, ns.netns.ipv4Sysctl),
  ];
  // Devices first, with their indices (addresses and routes name them by index).
  const madeVeths = new Set<string>();
  for (const d of ns.devices) {
    if (d.type === nd_type.VETH) await makeVeth(pid, d, ns.devices, veths, madeVeths);
    else if (d.type !== nd_type.LOOPBACK) {
      throw new NetnsError(`Cannot restore network device ${d.name}: its kind is not supported`);
    }
  }
  for (const d of ns.devices) {
    writes.push(
      ...sysctlWrites(`${SYS}/ipv4/conf/${d.name}`, DEVCONFS4, d.conf4),
      ...sysctlWrites(`${SYS}/ipv6/conf/${d.name}`, DEVCONFS6, d.conf6),
    );
  }
  const todo = writes.filter(([p, v]) => now.get(p) !== v && now.has(p));
  if (todo.length) {
    const q = (t: string) => `'${t.replaceAll("'", `'\\''`)}'`;
    const script = todo.map(([p, v]) => `printf '%s' ${q(v)} > ${q(p)} || exit 1`).join("\n");
    await inNetns(pid, ["sh", "-c", script]);
  }
  const run = async (argv: string[], input?: Uint8Array) => void await inNetns(pid, argv, input);
  const saved = (name: string) => ns.saved.get(name) ?? new Uint8Array();
  // The loopback up first, as it was brought up: the kernel gives it 127.0.0.1 and ::1 then
  // (the same addresses added by hand would bring a prefix route of their own), and the
  // others follow them; one of those two removed since is removed again.
  let addrs = saved("ifaddr");
  for (const d of ns.devices) {
    await run(["ip", "link", "set", d.name, "mtu", `${d.mtu}`]);
    if (d.address?.length) {
      await run(["ip", "link", "set", d.name, "address", macText(d.address)]);
    }
    if (!(d.flags & IFF.UP)) continue;
    await run(["ip", "link", "set", d.name, "up"]);
    if (d.type !== nd_type.LOOPBACK) continue;
    const own = splitLoopbackAddresses(addrs, d.ifindex);
    addrs = own.rest;
    for (const [have, addr] of [[own.v4, "127.0.0.1/8"], [own.v6, "::1/128"]] as const) {
      if (!have) await run(["ip", "addr", "del", addr, "dev", d.name]);
    }
  }
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

/**
 * Makes veth device `d` with its index: with its peer among `devices` (both ends inside), the
 * pair in the namespace of task `pid`; with its peer outside, the pair with its other end in
 * criu's namespace, named as `--external veth[NAME]:OUTSIDE[@BRIDGE]` says, up (and in the
 * bridge). `made` collects the names made, so that a pair is made once.
 */
async function makeVeth(
  pid: number,
  d: net_device_entry,
  devices: net_device_entry[],
  veths: Map<string, VethOutside>,
  made: Set<string>,
): Promise<void> {
  if (made.has(d.name)) return;
  // Proto2 optional fields read 0 when absent: isFieldSet tells.
  const field = net_device_entrySchema.field;
  const peer = !isFieldSet(d, field.peerNsid) && isFieldSet(d, field.peerIfindex)
    ? devices.find((x) => x !== d && x.ifindex === d.peerIfindex)
    : undefined;
  if (peer) {
    made.add(peer.name);
    made.add(d.name);
    const idx = (x: net_device_entry) => ["index", `${x.ifindex}`];
    await inNetns(pid, [
      "ip",
      "link",
      "add",
      d.name,
      ...idx(d),
      "type",
      "veth",
      "peer",
      "name",
      peer.name,
      ...idx(peer),
    ]);
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
  const here = async (argv: string[]) => {
    const r = await new Deno.Command(argv[0], { args: argv.slice(1), stderr: "piped" }).output();
    if (!r.success) {
      throw new NetnsError(
        `${argv.join(" ")} failed: ${new TextDecoder().decode(r.stderr).trim()}`,
      );
    }
  };
  // Made from inside, the inside end first: the kernel gives a peer made in another
  // namespace the next free index, whatever the request says.
  await inNetns(pid, [
    "ip",
    "link",
    "add",
    d.name,
    "index",
    `${d.ifindex}`,
    "type",
    "veth",
    "peer",
    "name",
    out.name,
    "netns",
    `${Deno.pid}`,
  ]);
  if (out.bridge) await here(["ip", "link", "set", out.name, "master", out.bridge]);
  await here(["ip", "link", "set", out.name, "up"]);
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
