/**
 * criu's command line, parsed the way criu's getopt_long parses it.
 *
 * - Short options group (`-Rj`) and take values attached or separate (`-t42`, `-t 42`).
 * - `-v` takes an optional attached value: `-v` is 4, `-v3` is 3, `-vvv` is 4, and anything else
 *   attached goes through atoi as in criu, so `-verbosity=0` is level 0.
 * - Long options take `--opt=value` or `--opt value`; `--verbosity` alone is 4.
 * - An option criu has but deno-criu does not implement yet is an error naming it; an unknown
 *   option is an error too. Options criu treats as no-ops here are accepted.
 *
 * @module
 */
import { LOCK_METHODS, type LockMethod } from "../net/netlock.ts";

/** Parsed command line. */
export interface CliOptions {
  command: string;
  /** Positional arguments after the command. */
  args: string[];
  tree?: number;
  imagesDir: string;
  logFile?: string;
  verbosity: number;
  leaveRunning: boolean;
  leaveStopped: boolean;
  shellJob: boolean;
  fileLocks: boolean;
  restoreDetached: boolean;
  pidfile?: string;
  timeout?: number;
  displayStats: boolean;
  ghostLimit?: number;
  tcpEstablished: boolean;
  tcpClose: boolean;
  skipInFlight: boolean;
  networkLock?: LockMethod;
  all: boolean;
  features: string[];
  help: boolean;
  version: boolean;
}

/** A malformed command line. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

type Kind = "flag" | "value" | "optional";

interface Spec {
  long: string;
  short?: string;
  kind: Kind;
  apply: (o: CliOptions, v: string | undefined, as: string) => void;
}

function int(name: string, v: string | undefined): number {
  if (v === undefined || !/^-?\d+$/.test(v.trim())) {
    throw new UsageError(
      `Option ${name} needs a number, got ${v === undefined ? "nothing" : `"${v}"`}`,
    );
  }
  return Number(v);
}

/** A size with an optional K, M or G suffix (criu's --ghost-limit). */
function size(name: string, v: string | undefined): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(v ?? "");
  if (!m) throw new UsageError(`Option ${name} needs a size (e.g. 10M), got "${v ?? ""}"`);
  const unit =
    { "": 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 }[m[2].toLowerCase() as "" | "k" | "m" | "g"];
  return Number(m[1]) * unit;
}

/** criu's atoi: leading digits, 0 when there are none. */
function atoi(s: string): number {
  const m = /^\s*([+-]?\d+)/.exec(s);
  return m ? Number(m[1]) : 0;
}

const SPECS: Spec[] = [
  { long: "tree", short: "t", kind: "value", apply: (o, v, n) => (o.tree = int(n, v)) },
  { long: "images-dir", short: "D", kind: "value", apply: (o, v) => (o.imagesDir = v!) },
  { long: "log-file", short: "o", kind: "value", apply: (o, v) => (o.logFile = v!) },
  {
    long: "verbosity",
    short: "v",
    kind: "optional",
    apply: (o, v) => {
      if (v === undefined) o.verbosity = 4;
      else if (v.startsWith("v")) o.verbosity = 4;
      else o.verbosity = atoi(v.startsWith("=") ? v.slice(1) : v);
    },
  },
  { long: "leave-running", short: "R", kind: "flag", apply: (o) => (o.leaveRunning = true) },
  { long: "leave-stopped", short: "s", kind: "flag", apply: (o) => (o.leaveStopped = true) },
  { long: "shell-job", short: "j", kind: "flag", apply: (o) => (o.shellJob = true) },
  { long: "file-locks", short: "l", kind: "flag", apply: (o) => (o.fileLocks = true) },
  { long: "restore-detached", short: "d", kind: "flag", apply: (o) => (o.restoreDetached = true) },
  { long: "pidfile", kind: "value", apply: (o, v) => (o.pidfile = v) },
  { long: "timeout", kind: "value", apply: (o, v, n) => (o.timeout = int(n, v)) },
  { long: "no-default-config", kind: "flag", apply: () => {} },
  { long: "display-stats", kind: "flag", apply: (o) => (o.displayStats = true) },
  { long: "ghost-limit", kind: "value", apply: (o, v, n) => (o.ghostLimit = size(n, v)) },
  { long: "tcp-established", kind: "flag", apply: (o) => (o.tcpEstablished = true) },
  { long: "tcp-close", kind: "flag", apply: (o) => (o.tcpClose = true) },
  { long: "skip-in-flight", kind: "flag", apply: (o) => (o.skipInFlight = true) },
  {
    long: "network-lock",
    kind: "value",
    apply: (o, v, n) => {
      if (!LOCK_METHODS.includes(v as LockMethod)) {
        throw new UsageError(
          `Option ${n} takes ${LOCK_METHODS.join(", ")}; got "${v ?? ""}"`,
        );
      }
      o.networkLock = v as LockMethod;
    },
  },
  { long: "all", kind: "flag", apply: (o) => (o.all = true) },
  { long: "feature", kind: "value", apply: (o, v) => o.features.push(v!) },
  { long: "help", short: "h", kind: "flag", apply: (o) => (o.help = true) },
  { long: "version", short: "V", kind: "flag", apply: (o) => (o.version = true) },
];

