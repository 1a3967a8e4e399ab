/**
 * `criu check`: does this kernel have what dump and restore need? Each feature is probed by
 * doing the thing (seizing a real process, opening a userfaultfd, ...), not by reading versions.
 *
 * @module
 */
import { exists } from "./util/exists.ts";
import {
  close,
  Errno,
  errno,
  KCMP,
  kcmp,
  libc,
  MOVE_MOUNT,
  NR,
  O,
  open,
  orErrno,
  PAGE_IS,
  pagemapScan,
  PTRACE_O,
  ptraceGetRegs,
  ptraceGetRseq,
  ptraceInterrupt,
  ptraceSeccompFilter,
  ptraceSeize,
  relatedNamespace,
  tryKill,
  tryPtraceDetach,
  tunFileNetns,
  tunSetIfindex,
  waitPid,
  zeroPagePfn,
} from "./syscalls/mod.ts";
import { addressOf, cString } from "./syscalls/ffi.ts";
import { aioRemapWorks } from "./syscalls/aio.ts";
import { UFFD_FEATURES_NONCOOP, uffdFeatures, uffdWpAsync } from "./syscalls/uffd.ts";
import { AF_UNIX, SOCK_DGRAM, socket, socketNetns } from "./syscalls/socket.ts";
import { nsidOf } from "./net/nsid.ts";

/** One feature `criu check` answers for. */
export interface Feature {
  /** Name accepted by `criu check --feature` (CRIU 4.2's names). */
  name: string;
  /** What it is for. */
  description: string;
  /**
   * When deno-criu cannot use the feature whatever the kernel says (it does not implement what
   * the feature is for yet): why. The answer is then "unsupported" without probing.
   */
  notOurs?: string;
  /** Category: "required" for a plain `criu check`, "extra" (`--extra`), "experimental". */
  category: "required" | "extra" | "experimental";
  /** Runs the probe; resolves to true when the kernel (and this machine) has it. */
  probe: () => boolean | Promise<boolean>;
}

function sys(nr: number, ...args: (number | bigint)[]): number {
  const a = [...args, 0, 0, 0, 0, 0, 0].slice(0, 6).map((x) => BigInt(x));
  return orErrno(libc.syscall(BigInt(nr), a[0], a[1], a[2], a[3], a[4], a[5]));
}

/** Whether `fn` succeeds on a /dev/net/tun file of criu's. */
function withTunFile(fn: (fd: number) => void): boolean {
  let fd = -1;
  try {
    fd = open("/dev/net/tun", O.RDWR | O.CLOEXEC);
    fn(fd);
    return true;
  } catch {
    return false;
  } finally {
    if (fd >= 0) close(fd);
  }
}

/** Seizes an orphaned `sleep` (not our child: Deno reaps its own), reads its registers, lets go. */
async function probePtrace(
  check: (pid: number) => boolean = () => true,
  options = 0,
): Promise<boolean> {
  const out = await new Deno.Command("sh", {
    args: ["-c", "sleep 10 </dev/null >/dev/null 2>&1 & echo $!"],
    stdout: "piped",
  }).output();
  const pid = Number(new TextDecoder().decode(out.stdout).trim());
  if (!pid) return false;
  try {
    ptraceSeize(pid, options);
    ptraceInterrupt(pid);
    waitPid(pid);
    ptraceGetRegs(pid);
    return check(pid);
  } catch {
    return false;
  } finally {
    tryPtraceDetach(pid);
    tryKill(pid, 9);
  }
}

