/**
 * criu's options: one type shaped like criu's `cr_options`, filled from the configuration files
 * and the command line (and later RPC) through one table, the table criu's getopt_long reads.
 *
 * - Sources, in order, later ones winning: `/etc/criu/default.conf`, `~/.criu/default.conf`,
 *   `$CRIU_CONFIG_FILE`, `--config FILE`, argv (see config_file.ts).
 * - Long options match by unambiguous prefix (`--tcp-est`); every boolean option has a `--no-`
 *   form; `-R` and `-s` set one final state, the last one wins; `-v` counts up from the default
 *   level as criu's does (`-v` 3, `-vv` 4, `-v0` 0, `-verbosity=0` 0).
 * - An option criu has that deno-criu cannot honour yet is refused by name, with the reason,
 *   after parsing (`checkOptions`); options that change nothing here are accepted.
 *
 * Adding an option is one entry in `TABLE` (and a field in `CriuOpts` when it carries a value).
 *
 * @module
 */
import { CGROUP_MODES, type CgroupMode } from "../restore/cgroup_modes.ts";
import { LOCK_METHODS, type LockMethod } from "../net/lock_methods.ts";
import { configFileWords } from "./config_file.ts";
import { type ArgKind, GetoptError, getoptLong, type LongOption } from "./getopt.ts";
import { UsageError } from "./usage_error.ts";

export { UsageError };

/** What happens to the dumped tree (`-R`, `-s`), or to the restored one (`-s`). */
export type FinalState = "dead" | "alive" | "stopped";

/** criu's default log level: warnings. */
export const DEFAULT_LOG_LEVEL = 2;

/** criu's default for `--ghost-limit`: 1 MiB. */
export const DEFAULT_GHOST_LIMIT = 1 << 20;

/** criu's default for `--timeout`, in seconds. */
export const DEFAULT_TIMEOUT = 10;

/** Every option criu takes, as parsed; names follow criu's `cr_options`. */
export interface CriuOpts {
  /** The command (dump, restore, check, ...). */
  command: string;
  /** Operands after the command. */
  args: string[];
  tree?: number;
  finalState: FinalState;
  restoreDetached: boolean;
  restoreSibling: boolean;
  imagesDir: string;
  /** Logs, pidfiles, stats and action scripts' cwd (`-W`); defaults to the images dir. */
  workDir?: string;
  logFile?: string;
  logLevel: number;
  logPid: boolean;
  shellJob: boolean;
  fileLocks: boolean;
  tcpEstablished: boolean;
  tcpSkipInFlight: boolean;
  tcpClose: boolean;
  linkRemap: boolean;
  /** --manage-cgroups: its mode as given ("" for the option alone: soft). */
  manageCgroups?: string;
  /** --empty-ns net: the tree's network namespace is neither dumped nor filled at restore. */
  emptyNet?: boolean;
  /** --join-ns NS:PID|FILE: namespaces to restore into (only `net` so far). */
  joinNs: string[];
  /** --cgroup-yard: where the caller mounted the cgroup hierarchies (found in mountinfo). */
  cgroupYard?: string;
  /** --cgroup-root [CONTROLLER:]/PATH: a hierarchy's (or every one's) root, as given. */
  cgroupRoots: string[];
  /** --ext-mount-map auto: mounts from criu's namespace are found and bound again by path. */
  extMountAuto: boolean;
  /** --enable-fs FS[,FS...]: file systems mounted anew at restore (empty ones, at dump). */
  enableFs: string[];
  /** --enable-external-sharing, --enable-external-masters (with --ext-mount-map auto). */
  externalSharing: boolean;
  externalMasters: boolean;
  /** --freeze-cgroup: the cgroup whose freezer freezes the tree at dump. */
  freezeCgroup?: string;
  evasiveDevices: boolean;
  forceIrmap: boolean;
  irmapScanPaths: string[];
  ghostLimit: number;
  ghostFiemap: boolean;
  pidfile?: string;
  timeout: number;
  displayStats: boolean;
  networkLock?: LockMethod;
  preDumpMode: "splice" | "read";
  /** `--auto-dedup`: a dump's pages are taken out of its parent images (criu dedup). */
  autoDedup: boolean;
  /** `--page-server`: a dump's pages go to the page server at --address and --port. */
  pageServer: boolean;
  /**
   * `--lazy-pages`: a restore leaves lazy pages to `criu lazy-pages`; a dump serves them from
   * the frozen tree on --port; a page server serves its images' on request.
   */
  lazyPages: boolean;
  /** `--port`: the page server's (0: a page server takes any free one). */
  port: number;
  /** `--track-mem`: memory tracked for the next dump; pages left to the parent images. */
  trackMem: boolean;
  /** `--prev-images-dir`: the parent images, relative to the images directory. */
  prevImagesDir?: string;
  fileValidation?: "filesize" | "buildid";
  skipFileRwxCheck: boolean;
  weakSysctls: boolean;
  deprecated: boolean;
  allowUprobes: boolean;
  mntnsCompatMode: boolean;
  cpuCap?: string;
  libdir?: string;
  statusFd?: number;
  /**
   * RPC's orphan_pts_master (no option: criu has none): a pty slave whose master is outside the
   * tree is carried; the restore makes a new master and hands it to the caller.
   */
  orphanPtsMaster: boolean;
  /** `--address`: where `criu service` listens. */
  address?: string;
  /** Descriptors `--close` closes before anything else. */
  closeFds: number[];
  /** `--action-script` paths, in the order criu runs them (the last given first). */
  actionScripts: string[];
  /** `--external` resources, as given. */
  external: string[];
  /** `--lsm-profile TYPE:PROFILE` (restore): only `unconfined`, what the tasks are dumped as. */
  lsmProfile?: string;
  /** The root of the tree's own mount namespace, made again from this directory (`--root`). */
  root?: string;
  inheritFds: string[];
  extUnixSk: boolean;
  features: string[];
  checkExtra: boolean;
  checkExperimental: boolean;
  noDefaultConfig: boolean;
  config?: string;
  help: boolean;
  version: boolean;
  /** Options that were switched on, by name, for the refusals and the log. */
  given: Set<string>;
}

