/**
 * The network lock: while a tree's TCP connections are checkpointed and until they are
 * restored, their packets are dropped in both directions, so that the peer sees neither a
 * reset (the dumped socket is gone) nor an acknowledgement for bytes the images do not hold.
 * The peer retransmits; the restored socket takes the bytes once the lock is gone.
 *
 * Methods, as `criu --network-lock` names them:
 * - `nftables`: one table `inet CRIU-<root pid>` with input and output chains dropping the
 *   connections kept in two sets; unlocking deletes the table.
 * - `iptables`: two rules per connection in INPUT and OUTPUT (ip6tables for IPv6), put in
 *   and taken out by one iptables-restore run.
 * - `skip`: nothing (the caller locks the network itself).
 *
 * Both let through packets with LOCK_BYPASS_MARK (the FIN a restore forges for a half-closed
 * connection). The command-line tools do the work (nft, iptables-restore), one run for all the
 * connections of a process.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { AF_INET6 } from "../syscalls/socket.ts";
import { addrText, type Connection, connectionText } from "./addr.ts";
import { LOCK_BYPASS_MARK } from "./tcp_segment.ts";

import type { LockMethod } from "./lock_methods.ts";
export { DEFAULT_LOCK_METHOD, LOCK_METHODS, type LockMethod } from "./lock_methods.ts";

/** Locking or unlocking the network failed. */
export class NetworkLockError extends Error {
  /** An error with `message`, which names the tool and what it was doing. */
  constructor(message: string) {
    super(message);
    this.name = "NetworkLockError";
  }
}

/**
 * Runs `tool` to its end, in the network namespace of task `netns` when given (nsenter); a
 * missing tool is a NetworkLockError naming it.
 */
