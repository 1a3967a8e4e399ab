/**
 * A request's `criu_opts` as the command line's options: each field becomes the option words
 * criu's command line has for it, applied through the same table (so a field is checked,
 * refused or honoured exactly as its option is), then the request's configuration file
 * (`config_file`, runc's /etc/criu/runc.conf), whose options win, as criu's do.
 *
 * What has no option is set directly: the images and work directories, which a request names
 * by the caller's descriptors (`images_dir_fd`, `work_dir_fd`), the log, the tree's root.
 *
 * @module
 */
import { isFieldSet } from "../images/protobuf.ts";
import {
  criu_cg_mode,
  criu_network_lock_method,
  type criu_opts,
  criu_optsSchema,
  criu_page_server_infoSchema,
  criu_pre_dump_mode,
} from "../../proto/gen/rpc_pb.ts";
import { configWords } from "../cli/config_file.ts";
import { applyOptions, checkOptions, type CriuOpts, UsageError } from "../cli/options.ts";
import { logOptionsError } from "../cli/dirs.ts";

/** criu's log file in the work directory when a request names none. */
export const DEFAULT_LOG_FILE = "criu.log";

const CLONE_NEWNET = 0x40000000;

/** The request kinds whose options this reads; they differ in what they need. */
export type RequestMode = "dump" | "restore" | "page-server";

const CG_MODES: Record<criu_cg_mode, string> = {
  [criu_cg_mode.IGNORE]: "ignore",
  [criu_cg_mode.CG_NONE]: "none",
  [criu_cg_mode.PROPS]: "props",
  [criu_cg_mode.SOFT]: "soft",
  [criu_cg_mode.FULL]: "full",
  [criu_cg_mode.STRICT]: "strict",
  // criu's default mode is soft.
  [criu_cg_mode.DEFAULT]: "soft",
};

const LOCK_METHODS: Record<criu_network_lock_method, string> = {
  [criu_network_lock_method.IPTABLES]: "iptables",
  [criu_network_lock_method.NFTABLES]: "nftables",
  [criu_network_lock_method.SKIP]: "skip",
};

/** Fields that are a boolean option with a `--no-` form: set either way, they say so. */
const BOOLS: [keyof criu_opts, string][] = [
  ["tcpEstablished", "tcp-established"],
  ["evasiveDevices", "evasive-devices"],
  ["shellJob", "shell-job"],
  ["fileLocks", "file-locks"],
  ["linkRemap", "link-remap"],
  ["forceIrmap", "force-irmap"],
  ["tcpSkipInFlight", "skip-in-flight"],
  ["weakSysctls", "weak-sysctls"],
  ["tcpClose", "tcp-close"],
  ["skipFileRwxCheck", "skip-file-rwx-check"],
  ["mntnsCompatMode", "mntns-compat-mode"],
  ["displayStats", "display-stats"],
  ["trackMem", "track-mem"],
  ["autoDedup", "auto-dedup"],
  ["unprivileged", "unprivileged"],
  ["tls", "tls"],
];

/** Fields that switch an option on when true (criu reads only their true value). */
const FLAGS: [keyof criu_opts, string][] = [
  ["leaveRunning", "leave-running"],
  ["leaveStopped", "leave-stopped"],
  ["extUnixSk", "ext-unix-sk"],
  ["extSharing", "enable-external-sharing"],
  ["extMasters", "enable-external-masters"],
  ["lazyPages", "lazy-pages"],
  ["tlsNoCnVerify", "tls-no-cn-verify"],
];

/** Fields that are an option with one value. */
const VALUES: [keyof criu_opts, string][] = [
  ["root", "root"],
  ["freezeCgroup", "freeze-cgroup"],
  ["lsmProfile", "lsm-profile"],
  ["lsmMountContext", "lsm-mount-context"],
  ["cgroupProps", "cgroup-props"],
  ["cgroupPropsFile", "cgroup-props-file"],
  ["cgroupYard", "cgroup-yard"],
  ["parentImg", "prev-images-dir"],
  ["tlsCacert", "tls-cacert"],
  ["tlsCacrl", "tls-cacrl"],
  ["tlsCert", "tls-cert"],
  ["tlsKey", "tls-key"],
  ["timeout", "timeout"],
  ["ghostLimit", "ghost-limit"],
];