/** The options as criu starts with them. */
export function defaultOpts(): CriuOpts {
  return {
    command: "",
    args: [],
    finalState: "dead",
    restoreDetached: false,
    restoreSibling: false,
    orphanPtsMaster: false,
    imagesDir: ".",
    logLevel: DEFAULT_LOG_LEVEL,
    logPid: false,
    shellJob: false,
    fileLocks: false,
    tcpEstablished: false,
    tcpSkipInFlight: false,
    tcpClose: false,
    linkRemap: false,
    evasiveDevices: false,
    forceIrmap: false,
    irmapScanPaths: [],
    joinNs: [],
    ghostLimit: DEFAULT_GHOST_LIMIT,
    ghostFiemap: true,
    timeout: DEFAULT_TIMEOUT,
    displayStats: false,
    preDumpMode: "splice",
    trackMem: false,
    autoDedup: false,
    pageServer: false,
    lazyPages: false,
    // As criu's: none, which a page server takes as any free port.
    port: 0,
    skipFileRwxCheck: false,
    weakSysctls: false,
    deprecated: false,
    allowUprobes: false,
    mntnsCompatMode: false,
    closeFds: [],
    actionScripts: [],
    external: [],
    cgroupRoots: [],
    extMountAuto: false,
    enableFs: [],
    externalSharing: false,
    externalMasters: false,
    inheritFds: [],
    extUnixSk: false,
    features: [],
    checkExtra: false,
    checkExperimental: false,
    noDefaultConfig: false,
    help: false,
    version: false,
    given: new Set(),
  };
}

/** Boolean options of `CriuOpts` that a plain flag and its `--no-` form set. */
type BoolKey = {
  [K in keyof CriuOpts]-?: CriuOpts[K] extends boolean ? K : never;
}[keyof CriuOpts];

interface OptionSpec extends LongOption {
  /** Applies the option; `on` is false for the `--no-` form of a boolean. */
  set: (o: CriuOpts, value: string | undefined, as: string) => void;
  /** Why deno-criu refuses this option when it is switched on (it names the missing piece). */
  refuse?: string;
}

const NOT_YET = {
  ns: "namespaces, mounts and cgroups come with container support",
  migration: "pre-dumps, page servers and lazy pages come with live migration",
  lsm: "LSM profiles and contexts are not restored yet",
  stream: "image streaming (criu-image-streamer) is not supported yet",
};

