/**
 * The lock of a whole network namespace, as criu takes it for a tree with one of its own:
 * every packet in or out is dropped but those carrying criu's mark (0xC114), from before its
 * connections are read until they are restored. Made as criu makes it, so that either can take
 * away the other's:
 * - nftables: table `inet CRIU-<root>` whose input and output chains drop by policy and accept
 *   the mark;
 * - iptables: chain CRIU (ip and ip6), jumped to first from INPUT and OUTPUT, accepting the mark
 *   and dropping the rest.
 * The tools run inside the namespace (nsenter with a task in it).
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { LockMethod } from "./netlock.ts";
import { inNetns } from "./in_netns.ts";
import { LOCK_BYPASS_MARK } from "./tcp_segment.ts";

const MARK = `0x${LOCK_BYPASS_MARK.toString(16)}`;

/** The iptables-restore input that locks (or, with `unlock`, unlocks) a namespace. */
function iptablesRules(unlock: boolean): string[] {
  return unlock
    ? [
      "*filter\n:CRIU - [0:0]\n-D INPUT -j CRIU\n-D OUTPUT -j CRIU\nCOMMIT\n",
      "*filter\n:CRIU - [0:0]\n-X CRIU\nCOMMIT\n",
    ]
    : [
      `*filter\n:CRIU - [0:0]\n-I INPUT -j CRIU\n-I OUTPUT -j CRIU\n` +
      `-A CRIU -m mark --mark ${MARK} -j ACCEPT\n-A CRIU -j DROP\nCOMMIT\n`,
    ];
}

/** How to lock or unlock a namespace: tools to run in it, with their stdin. */
export interface NetnsLockStep {
  argv: string[];
  input?: string;
}

/**
 * The steps that lock (or unlock) the network namespace of a tree whose root is `root` in the
 * images, by `method` (none for `skip`).
 */
export function netnsLockSteps(method: LockMethod, root: number, unlock: boolean): NetnsLockStep[] {
  if (method === "skip") return [];
  if (method === "nftables") {
    const t = `inet CRIU-${root}`;
    return unlock ? [{ argv: ["nft", "delete", "table", ...t.split(" ")] }] : [{
      argv: [
        "nft",
        [
          `add table ${t}`,
          `add chain ${t} output { type filter hook output priority 0; policy drop; }`,
          `add rule ${t} output meta mark ${MARK} accept`,
          `add chain ${t} input { type filter hook input priority 0; policy drop; }`,
          `add rule ${t} input meta mark ${MARK} accept`,
        ].join("\n"),
      ],
    }];
  }
  return ["iptables-restore", "ip6tables-restore"].flatMap((tool) =>
    iptablesRules(unlock).map((input) => ({ argv: [tool, "-w", "--noflush"], input }))
  );
}

/** Runs `steps` in the network namespace of task `pid`. */
async function run(pid: number, steps: NetnsLockStep[], onError?: (e: Error) => void) {
  for (const s of steps) {
    const input = s.input ? new TextEncoder().encode(s.input) : undefined;
    await inNetns(pid, s.argv, input).catch((e) => {
      if (!onError) throw e;
      onError(e);
    });
  }
}

/** Locks the network namespace of task `pid`, for the tree whose root is `root` in the images. */
export async function lockNetns(pid: number, method: LockMethod, root: number): Promise<void> {
  await run(pid, netnsLockSteps(method, root, false));
}

/** Takes the lock of {@link lockNetns} away; never throws (`log` hears what failed). */
export async function unlockNetns(
  pid: number,
  method: LockMethod,
  root: number,
  log: Logger,
): Promise<void> {
  await run(
    pid,
    netnsLockSteps(method, root, true),
    (e) => log.error(`Cannot unlock the network namespace: ${e.message}`),
  );
}