function runTool(tool: string, args: string[], netns?: number): { ok: boolean; err: string } {
  const [cmd, ...argv] = netns === undefined
    ? [tool, ...args]
    : nsenterArgv(netns, [tool, ...args]);
  try {
    const out = new Deno.Command(cmd, {
      args: argv,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    return { ok: out.success, err: new TextDecoder().decode(out.stderr).trim() };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new NetworkLockError(
        `Cannot lock the network: ${tool} is not installed (install it, or choose another ` +
          `method with --network-lock)`,
      );
    }
    throw e;
  }
}

/** `argv` (its tool by absolute path) run in the network namespace of task `pid`, by nsenter. */
export function nsenterArgv(pid: number, argv: string[]): string[] {
  return [toolPath("nsenter"), "-t", `${pid}`, "-n", "--", toolPath(argv[0]), ...argv.slice(1)];
}

/**
 * The absolute path of `tool` on PATH (the tool's name under /usr/sbin when it is not found; a
 * path given already, as it is).
 */
export function toolPath(tool: string): string {
  if (tool.startsWith("/")) return tool;
  for (const dir of (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${tool}`).isFile) return `${dir}/${tool}`;
    } catch {
      // not there
    }
  }
  return `/usr/sbin/${tool}`;
}

/** The lock of one tree's connections. */
export class NetworkLock {
  readonly method: LockMethod;
  readonly table: string;
  readonly #log: Logger;
  #tableMade = false;
  readonly #locked: Connection[] = [];
  /** A task in the network namespace the connections live in, when not criu's. */
  readonly #netns?: number;

  /**
   * The lock of the connections of the tree rooted at `rootPid`; in the network namespace of
   * task `netns` when given (a tree's own), else criu's.
   */
  constructor(method: LockMethod, rootPid: number, log: Logger, netns?: number) {
    this.method = method;
    this.table = `CRIU-${rootPid}`;
    this.#log = log;
    this.#netns = netns;
  }

  /** Connections locked by this object. */
  get locked(): readonly Connection[] {
    return this.#locked;
  }

  /** Records `c` as locked by an earlier run (the dump), for `unlock`. */
  adopt(c: Connection): void {
    if (this.method !== "skip") this.#locked.push(c);
  }

  /** Drops the packets of `conns` from now on, all in one go. */
  lockAll(conns: readonly Connection[]): void {
    if (this.method === "skip" || !conns.length) return;
    if (this.method === "nftables") this.#nftLock(conns);
    else this.#iptables("-I", conns);
    this.#locked.push(...conns);
    for (const c of conns) {
      this.#log.info(`Network locked for ${connectionText(c)} (${this.method})`);
    }
  }

  #nftLock(conns: readonly Connection[]): void {
    const t = `inet ${this.table}`;
    const lines: string[] = [];
    if (!this.#tableMade) {
      const m = `0x${LOCK_BYPASS_MARK.toString(16)}`;
      lines.push(
        `add table ${t}`,
        `add chain ${t} output { type filter hook output priority 0; policy accept; }`,
        `add chain ${t} input { type filter hook input priority 0; policy accept; }`,
        `add set ${t} conns4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }`,
        `add set ${t} conns6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }`,
        `add rule ${t} output meta mark ${m} accept`,
        `add rule ${t} output ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop`,
        `add rule ${t} output ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop`,
        `add rule ${t} input meta mark ${m} accept`,
        `add rule ${t} input ip daddr . tcp dport . ip saddr . tcp sport @conns4 drop`,
        `add rule ${t} input ip6 daddr . tcp dport . ip6 saddr . tcp sport @conns6 drop`,
      );
    }
    for (const c of conns) {
      const set = c.family === AF_INET6 ? "conns6" : "conns4";
      const src = addrText(c.family, c.srcAddr), dst = addrText(c.family, c.dstAddr);
      lines.push(`add element ${t} ${set} { ${src} . ${c.srcPort} . ${dst} . ${c.dstPort} }`);
    }
    // One run, one transaction: every connection is locked at once, or none is.
    const r = runTool("nft", [lines.join("\n")], this.#netns);
    if (!r.ok) {
      throw new NetworkLockError(
        `Cannot lock the network for ${connectionText(conns[0])}${
          conns.length > 1 ? ` and ${conns.length - 1} more connections` : ""
        } with nft: ${r.err}`,
      );
    }
    this.#tableMade = true;
  }

  /** The iptables-restore input that inserts (-I) or deletes (-D) the rules of `conns`. */
  static #iptablesRules(op: "-I" | "-D", conns: readonly Connection[]): string {
    // The mark match before the ports, as criu writes its rules: a rule is deleted only by the
    // same matches in the same order, so each removes the other's lock.
    const p = `-p tcp -m mark ! --mark 0x${LOCK_BYPASS_MARK.toString(16)}`;
    const lines = ["*filter"];
    for (const c of conns) {
      const src = addrText(c.family, c.srcAddr), dst = addrText(c.family, c.dstAddr);
      lines.push(
        `${op} OUTPUT ${p} -s ${src} --sport ${c.srcPort} -d ${dst} --dport ${c.dstPort} -j DROP`,
        `${op} INPUT ${p} -s ${dst} --sport ${c.dstPort} -d ${src} --dport ${c.srcPort} -j DROP`,
      );
    }
    lines.push("COMMIT", "");
    return lines.join("\n");
  }

  /** `conns` split by family, with the iptables-restore tool of each. */
  static #byFamily(conns: readonly Connection[]): { tool: string; conns: Connection[] }[] {
    return [false, true].map((v6) => ({
      tool: v6 ? "ip6tables-restore" : "iptables-restore",
      conns: conns.filter((c) => (c.family === AF_INET6) === v6),
    })).filter((g) => g.conns.length);
  }

  /**
   * Inserts (-I) or deletes (-D) the two rules of each of `conns`, with one iptables-restore
   * (ip6tables-restore) run per family. Returns whether every run succeeded.
   */
  #iptables(op: "-I" | "-D", conns: readonly Connection[]): boolean {
    let ok = true;
    for (const { tool, conns: mine } of NetworkLock.#byFamily(conns)) {
      const file = Deno.makeTempFileSync({ prefix: "criu-netlock-" });
      try {
        Deno.writeTextFileSync(file, NetworkLock.#iptablesRules(op, mine));
        const r = runTool(tool, ["-w", "--noflush", file], this.#netns);
        if (!r.ok && op === "-I") {
          throw new NetworkLockError(
            `Cannot lock the network for ${connectionText(mine[0])}${
              mine.length > 1 ? ` and ${mine.length - 1} more connections` : ""
            } with ${tool}: ${r.err}`,
          );
        }
        ok &&= r.ok;
      } finally {
        Deno.removeSync(file);
      }
    }
    return ok;
  }

  /**
   * The commands that would remove the lock {@link lockAll} is about to put on `conns`, for a
   * guard to run should criu die (dump/guard.ts). Tools are given by absolute path.
   */
  undoCommands(conns: readonly Connection[]): { argv: string[]; input?: string }[] {
    const netns = this.#netns;
    return this.#undoCommands(conns).map((c) =>
      netns === undefined ? c : { ...c, argv: nsenterArgv(netns, c.argv) }
    );
  }

  #undoCommands(conns: readonly Connection[]): { argv: string[]; input?: string }[] {
    if (this.method === "skip" || !conns.length) return [];
    if (this.method === "nftables") {
      if (this.#undoRecorded) return [];
      this.#undoRecorded = true;
      return [{ argv: [toolPath("nft"), "delete", "table", "inet", this.table] }];
    }
    return NetworkLock.#byFamily(conns).map(({ tool, conns: mine }) => ({
      argv: [toolPath(tool), "-w", "--noflush"],
      input: NetworkLock.#iptablesRules("-D", mine),
    }));
  }
  #undoRecorded = false;

  /**
   * Removes the lock of this tree: the nftables table, or the iptables rules of the
   * connections locked or adopted. Never throws; problems are logged.
   */
  unlock(): void {
    const conns = this.#locked;
    if (!conns.length && !this.#tableMade) return;
    try {
      if (this.method === "nftables") {
        const r = runTool("nft", ["delete", "table", "inet", this.table], this.#netns);
        if (!r.ok && !/No such file/.test(r.err)) {
          this.#log.error(`Cannot remove the network lock table ${this.table}: ${r.err}`);
        } else if (r.ok) this.#log.info(`Network unlocked (table ${this.table} removed)`);
      } else if (this.method === "iptables") {
        // One missing rule fails a whole batch: then each connection on its own.
        if (!this.#iptables("-D", conns)) { for (const c of conns) this.#iptables("-D", [c]); }
        this.#log.info(`Network unlocked (${conns.length} connections)`);
      }
    } catch (e) {
      this.#log.error(`Cannot remove the network lock: ${(e as Error).message}`);
    }
    this.#locked.length = 0;
    this.#tableMade = false;
  }
}