function int(as: string, v: string | undefined): number {
  if (v === undefined || !/^\s*[+-]?\d+\s*$/.test(v)) {
    throw new UsageError(`invalid argument for ${as}: ${v ?? ""}`);
  }
  return Number(v);
}

/** criu's atoi: leading digits, 0 when there are none. */
function atoi(s: string): number {
  const m = /^\s*([+-]?\d+)/.exec(s);
  return m ? Number(m[1]) : 0;
}

/** criu's parse_size: a number with an optional K, M or G suffix. */
function size(as: string, v: string | undefined): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(v ?? "");
  if (!m) throw new UsageError(`invalid argument for ${as}: ${v ?? ""}`);
  const unit = { "": 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 }[
    m[2].toLowerCase() as "" | "k" | "m" | "g"
  ];
  return Number(m[1]) * unit;
}

function oneOf<T extends string>(as: string, v: string | undefined, allowed: readonly T[]): T {
  if (!allowed.includes(v as T)) {
    throw new UsageError(`invalid argument for ${as}: ${v ?? ""} (one of ${allowed.join(", ")})`);
  }
  return v as T;
}

/** A boolean option and its `--no-` form (criu's BOOL_OPT). */
function bool(name: string, key: BoolKey, extra: Partial<OptionSpec> = {}): OptionSpec[] {
  return [
    { name, arg: "none", set: (o) => (o[key] = true), ...extra },
    { name: `no-${name}`, arg: "none", set: (o) => (o[key] = false) },
  ];
}

/** An option that takes a value. */
function opt(
  name: string,
  arg: ArgKind,
  set: OptionSpec["set"],
  extra: Partial<OptionSpec> = {},
): OptionSpec {
  return { name, arg, set, ...extra };
}

/** An option deno-criu accepts and cannot honour yet: refused with `why` when used. */
function refused(name: string, arg: ArgKind, why: string, short?: string): OptionSpec {
  return { name, arg, short, set: () => {}, refuse: why };
}