/** Fields that are an option given once per value. */
const LISTS: [keyof criu_opts, string][] = [
  ["external", "external"],
  ["enableFs", "enable-fs"],
  ["skipMnt", "skip-mnt"],
  ["irmapScanPaths", "irmap-scan-path"],
  ["cgroupDumpController", "cgroup-dump-controller"],
];

/** Option words and, for each option, the request field it came from (for refusals). */
class Words {
  readonly words: string[] = [];
  readonly fieldOf = new Map<string, string>();

  add(field: string, option: string, value?: string | number): void {
    this.words.push(value === undefined ? `--${option}` : `--${option}=${value}`);
    this.fieldOf.set(option, field);
  }
}

/** Whether the request gives field `key` (proto2 presence), whatever its value. */
function has(r: criu_opts, key: keyof criu_opts): boolean {
  return isFieldSet(r, criu_optsSchema.field[key as keyof typeof criu_optsSchema.field]);
}

/** The field name as rpc.proto spells it. */
function protoName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** The option words of a request's fields (but those `optsFromRequest` sets itself). */
function requestWords(r: criu_opts): Words {
  const w = new Words();
  for (const [key, option] of BOOLS) {
    if (has(r, key)) w.add(protoName(key), r[key] ? option : `no-${option}`);
  }
  for (const [key, option] of FLAGS) if (has(r, key) && r[key]) w.add(protoName(key), option);
  for (const [key, option] of VALUES) {
    if (has(r, key)) w.add(protoName(key), option, r[key] as string | number);
  }
  for (const [key, option] of LISTS) {
    for (const v of r[key] as string[]) w.add(protoName(key), option, v);
  }
  if (r.execCmd.length) w.add("exec_cmd", "exec-cmd");
  if (r.ps) {
    // A lazy dump serves its pages on the port itself (criu's lazy migration).
    if (!r.lazyPages) w.add("ps", "page-server");
    if (r.ps.address) w.add("ps", "address", r.ps.address);
    if (r.ps.port) w.add("ps", "port", r.ps.port);
    if (isFieldSet(r.ps, criu_page_server_infoSchema.field.fd)) w.add("ps", "ps-socket", r.ps.fd);
  }
  if (has(r, "pidfdStoreSk")) w.add("pidfd_store_sk", "ps-socket", r.pidfdStoreSk);
  if (has(r, "autoExtMnt") && r.autoExtMnt) w.add("auto_ext_mnt", "ext-mount-map", "auto");
  for (const m of r.extMnt) w.add("ext_mnt", "ext-mount-map", `${m.key}:${m.val}`);
  for (const v of r.veths) w.add("veths", "external", `veth[${v.ifIn}]:${v.ifOut}`);
  for (const u of r.unixSkIno) w.add("unix_sk_ino", "external", `unix[${u.inode}]`);
  for (const c of r.cgRoot) {
    w.add("cg_root", "cgroup-root", c.ctrl ? `${c.ctrl}:${c.path}` : c.path);
  }
  for (const j of r.joinNs) {
    w.add("join_ns", "join-ns", `${j.ns}:${j.nsFile}${j.extraOpt ? `,${j.extraOpt}` : ""}`);
  }
  for (const f of r.inheritFd) w.add("inherit_fd", "inherit-fd", `fd[${f.fd}]:${f.key}`);
  // manage_cgroups is the older switch (soft or ignore); the mode, when given, wins.
  if (has(r, "manageCgroups")) {
    w.add("manage_cgroups", "manage-cgroups", r.manageCgroups ? "soft" : "ignore");
  }
  if (has(r, "manageCgroupsMode")) {
    const mode = CG_MODES[r.manageCgroupsMode];
    if (mode === undefined) {
      throw new UsageError(`Unknown manage_cgroups_mode ${r.manageCgroupsMode}`);
    }
    w.add("manage_cgroups_mode", "manage-cgroups", mode);
  }
  if (has(r, "networkLock")) {
    const method = LOCK_METHODS[r.networkLock];
    if (method === undefined) throw new UsageError(`Unknown network_lock ${r.networkLock}`);
    w.add("network_lock", "network-lock", method);
  }
  if (has(r, "preDumpMode")) {
    w.add(
      "pre_dump_mode",
      "pre-dump-mode",
      r.preDumpMode === criu_pre_dump_mode.VM_READ ? "read" : "splice",
    );
  }
  if (has(r, "emptyNs") && r.emptyNs) {
    if (r.emptyNs & ~CLONE_NEWNET) {
      throw new UsageError(`empty_ns 0x${r.emptyNs.toString(16)}: only CLONE_NEWNET can be empty`);
    }
    w.add("empty_ns", "empty-ns", "net");
  }
  if (has(r, "cpuCap")) w.add("cpu_cap", "cpu-cap", r.cpuCap);
  return w;
}