/** criu options that exist but are not implemented by deno-criu yet. */
const NOT_YET = new Map<string, Kind>([
  ["external", "value"],
  ["ext-unix-sk", "optional"],
  ["inherit-fd", "value"],
  ["link-remap", "flag"],
  ["manage-cgroups", "optional"],
  ["root", "value"],
  ["freeze-cgroup", "value"],
  ["track-mem", "flag"],
  ["prev-images-dir", "value"],
  ["page-server", "flag"],
  ["address", "value"],
  ["port", "value"],
  ["lazy-pages", "flag"],
  ["pre-dump-mode", "value"],
  ["namespaces", "value"],
  ["cgroup-root", "value"],
  ["evasive-devices", "flag"],
  ["auto-dedup", "flag"],
  ["exec-cmd", "flag"],
  ["action-script", "value"],
  ["unprivileged", "flag"],
]);
const NOT_YET_SHORT = new Map<string, string>([["l", "file-locks"], ["n", "namespaces"], [
  "r",
  "root",
]]);

function notYet(name: string): never {
  throw new UsageError(`Option --${name} is not supported by deno-criu yet`);
}

/** Parses `argv` (without the program name). */
export function parseCommandLine(argv: string[]): CliOptions {
  const o: CliOptions = {
    command: "",
    args: [],
    imagesDir: ".",
    verbosity: 2,
    leaveRunning: false,
    leaveStopped: false,
    shellJob: false,
    fileLocks: false,
    tcpEstablished: false,
    tcpClose: false,
    skipInFlight: false,
    restoreDetached: false,
    displayStats: false,
    all: false,
    features: [],
    help: false,
    version: false,
  };
  const byLong = new Map(SPECS.map((s) => [s.long, s]));
  const byShort = new Map(SPECS.filter((s) => s.short).map((s) => [s.short!, s]));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      o.args.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const inline = eq < 0 ? undefined : a.slice(eq + 1);
      const spec = byLong.get(name);
      if (!spec) {
        if (NOT_YET.has(name)) notYet(name);
        throw new UsageError(`Unknown option --${name}`);
      }
      if (spec.kind === "flag") {
        if (inline !== undefined) throw new UsageError(`Option --${name} takes no value`);
        spec.apply(o, undefined, `--${name}`);
      } else if (spec.kind === "value") {
        const v = inline ?? argv[++i];
        if (v === undefined) throw new UsageError(`Option --${name} needs a value`);
        spec.apply(o, v, `--${name}`);
      } else {
        spec.apply(o, inline, `--${name}`);
      }
    } else if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const c = a[j];
        const spec = byShort.get(c);
        if (!spec) {
          const long = NOT_YET_SHORT.get(c);
          if (long) notYet(long);
          throw new UsageError(`Unknown option -${c}`);
        }
        if (spec.kind === "flag") {
          spec.apply(o, undefined, `-${c}`);
          continue;
        }
        const rest = a.slice(j + 1);
        if (spec.kind === "value") {
          const v = rest || argv[++i];
          if (v === undefined) throw new UsageError(`Option -${c} needs a value`);
          spec.apply(o, v, `-${c}`);
        } else {
          spec.apply(o, rest || undefined, `-${c}`);
        }
        break;
      }
    } else if (!o.command) {
      o.command = a;
    } else {
      o.args.push(a);
    }
  }
  return o;
}

/** The usage text printed by `criu --help`. */
export const USAGE = `Usage:
  criu dump|restore|check|show [<options>]

Commands:
  dump           checkpoint a process identified by pid
  restore        restore a process from images
  check          check whether the kernel supports what dump and restore need
  show           print the images of a directory (or one image file) as JSON

Dump/Restore options:
  -t|--tree PID            checkpoint the process tree rooted at PID
  -D|--images-dir DIR      directory for image files (default: .)
  -o|--log-file FILE       log file name, relative to the images directory
  -v[NUM]|--verbosity[=NUM]  log level 0 (none) to 4 (debug); -v alone is 4
  -R|--leave-running       leave the tree running after the dump
  -s|--leave-stopped       leave the tree stopped after the dump
  -j|--shell-job           the tree was started from a shell (keep session and tty)
  -l|--file-locks          dump and restore file locks (flock, POSIX, OFD)
  -d|--restore-detached    return once the restored tree is running
  --pidfile FILE           write the restored root task's PID to FILE
  --timeout NUM            seconds to wait for the tree to freeze
  --display-stats          print dump/restore statistics
  --ghost-limit SIZE       largest deleted open file to carry in the images (default 1M)
  --no-default-config      accepted (deno-criu reads no configuration files)

Check options:
  --feature NAME           check one feature (exit 0 when supported, 1 otherwise)
  --all                    list every feature and whether it is supported
`;