/** criu's long options (criu/config.c), in its order. */
const TABLE: OptionSpec[] = [
  opt("tree", "required", (o, v, as) => {
    o.tree = atoi(v!);
    if (o.tree <= 0) throw new UsageError(`invalid argument for ${as}: ${v}`);
  }, { short: "t" }),
  opt("leave-stopped", "none", (o) => (o.finalState = "stopped"), { short: "s" }),
  opt("leave-running", "none", (o) => (o.finalState = "alive"), { short: "R" }),
  ...bool("restore-detached", "restoreDetached", { short: "d" }),
  // The restored root is born the caller's child (the helper that makes it started so).
  ...bool("restore-sibling", "restoreSibling", { short: "S" }),
  ...bool("daemon", "restoreDetached"),
  opt("images-dir", "required", (o, v) => (o.imagesDir = v!), { short: "D" }),
  opt("work-dir", "required", (o, v) => (o.workDir = v), { short: "W" }),
  opt("log-file", "required", (o, v) => (o.logFile = v), { short: "o" }),
  opt("join-ns", "required", (o, v) => o.joinNs.push(v!), { short: "J" }),
  opt("root", "required", (o, v) => (o.root = v), { short: "r" }),
  opt("ext-unix-sk", "optional", (o) => (o.extUnixSk = true), { short: "x" }),
  opt("help", "none", (o) => (o.help = true), { short: "h" }),
  ...bool("tcp-established", "tcpEstablished"),
  opt("close", "required", (o, v, as) => o.closeFds.push(int(as, v))),
  ...bool("log-pid", "logPid"),
  opt("version", "none", (o) => (o.version = true), { short: "V" }),
  ...bool("evasive-devices", "evasiveDevices"),
  opt("pidfile", "required", (o, v) => (o.pidfile = v)),
  refused("veth-pair", "required", NOT_YET.ns),
  opt("action-script", "required", (o, v) => o.actionScripts.unshift(v!)),
  ...bool("link-remap", "linkRemap"),
  ...bool("shell-job", "shellJob", { short: "j" }),
  ...bool("file-locks", "fileLocks", { short: "l" }),
  ...bool("page-server", "pageServer"),
  // The service's socket (a page server's address comes with live migration: --page-server).
  opt("address", "required", (o, v) => (o.address = v)),
  opt("port", "required", (o, v, as) => {
    o.port = int(as, v);
    if (o.port <= 0 || o.port > 65535) throw new UsageError(`invalid argument for --port: ${v}`);
  }),
  opt("prev-images-dir", "required", (o, v) => (o.prevImagesDir = v)),
  opt("ms", "none", () => {
    throw new UsageError('--ms is deprecated; see "Check options" of criu --help');
  }),
  ...bool("track-mem", "trackMem"),
  ...bool("auto-dedup", "autoDedup"),
  opt("libdir", "required", (o, v) => (o.libdir = v), { short: "L" }),
  opt("cpu-cap", "optional", (o, v) => (o.cpuCap = v ?? "all")),
  ...bool("force-irmap", "forceIrmap"),
  // --ext-mount-map KEY:VAL is --external mnt[KEY]:VAL; auto finds criu's mounts.
  opt("ext-mount-map", "required", (o, v, as) => {
    if (v === "auto") o.extMountAuto = true;
    else if (/^[^:]+:./.test(v!)) {
      o.external.push(`mnt[${v!.slice(0, v!.indexOf(":"))}]:${v!.slice(v!.indexOf(":") + 1)}`);
    } else throw new UsageError(`invalid argument for ${as}: ${v}`);
  }, { short: "M" }),
  refused("exec-cmd", "none", "--exec-cmd is not supported yet"),
  // The mode is checked in checkOptions, once the log is open.
  opt("manage-cgroups", "optional", (o, v) => (o.manageCgroups = v ?? "")),
  opt("cgroup-root", "required", (o, v) => o.cgroupRoots.push(v!)),
  opt("inherit-fd", "required", (o, v) => o.inheritFds.push(v!)),
  opt("feature", "required", (o, v) => o.features.push(v!)),
  refused("skip-mnt", "required", NOT_YET.ns),
  opt("enable-fs", "required", (o, v) => o.enableFs.push(...v!.split(",").filter(Boolean))),
  opt("enable-external-sharing", "none", (o) => (o.externalSharing = true)),
  opt("enable-external-masters", "none", (o) => (o.externalMasters = true)),
  opt("freeze-cgroup", "required", (o, v) => (o.freezeCgroup = v)),
  opt("ghost-limit", "required", (o, v, as) => (o.ghostLimit = size(as, v))),
  opt("irmap-scan-path", "required", (o, v) => o.irmapScanPaths.push(v!)),
  opt("lsm-profile", "required", (o, v) => (o.lsmProfile = v)),
  opt("timeout", "required", (o, v) => (o.timeout = atoi(v!))),
  // mnt[] is --ext-mount-map auto (mnt[]:m with external masters, mnt[]:s with sharing).
  opt("external", "required", (o, v, as) => {
    const auto = /^mnt\[\](?::([ms]?))?$/.exec(v!);
    if (!v!.startsWith("mnt[]")) o.external.push(v!);
    else if (!auto) throw new UsageError(`invalid argument for ${as}: ${v}`);
    else {
      o.extMountAuto = true;
      if (auto[1] === "m") o.externalMasters = true;
      if (auto[1] === "s") o.externalSharing = true;
    }
  }),
  opt("empty-ns", "required", (o, v) => {
    if (v !== "net") {
      throw new UsageError(`--empty-ns ${v}: only net is supported (as with criu)`);
    }
    o.emptyNet = true;
  }),
  ...bool("lazy-pages", "lazyPages"),
  ...bool("extra", "checkExtra"),
  ...bool("experimental", "checkExperimental"),
  opt("all", "none", (o) => (o.checkExtra = o.checkExperimental = true)),
  refused("cgroup-props", "required", NOT_YET.ns),
  refused("cgroup-props-file", "required", NOT_YET.ns),
  refused("cgroup-dump-controller", "required", NOT_YET.ns),
  ...bool("skip-in-flight", "tcpSkipInFlight"),
  ...bool("deprecated", "deprecated"),
  ...bool("display-stats", "displayStats"),
  ...bool("weak-sysctls", "weakSysctls"),
  opt("status-fd", "required", (o, v, as) => (o.statusFd = int(as, v))),
  ...bool("tcp-close", "tcpClose"),
  opt("verbosity", "optional", (o, v) => {
    if (v === undefined) o.logLevel++;
    else if (v.startsWith("v")) o.logLevel += v.length + 1; // -vvv
    else o.logLevel = atoi(v);
  }, { short: "v" }),
  refused("ps-socket", "required", NOT_YET.migration),
  refused("stream", "none", NOT_YET.stream),
  { name: "no-stream", arg: "none", set: () => {} },
  opt("config", "required", (o, v) => (o.config = v)),
  opt("no-default-config", "none", (o) => (o.noDefaultConfig = true)),
  refused("tls-cacert", "required", NOT_YET.migration),
  refused("tls-cacrl", "required", NOT_YET.migration),
  refused("tls-cert", "required", NOT_YET.migration),
  refused("tls-key", "required", NOT_YET.migration),
  refused("tls", "none", NOT_YET.migration),
  { name: "no-tls", arg: "none", set: () => {} },
  refused("tls-no-cn-verify", "none", NOT_YET.migration),
  // Where the caller mounted the hierarchies: criu finds them in its mount table, the yard's
  // among them, so the directory needs no handling of its own.
  opt("cgroup-yard", "required", (o, v) => (o.cgroupYard = v)),
  opt("pre-dump-mode", "required", (o, v, as) => {
    o.preDumpMode = oneOf(as, v, ["splice", "read"] as const);
  }),
  opt("file-validation", "required", (o, v, as) => {
    o.fileValidation = oneOf(as, v, ["filesize", "buildid"] as const);
  }),
  ...bool("skip-file-rwx-check", "skipFileRwxCheck"),
  refused("lsm-mount-context", "required", NOT_YET.lsm),
  opt("network-lock", "required", (o, v, as) => {
    o.networkLock = v === "none" ? "skip" : oneOf(as, v, LOCK_METHODS);
  }),
  ...bool("mntns-compat-mode", "mntnsCompatMode"),
  refused("unprivileged", "none", "deno-criu runs as root only"),
  { name: "no-unprivileged", arg: "none", set: () => {} },
  ...bool("ghost-fiemap", "ghostFiemap"),
  ...bool("allow-uprobes", "allowUprobes"),
];