/** Where a request's descriptor `fd` of the caller `peer` leads: its directory's path. */
export function callersDir(peer: number, fd: number, what: string): string {
  const link = `/proc/${peer}/fd/${fd}`;
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(link);
  } catch (e) {
    throw new UsageError(
      `Cannot use the caller's ${what} descriptor ${fd}: ${(e as Error).message}`,
    );
  }
  if (!st.isDirectory) {
    throw new UsageError(`The caller's ${what} descriptor ${fd} is no directory`);
  }
  // The directory's own path where it leads to the same directory here (helpers criu starts
  // may not see the caller's descriptors); the caller's descriptor otherwise, as criu uses it.
  try {
    const path = Deno.realPathSync(link);
    const here = Deno.statSync(path);
    if (here.dev === st.dev && here.ino === st.ino) return path;
  } catch {
    // another mount namespace's path
  }
  return link;
}

/**
 * The options of a request of kind `mode` from caller `peer`, on top of `base` (the defaults
 * and criu's default configuration files, as `criu swrk` started with them). Throws a
 * UsageError naming the field for what deno-criu refuses, written to the request's log file
 * too.
 */
export function optsFromRequest(
  base: CriuOpts,
  r: criu_opts | undefined,
  peer: number,
  mode: RequestMode,
): CriuOpts {
  const o: CriuOpts = { ...base, command: mode, args: [], given: new Set(base.given) };
  if (!r) throw new UsageError("The request has no options (criu_opts)");
  // Where it reads, writes and logs first: what is refused after is logged there.
  if (r.imagesDirFd !== -1) o.imagesDir = callersDir(peer, r.imagesDirFd, "images directory");
  else if (r.imagesDir) o.imagesDir = r.imagesDir;
  else throw new UsageError("Neither images_dir_fd nor images_dir was passed by the RPC caller");
  o.workDir = has(r, "workDirFd") ? callersDir(peer, r.workDirFd, "work directory") : undefined;
  if (r.logFile) {
    if (r.logFile.includes("/")) throw new UsageError("No subdirectories are allowed in log_file");
    o.logFile = r.logFile;
  } else if (has(r, "logToStderr") && r.logToStderr) o.logFile = "-";
  else o.logFile ??= DEFAULT_LOG_FILE;
  try {
    applyRequest(o, r, mode);
  } catch (e) {
    logOptionsError(o, (e as Error).message, "rpc");
    throw e;
  }
  return o;
}

/** The request's other fields, then its configuration file, applied to `o` and checked. */
function applyRequest(o: CriuOpts, r: criu_opts, mode: RequestMode): void {
  const w = requestWords(r);
  applyOptions(o, w.words, "the RPC request");
  o.logLevel = r.logLevel;
  if (mode === "dump") {
    if (!has(r, "pid")) {
      throw new UsageError(
        "RPC field pid is required by deno-criu: a caller dumping itself is not supported",
      );
    }
    o.tree = r.pid;
  }
  if (has(r, "rstSibling")) o.restoreSibling = r.rstSibling;
  if (has(r, "orphanPtsMaster")) o.orphanPtsMaster = r.orphanPtsMaster;
  // A restore through RPC returns once the tree runs, as criu's does.
  if (mode === "restore") o.restoreDetached = true;
  if (r.configFile) {
    // Its options win over the request's, as criu's RPC configuration file's do; a file that
    // is not there changes nothing (criu skips it too).
    let text: string | undefined;
    try {
      text = Deno.readTextFileSync(r.configFile);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new UsageError(
          `Cannot read configuration file ${r.configFile}: ${(e as Error).message}`,
        );
      }
    }
    if (text !== undefined) {
      applyOptions(o, configWords(text, r.configFile), `configuration file ${r.configFile}`);
    }
  }
  try {
    checkOptions(o);
  } catch (e) {
    const option = /--([\w-]+)/.exec((e as Error).message)?.[1];
    const field = option && w.fieldOf.get(option);
    if (e instanceof UsageError && field) {
      throw new UsageError(`RPC field ${field}: ${e.message}`);
    }
    throw e;
  }
}