/** Whether a new datagram socket of `family` answers getsockopt(`level`, `name`). */
function hasSockopt(family: number, level: number, name: number): boolean {
  const SOCK_DGRAM = 2;
  const fd = sys(NR.socket, family, SOCK_DGRAM | O.CLOEXEC, 0);
  if (fd < 0) return false;
  try {
    const val = new Int32Array([0, 4]); // the value, then its length
    const v = ptrOf(val);
    return sys(NR.getsockopt, fd, level, name, v, v + 4n) === 0;
  } finally {
    close(fd);
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

const NS = "namespaces come with container support";

/** A feature deno-criu does not use yet, whatever the kernel has. */
function notOurs(name: string, description: string, why: string): Feature {
  return { name, description, notOurs: why, category: "extra", probe: () => false };
}

/** Whether this network namespace answers RTM_GETNSID. */
function netnsIds(): boolean {
  try {
    nsidOf(Deno.pid);
    return true;
  } catch {
    return false;
  }
}

/** Whether fdinfo shows a descriptor's lease (and so its locks). */
function fdinfoShowsLocks(): boolean {
  const path = Deno.makeTempFileSync({ prefix: "criu-check-lease-" });
  const fd = open(path, O.RDONLY | O.CLOEXEC);
  try {
    const F_SETLEASE = 1024, F_RDLCK = 0;
    if (sys(NR.fcntl, fd, F_SETLEASE, F_RDLCK) < 0) return false;
    return /^lock:.*LEASE/m.test(Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`));
  } catch {
    return false;
  } finally {
    close(fd);
    Deno.removeSync(path);
  }
}

/** Whether `program` is on PATH. */
function onPath(program: string): boolean {
  return (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").some((d) =>
    exists(`${d}/${program}`)
  );
}

function tcpRepair(): boolean {
  const fd = sys(NR.socket, 2, /* AF_INET */ 1, /* SOCK_STREAM */ 0);
  if (fd < 0) return false;
  try {
    const one = new Int32Array([1]);
    return sys(NR.setsockopt, fd, 6, /* IPPROTO_TCP */ 19, /* TCP_REPAIR */ ptrOf(one), 4) === 0;
  } finally {
    close(fd);
  }
}

/** The checks a plain `criu check` runs: what every dump and restore needs. */
const REQUIRED: Feature[] = [
  {
    name: "ptrace_seize",
    description: "PTRACE_SEIZE/PTRACE_INTERRUPT freeze a task",
    category: "required",
    probe: () => probePtrace(),
  },
  {
    name: "pagemap_pfn",
    description: "/proc/PID/pagemap shows page frames (zero-page detection)",
    category: "required",
    probe: () => zeroPagePfn() >= 0n,
  },
  {
    name: "map_files",
    description: "/proc/PID/map_files lists mapped files",
    category: "required",
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
    category: "required",
    probe: () => {
      try {
        return kcmp(Deno.pid, Deno.pid, KCMP.VM) === 0;
      } catch {
        return false;
      }
    },
  },
];

/** CRIU 4.2's named features (`criu check --feature NAME`), in its order. */
const NAMED: Feature[] = [
  {
    name: "mnt_id",
    description: "mount ids in fdinfo",
    category: "extra",
    probe: () => {
      const fd = open("/", O.RDONLY | O.CLOEXEC);
      try {
        return /^mnt_id:/m.test(Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`));
      } finally {
        close(fd);
      }
    },
  },
  {
    name: "mem_dirty_track",
    description:
      "dirty memory tracking for pre-dumps (userfaultfd asynchronous write-protection and " +
      "PAGEMAP_SCAN, no soft-dirty needed)",
    category: "extra",
    probe: uffdWpAsync,
  },
  {
    name: "aio_remap",
    description: "AIO rings moved at restore (a context follows its ring through mremap)",
    category: "extra",
    probe: aioRemapWorks,
  },
  {
    name: "timerfd",
    description: "timerfd state (TFD_IOC_SET_TICKS)",
    category: "extra",
    probe: () => {
      const fd = sys(NR.timerfd_create, 1, /* CLOCK_MONOTONIC */ O.CLOEXEC);
      if (fd < 0) return false;
      close(fd);
      return true;
    },
  },
  {
    name: "tun",
    description: "tun/tap devices made at their index (TUNSETIFINDEX)",
    category: "extra",
    probe: () => withTunFile((fd) => tunSetIfindex(fd, 13, "probe")),
  },
  {
    name: "tun_ns",
    description: "the network namespace of a tun file (SIOCGSKNS)",
    category: "extra",
    probe: () => withTunFile((fd) => close(tunFileNetns(fd, "probe"))),
  },
  {
    name: "userns",
    description: "user namespaces: which one owns a namespace (NS_GET_USERNS, NS_GET_PARENT)",
    category: "extra",
    probe: () =>
      relatedNamespace("/proc/self/ns/net", "owner") ===
        Number(Deno.statSync("/proc/self/ns/user").ino),
  },
  {
    name: "fdinfo_lock",
    description: "locks and leases shown in /proc/PID/fdinfo",
    category: "extra",
    probe: () => fdinfoShowsLocks(),
  },
  {
    name: "seccomp_suspend",
    description: "seccomp suspended in traced tasks (PTRACE_O_SUSPEND_SECCOMP)",
    category: "extra",
    probe: () => probePtrace(undefined, PTRACE_O.SUSPEND_SECCOMP),
  },
  {
    name: "seccomp_filters",
    description: "seccomp filters read from a traced task (PTRACE_SECCOMP_GET_FILTER)",
    category: "extra",
    // A task without filters answers EINVAL; a kernel without the request, EIO.
    probe: () =>
      probePtrace((pid) => {
        try {
          ptraceSeccompFilter(pid, 0);
          return true;
        } catch (e) {
          return e instanceof Errno && e.errno !== errno.EIO;
        }
      }),
  },
  {
    name: "loginuid",
    description: "the login uid (audit) restored through /proc/PID/loginuid",
    category: "extra",
    probe: () => exists("/proc/self/loginuid"),
  },
  {
    name: "cgroupns",
    description: "cgroup namespaces (unshared again at their roots)",
    category: "extra",
    probe: () => exists("/proc/self/ns/cgroup"),
  },
  { ...notOurs("autofs", "autofs mounts", NS), category: "experimental" },
  {
    name: "tcp_half_closed",
    description: "TCP_REPAIR on half-closed connections",
    category: "extra",
    probe: tcpRepair,
  },
  {
    ...notOurs("compat_cr", "32-bit tasks", "32-bit tasks are not supported"),
    category: "experimental",
  },
  {
    name: "uffd",
    description: "userfaultfd for lazy pages",
    category: "extra",
    probe: () => uffdFeatures() !== undefined,
  },
  {
    name: "uffd-noncoop",
    description: "userfaultfd reporting forks, mremap, madvise and munmap (lazy pages)",
    category: "extra",
    probe: () => ((uffdFeatures() ?? 0) & UFFD_FEATURES_NONCOOP) === UFFD_FEATURES_NONCOOP,
  },
  notOurs("can_map_vdso", "mapping a vDSO", "deno-criu moves the vDSO into place (mremap)"),
  {
    name: "sk_ns",
    description: "sockets' network namespaces (SIOCGSKNS)",
    category: "extra",
    probe: () => {
      const fd = socket(AF_UNIX, SOCK_DGRAM);
      try {
        close(socketNetns(fd, "a socket"));
        return true;
      } catch {
        return false;
      } finally {
        close(fd);
      }
    },
  },
  notOurs("sk_unix_file", "unix sockets' files", "unix socket files are not checked this way"),
  {
    name: "net_diag_raw",
    description: "raw sockets dumped (deno-criu reads them through the socket, not sock_diag)",
    category: "extra",
    probe: () => {
      const AF_INET = 2, SOCK_RAW = 3, IPPROTO_ICMP = 1;
      const fd = sys(NR.socket, AF_INET, SOCK_RAW | O.CLOEXEC, IPPROTO_ICMP);
      if (fd < 0) return false;
      close(fd);
      return true;
    },
  },
  {
    name: "nsid",
    description: "network namespace ids (RTM_GETNSID), which pair veths between namespaces",
    category: "extra",
    probe: netnsIds,
  },
  {
    name: "link_nsid",
    description: "veth pairs between two of the tree's network namespaces",
    category: "extra",
    probe: netnsIds,
  },
  {
    name: "kcmp_epoll",
    description: "kcmp(KCMP_EPOLL_TFD): which file an epoll set watches",
    category: "extra",
    probe: () => {
      const ep = sys(NR.epoll_create1, O.CLOEXEC);
      if (ep < 0) return false;
      try {
        const slot = new Uint32Array([0, 0, 0]); // fd, epoll fd's target offset
        slot[0] = ep;
        // KCMP_EPOLL_TFD = 7: a target that is not watched gives an error other than EINVAL.
        const r = sys(NR.kcmp, Deno.pid, Deno.pid, 7, ep, ptrOf(new Int32Array(slot.buffer)));
        return r !== -errno.EINVAL && r !== -errno.ENOSYS;
      } finally {
        close(ep);
      }
    },
  },
  {
    name: "timens",
    description: "time namespaces",
    category: "extra",
    probe: () => exists("/proc/self/ns/time"),
  },
  notOurs("external_net_ns", "external network namespaces", NS),
  {
    name: "clone3_set_tid",
    description: "clone3(2) with set_tid restores tasks with their PIDs",
    category: "extra",
    probe: () => sys(NR.clone3, 0, 0) !== -errno.ENOSYS,
  },
  notOurs("newifindex", "links made with a given ifindex", NS),
  {
    name: "nftables",
    description: "the nft ruleset of a network namespace dumped and restored (nft)",
    category: "extra",
    probe: () => tool("nft", ["list", "tables"]),
  },
  {
    name: "has_ipt_legacy",
    description: "iptables-legacy, for --network-lock iptables",
    category: "extra",
    probe: () => onPath("iptables-legacy") || onPath("iptables"),
  },
  notOurs(
    "pidfd_store",
    "pidfds kept between RPC calls",
    "pidfds kept between pre-dumps (pidfd_store_sk) come with live migration",
  ),
  {
    name: "ns_pid",
    description: "NSpid in /proc/PID/status",
    category: "extra",
    probe: () => /^NSpid:/m.test(Deno.readTextFileSync("/proc/self/status")),
  },
  notOurs("apparmor_stacking", "AppArmor stacking", "LSM profiles are not restored yet"),
  {
    name: "network_lock_nftables",
    description: "nft locks TCP connections while they are dumped (--network-lock nftables)",
    category: "extra",
    probe: () => tool("nft", ["list", "tables"]),
  },
  {
    name: "sockopt_buf_lock",
    description: "SO_BUF_LOCK (buffer sizes set by hand) dumped and restored",
    category: "extra",
    probe: () => hasSockopt(2, /* AF_INET */ 1, /* SOL_SOCKET */ 72 /* SO_BUF_LOCK */),
  },
  {
    name: "memfd_hugetlb",
    description: "hugetlb memfds (MFD_HUGETLB)",
    category: "extra",
    probe: () => {
      const MFD_CLOEXEC = 1, MFD_HUGETLB = 4;
      const fd = sys(NR.memfd_create, addressOf(cString("criu-check")), MFD_CLOEXEC | MFD_HUGETLB);
      if (fd < 0) return false;
      close(fd);
      return true;
    },
  },
  {
    name: "move_mount_set_group",
    description: "peer groups joined by move_mount (MOVE_MOUNT_SET_GROUP)",
    category: "extra",
    // The flag known, the call fails on its descriptors (EBADF), not its flags (EINVAL).
    probe: () =>
      sys(
        NR.move_mount,
        -1,
        addressOf(cString("")),
        -1,
        addressOf(cString("")),
        MOVE_MOUNT.SET_GROUP | MOVE_MOUNT.F_EMPTY_PATH | MOVE_MOUNT.T_EMPTY_PATH,
      ) === -errno.EBADF,
  },
  {
    name: "openat2",
    description: "openat2(2)",
    category: "extra",
    probe: () => sys(NR.openat2, -100, 0, 0, 0) !== -errno.ENOSYS,
  },
  {
    name: "get_rseq_conf",
    description: "PTRACE_GET_RSEQ_CONFIGURATION reads a task's rseq area",
    category: "extra",
    probe: () => probePtrace((pid) => (ptraceGetRseq(pid), true)),
  },
  {
    name: "ipv6_freebind",
    description: "IPV6_FREEBIND (binds to addresses not on this machine) dumped and restored",
    category: "extra",
    probe: () => hasSockopt(10, /* AF_INET6 */ 41, /* SOL_IPV6 */ 78 /* IPV6_FREEBIND */),
  },
  {
    name: "pagemap_scan",
    description: "PAGEMAP_SCAN ioctl (dirty tracking without soft-dirty)",
    category: "extra",
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
  notOurs("timer_cr_ids", "POSIX timers made with given ids", "timer ids are restored in order"),
  notOurs("overlayfs_maps", "overlayfs mappings", NS),
  notOurs("breakpoints", "hardware breakpoints", "debug registers are not dumped yet"),
  {
    name: "pagemap_scan_guard_pages",
    description: "guard regions (MADV_GUARD_INSTALL) found with PAGEMAP_SCAN",
    category: "extra",
    probe: () => {
      const fd = open("/proc/self/pagemap", O.RDONLY | O.CLOEXEC);
      try {
        return typeof pagemapScan(fd, 0x10000n, 0x11000n, PAGE_IS.GUARD) !== "number";
      } finally {
        close(fd);
      }
    },
  },
];

/** Every feature `criu check` knows: the required checks, then CRIU's named features. */
export const FEATURES: Feature[] = [...REQUIRED, ...NAMED];

function ptrOf(a: Int32Array): bigint {
  const p = Deno.UnsafePointer.of(a as Int32Array<ArrayBuffer>);
  return p === null ? 0n : BigInt(Deno.UnsafePointer.value(p));
}

/** Result of one probe. */
export interface CheckResult {
  feature: Feature;
  supported: boolean;
}

/** The feature named `name`, or an error naming it. */
export function featureNamed(name: string): Feature {
  const f = FEATURES.find((x) => x.name === name);
  if (!f) throw new Error(`Unknown feature ${name}`);
  return f;
}

/** Probes `features` (a feature deno-criu does not use is unsupported, unprobed). */
export async function checkFeatures(features: Feature[]): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const feature of features) {
    let supported = false;
    if (!feature.notOurs) {
      try {
        supported = await feature.probe();
      } catch {
        supported = false;
      }
    }
    out.push({ feature, supported });
  }
  return out;
}