/** The options' names, for `criu --help` and the tests. */
export const OPTION_NAMES: readonly string[] = TABLE.map((s) => s.name);

/**
 * Parses criu's options: the configuration files that apply, then `argv` (without the program
 * name). `env` reads the environment ($HOME, $CRIU_CONFIG_FILE).
 */
export function parseOptions(
  argv: readonly string[],
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): CriuOpts {
  const o = defaultOpts();
  // criu looks for these before parsing anything: help wins over a broken config file.
  if (argv.includes("-h") || argv.includes("--help")) {
    o.help = true;
    return o;
  }
  let noDefault = false, file: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--no-default-config") noDefault = true;
    else if (argv[i] === "--config") [file, noDefault] = [argv[i + 1], true];
    else if (argv[i].startsWith("--config=")) [file, noDefault] = [argv[i].slice(9), true];
  }
  for (const cfg of configFileWords({ noDefault, file, env })) {
    const { operands } = apply(o, cfg.words, `configuration file ${cfg.path}`);
    if (operands.length) {
      throw new UsageError(
        `Unsupported configuration file format in ${cfg.path}: "${operands[0]}"`,
      );
    }
  }
  const { operands } = apply(o, argv);
  o.noDefaultConfig = noDefault;
  o.command = operands[0] ?? "";
  o.args = operands.slice(1);
  return o;
}

/**
 * Applies option words (argv's form, without operands) to `o`: how RPC requests and their
 * configuration files reach the same table as the command line. `where` names their source in
 * errors.
 */
export function applyOptions(o: CriuOpts, words: readonly string[], where: string): void {
  const { operands } = apply(o, words, where);
  if (operands.length) throw new UsageError(`Unexpected "${operands[0]}" in ${where}`);
}

function apply(o: CriuOpts, words: readonly string[], where?: string): { operands: string[] } {
  let parsed;
  try {
    parsed = getoptLong(words, TABLE);
  } catch (e) {
    if (e instanceof GetoptError) {
      throw new UsageError(where ? `${e.message} (in ${where})` : e.message);
    }
    throw e;
  }
  for (const { option, value, as } of parsed.options) {
    const spec = option as OptionSpec;
    spec.set(o, value, as);
    if (spec.name.startsWith("no-")) o.given.delete(spec.name.slice(3));
    else o.given.add(spec.name);
    // criu prints its version the moment it parses -V.
    if (o.version) return { operands: [] };
  }
  return { operands: parsed.operands };
}

