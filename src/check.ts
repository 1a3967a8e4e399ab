/**
 * `criu check`: does this kernel have what dump and restore need? Each feature is probed by
 * doing the thing (seizing a real process, opening a userfaultfd, ...), not by reading versions.
 *
 * @module
 */
import {
  close,
  errno,
  KCMP,
  kcmp,
  libc,
  NR,
  O,
  open,
  orErrno,
  ptraceGetRegs,
  ptraceGetRseq,
  ptraceInterrupt,
  ptraceSeize,
  tryKill,
  tryPtraceDetach,
  waitPid,
  zeroPagePfn,
} from "./syscalls/mod.ts";

/** One kernel feature check. */
export interface Feature {
  /** Name accepted by `criu check --feature`. */
  name: string;
  /** What it is for. */
  description: string;
  /** Whether `criu check` needs it to say "Looks good." */
  required: boolean;
  /** Runs the probe; resolves to true when supported. */
  probe: () => boolean | Promise<boolean>;
}

function sys(nr: number, ...args: (number | bigint)[]): number {
  const a = [...args, 0, 0, 0, 0, 0, 0].slice(0, 6).map((x) => BigInt(x));
  return orErrno(libc.syscall(BigInt(nr), a[0], a[1], a[2], a[3], a[4], a[5]));
}

/** Seizes an orphaned `sleep` (not our child: Deno reaps its own), reads its registers, lets go. */
async function probePtrace(rseq: boolean): Promise<boolean> {
  const out = await new Deno.Command("sh", {
    args: ["-c", "sleep 10 </dev/null >/dev/null 2>&1 & echo $!"],
    stdout: "piped",
  }).output();
  const pid = Number(new TextDecoder().decode(out.stdout).trim());
  if (!pid) return false;
  try {
    ptraceSeize(pid, 0);
    ptraceInterrupt(pid);
    waitPid(pid);
    ptraceGetRegs(pid);
    if (rseq) ptraceGetRseq(pid);
    return true;
  } catch {
    return false;
  } finally {
    tryPtraceDetach(pid);
    tryKill(pid, 9);
  }
}

/** Whether `cmd args` runs and succeeds. */
function tool(cmd: string, args: string[]): boolean {
  try {
    return new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

/** Every feature `criu check` knows. */
export const FEATURES: Feature[] = [
  {
    name: "ptrace_seize",
    description: "PTRACE_SEIZE/PTRACE_INTERRUPT freeze a task",
    required: true,
    probe: () => probePtrace(false),
  },
  {
    name: "get_rseq_conf",
    description: "PTRACE_GET_RSEQ_CONFIGURATION reads a task's rseq area",
    required: true,
    probe: () => probePtrace(true),
  },
  {
    name: "pagemap_pfn",
    description: "/proc/PID/pagemap shows page frames (zero-page detection)",
    required: true,
    probe: () => zeroPagePfn() >= 0n,
  },
  {
    name: "map_files",
    description: "/proc/PID/map_files lists mapped files",
    required: true,
    probe: () => {
      try {
        return [...Deno.readDirSync("/proc/self/map_files")].length > 0;
      } catch {
        return false;
      }
    },
  },
  {
    name: "kcmp",
    description: "kcmp(2) compares kernel objects of two tasks",
    required: true,
    probe: () => {
      try {
        return kcmp(Deno.pid, Deno.pid, KCMP.VM) === 0;
      } catch {
        return false;
      }
    },
  },
  {
    name: "clone3_set_tid",
    description: "clone3(2) with set_tid restores tasks with their PIDs",
    required: true,
    probe: () => sys(NR.clone3, 0, 0) !== -errno.ENOSYS,
  },
  {
    name: "tcp_repair",
    description: "TCP_REPAIR puts a socket in repair mode",
    required: false,
    probe: () => {
      const fd = sys(NR.socket, 2, /* AF_INET */ 1, /* SOCK_STREAM */ 0);
      if (fd < 0) return false;
      try {
        const one = new Int32Array([1]);
        return sys(NR.setsockopt, fd, 6, /* IPPROTO_TCP */ 19, /* TCP_REPAIR */ ptrOf(one), 4) ===
          0;
      } finally {
        close(fd);
      }
    },
  },
  {
    name: "network-lock-nftables",
    description: "nft can lock TCP connections while they are dumped (--network-lock nftables)",
    required: false,
    probe: () => tool("nft", ["list", "tables"]),
  },
  {
    name: "network-lock-iptables",
    description:
      "iptables can lock TCP connections while they are dumped (--network-lock iptables)",
    required: false,
    probe: () => tool("iptables", ["-w", "-S", "INPUT"]),
  },
  {
    name: "userfaultfd",
    description: "userfaultfd(2) for lazy pages and write-protect tracking",
    required: false,
    probe: () => {
      const fd = sys(NR.userfaultfd, O.CLOEXEC | O.NONBLOCK);
      if (fd >= 0) close(fd);
      return fd >= 0;
    },
  },
  {
    name: "pagemap_scan",
    description: "PAGEMAP_SCAN ioctl (dirty tracking without soft-dirty)",
    required: false,
    probe: () => {
      const fd = open("/proc/self/pagemap", O.RDONLY | O.CLOEXEC);
      try {
        const arg = new BigUint64Array(12);
        arg[0] = 96n; // size
        arg[2] = 0x10000n; // start
        arg[3] = 0x11000n; // end
        const PAGEMAP_SCAN = 0xc0606610n;
        return libc.ioctl(fd, PAGEMAP_SCAN, new Uint8Array(arg.buffer)) >= 0;
      } finally {
        close(fd);
      }
    },
  },
  {
    name: "timens",
    description: "time namespaces",
    required: false,
    probe: () => {
      try {
        Deno.statSync("/proc/self/ns/time");
        return true;
      } catch {
        return false;
      }
    },
  },
];

function ptrOf(a: Int32Array): bigint {
  const p = Deno.UnsafePointer.of(a as Int32Array<ArrayBuffer>);
  return p === null ? 0n : BigInt(Deno.UnsafePointer.value(p));
}

/** Result of one probe. */
export interface CheckResult {
  feature: Feature;
  supported: boolean;
}

/** Runs the probes of `names` (all features when empty). Unknown names throw. */
export async function checkFeatures(names: string[] = []): Promise<CheckResult[]> {
  const chosen = names.length
    ? names.map((n) => {
      const f = FEATURES.find((x) => x.name === n);
      if (!f) {
        throw new Error(
          `Unknown feature ${n}; known features: ${FEATURES.map((x) => x.name).join(", ")}`,
        );
      }
      return f;
    })
    : FEATURES;
  const out: CheckResult[] = [];
  for (const feature of chosen) {
    let supported = false;
    try {
      supported = await feature.probe();
    } catch {
      supported = false;
    }
    out.push({ feature, supported });
  }
  return out;
}