/**
 * Refuses what deno-criu cannot honour for `o.command`: the option named, with the reason.
 * Also criu's own consistency checks.
 */
export function checkOptions(o: CriuOpts): void {
  for (const spec of TABLE) {
    if (spec.refuse && o.given.has(spec.name)) {
      throw new UsageError(`Option --${spec.name} is not supported by deno-criu: ${spec.refuse}`);
    }
  }
  for (const j of o.joinNs) {
    const m = /^(\w+):([^,]+)$/.exec(j);
    if (!m) throw new UsageError(`Invalid --join-ns ${j}: NS:PID or NS:FILE expected`);
    if (m[1] !== "net") {
      throw new UsageError(
        `Option --join-ns ${j} is not supported by deno-criu: only a network namespace can be ` +
          `joined so far`,
      );
    }
  }
  if (o.manageCgroups && !CGROUP_MODES.includes(o.manageCgroups as CgroupMode)) {
    throw new UsageError(
      `Unknown cgroups mode --manage-cgroups=${o.manageCgroups} (${CGROUP_MODES.join(", ")})`,
    );
  }
  if (o.restoreSibling && !o.restoreDetached) {
    throw new UsageError("--restore-sibling only makes sense with --restore-detached");
  }
  if (o.lazyPages && o.command === "pre-dump") {
    throw new UsageError("Lazy pages are not supported with pre-dump (as with criu)");
  }
  if (o.inheritFds.length && o.command !== "restore") {
    throw new UsageError("--inherit-fd is restore-only option");
  }
  // The tasks come back unconfined, as deno-criu dumps them (no LSM state is carried).
  if (o.lsmProfile !== undefined && !/^(apparmor|selinux):unconfined$/.test(o.lsmProfile)) {
    throw new UsageError(
      `Option --lsm-profile ${o.lsmProfile} is not supported by deno-criu: ${NOT_YET.lsm} ` +
        `(only TYPE:unconfined)`,
    );
  }
  checkExternal(o.external, o.command);
}

/** Refuses what `--external` names that deno-criu cannot handle for `command`. */
export function checkExternal(external: readonly string[], command: string): void {
  for (const e of external) {
    const type = /^(\w+)\[/.exec(e)?.[1];
    // At restore, as criu: a name that is no resource's key matches nothing in the images
    // (LXC 5.0 passes its LSM profile so, "--external apparmor:unconfined").
    if (!type && command === "restore" && !/[[\]]/.test(e)) continue;
    if (!type || !/\]/.test(e)) throw new UsageError(`invalid argument for --external: ${e}`);
    if (type === "mnt" && !/^mnt\[[^\]]+\]:./.test(e)) {
      throw new UsageError(
        `Option --external ${e} is not supported by deno-criu: name each external mount ` +
          `(mnt[MOUNTPOINT]:KEY at dump, mnt[KEY]:PATH at restore)`,
      );
    }
    if (type === "net" && !/^net\[\d+\]:./.test(e)) {
      throw new UsageError(`invalid argument for --external: ${e} (net[INODE]:KEY expected)`);
    }
    if (!EXTERNAL_TYPES.has(type)) {
      throw new UsageError(
        `Option --external ${e} is not supported by deno-criu: ${
          ["dev", "pid"].includes(type) ? NOT_YET.ns : `no resource of type ${type}`
        }`,
      );
    }
  }
}

/**
 * The resources `--external` names that deno-criu handles: files, terminals, unix sockets,
 * the outside ends of veth devices (`veth[IFNAME]:OUTNAME[@BRIDGE]`, at restore), the lower
 * devices of macvlans (`macvlan[IFNAME]:LOWER`, at restore), mounts (`mnt[MOUNTPOINT]:KEY` at
 * dump, `mnt[KEY]:PATH` at restore), and the tree's network namespace (`net[INODE]:KEY` at
 * dump; joined again at restore from `--inherit-fd fd[N]:KEY`).
 */
const EXTERNAL_TYPES = new Set(["file", "tty", "unix", "veth", "macvlan", "mnt", "net"]);
