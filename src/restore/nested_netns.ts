/**
 * Network namespaces nested in the tree's, at restore, made as criu makes them: before any
 * task but the root exists, the root makes each in turn (unshare), criu makes it what its
 * images say (net/netns.ts), as for the root's own, and starts its socket helper in it
 * (net/ns_sockets.ts), then the root goes back to its own. Every socket is made in its
 * namespace, and every task is put in its own (setns on a descriptor of it criu sends) before
 * its files.
 *
 * @module
 */
import {
  type file_entry,
  inet_sk_entrySchema,
  netlink_sk_entrySchema,
  packet_sock_entrySchema,
  tunfile_entrySchema,
  unix_sk_entrySchema,
} from "../../proto/gen/files_pb.ts";
import { type DescMessage, isFieldSet } from "../images/protobuf.ts";
import { task_kobj_ids_entrySchema } from "../../proto/gen/core_pb.ts";
import { NetnsError } from "../net/in_netns.ts";
import {
  mapPingGroups,
  type NetnsState,
  type OutsideLinks,
  restoreNetns,
  type VethsAcross,
} from "../net/netns.ts";
import { NamespaceSockets, withSocketsIn } from "../net/ns_sockets.ts";
import { tunMakers } from "../net/tun.ts";
import { type InetSocketState, isClosedConnection, isTcpConnection } from "../net/inet.ts";
import type { LockMethod } from "../net/netlock.ts";
import { lockNetns, unlockNetns } from "../net/netns_lock.ts";
import type { Logger } from "../log.ts";
import { close, errnoName, NR, O, open } from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { rootOf } from "../tree/userns.ts";
import { inetState, RestoreError } from "./files.ts";
import { sendFd } from "./install.ts";
import { type DumpImages, outsideGid, type TaskImages } from "./images.ts";

const CLONE_NEWNET = 0x40000000;

/** The network namespaces of one restore: a descriptor of each, and the nested ones' helpers. */
export class NetNamespaces implements Disposable {
  readonly #dump: DumpImages;
  /** A descriptor of each namespace made so far (the root's included), by namespace id. */
  readonly #fds = new Map<number, number>();
  /** The socket helper of each nested namespace, by namespace id. */
  readonly #sockets = new Map<number, NamespaceSockets>();
  /** The ids a socket of the root's namespace may carry: the root's, and criu's. */
  readonly #rootIds = new Set<number>();
  readonly #rootId?: number;
  /** Tun files that made the nested namespaces' tun devices, by file id, until taken. */
  readonly #madeTun = new Map<number, number>();

  constructor(dump: DumpImages) {
    this.#dump = dump;
    const root = dump.tasks[0];
    if (!root.zombie && isFieldSet(root.ids, task_kobj_ids_entrySchema.field.netNsId)) {
      this.#rootId = root.ids.netNsId;
      this.#rootIds.add(root.ids.netNsId);
    }
    const criu = dump.inventory.rootIds;
    if (criu && isFieldSet(criu, task_kobj_ids_entrySchema.field.netNsId)) {
      this.#rootIds.add(criu.netNsId);
    }
  }

  /**
   * Makes every nested namespace, empty, through the root task, `realRoot` as criu knows it,
   * alone yet (`inRoot` runs remote calls in it), which ends in its own namespace again; each
   * gets its socket helper, which stays in it. Then the root's is made ({@link across} for a
   * veth into one of them), then {@link fill} makes them what their images say.
   */
  create(realRoot: number, inRoot: (fn: (rs: RemoteSyscalls) => void) => void): void {
    if (!this.#dump.nestedNets.size || this.#rootId === undefined) return;
    const nsPath = `/proc/${realRoot}/ns/net`;
    const own = Deno.readLinkSync(nsPath);
    this.#fds.set(this.#rootId, open(nsPath, O.RDONLY | O.CLOEXEC));
    const userns = this.#dump.userns;
    for (const id of this.#dump.nestedNets.keys()) {
      inRoot((rs) => rs.check(NR.unshare, "unshare(CLONE_NEWNET)", CLONE_NEWNET));
      this.#fds.set(id, open(nsPath, O.RDONLY | O.CLOEXEC));
      this.#sockets.set(id, NamespaceSockets.enter(realRoot, userns && rootOf(userns)));
    }
    inRoot((rs) => this.#join(rs, this.#rootId!, "the root"));
    if (Deno.readLinkSync(nsPath) !== own) {
      throw new RestoreError(`The root task ${realRoot} did not get back its network namespace`);
    }
  }

  /**
   * What makes a veth pair between two of the tree's namespaces: tasks in each (the root,
   * `realRoot`, in its own; the helpers in the nested ones).
   */
  across(realRoot: number): VethsAcross {
    this.#across ??= {
      pidOf: (id) => id === this.#rootId ? realRoot : this.#sockets.get(id)?.pid,
      devicesOf: (id) => this.devicesOf(id),
      made: new Set(),
    };
    return this.#across;
  }
  #across?: VethsAcross;

  /**
   * Makes each nested namespace what its images say (after the root's), its tun devices
   * through its tun files, opened in it; `outside` names the ends of veths outside the tree.
   */
  async fill(realRoot: number, outside?: OutsideLinks): Promise<void> {
    const userns = this.#dump.userns;
    for (const [id, images] of this.#dump.nestedNets) {
      const sockets = this.#sockets.get(id)!;
      if (userns) {
        const ping = "net.ipv4.ping_group_range";
        mapPingGroups(images, (g) => outsideGid(this.#dump, g, ping));
      }
      const makers = tunMakers(
        [...this.#dump.files.values()].filter((f) => f.tunf && socketNsId(f) === id),
      );
      try {
        const made = await withSocketsIn(
          sockets,
          () => restoreNetns(sockets.pid, images, outside, makers, this.across(realRoot)),
        );
        for (const [file, fd] of made) this.#madeTun.set(file, fd);
      } catch (e) {
        if (e instanceof NetnsError) throw new RestoreError(e.message);
        throw e;
      }
    }
  }

  /** The tun files that made the nested namespaces' tun devices, by file id: the caller's now. */
  takeTunFiles(): Map<number, number> {
    const out = new Map(this.#madeTun);
    this.#madeTun.clear();
    return out;
  }

  /**
   * Locks each nested namespace whose TCP connections come back, as the root's own is locked
   * (`vroot`: the root's id in the images, which names the lock): none of them may speak before
   * both its ends are back.
   */
  async lock(method: LockMethod, vroot: number): Promise<void> {
    for (const id of this.#dump.nestedNets.keys()) {
      if (!tcpConnections(this.#dump, id).length) continue;
      const pid = this.#sockets.get(id)!.pid;
      this.#locked.push(pid);
      await lockNetns(pid, method, vroot);
    }
  }

  /** Takes away the locks of {@link lock}; never throws (`log` hears what failed). */
  async unlock(method: LockMethod, vroot: number, log: Logger): Promise<void> {
    for (const pid of this.#locked.splice(0)) await unlockNetns(pid, method, vroot, log);
  }

  /** The helpers of the nested namespaces {@link lock} locked. */
  readonly #locked: number[] = [];

  /** A path that opens nested network namespace `id`, made by now (undefined: not one). */
  nsPath(id: number): string | undefined {
    const fd = this.#dump.nestedNets.has(id) ? this.#fds.get(id) : undefined;
    return fd === undefined ? undefined : `/proc/self/fd/${fd}`;
  }

  /** The devices of network namespace `id` (the root's, or a nested one's). */
  devicesOf(id: number | undefined): NetnsState["devices"] | undefined {
    const nested = id === undefined ? undefined : this.#dump.nestedNets.get(id);
    return (nested ?? this.#dump.netns)?.devices;
  }

  /**
   * Puts task `task` (of `rs`, just made, in the namespace `now` its parent is in) into its
   * own.
   */
  enter(rs: RemoteSyscalls, task: TaskImages, now: number): void {
    if (!isFieldSet(task.ids, task_kobj_ids_entrySchema.field.netNsId)) return;
    if (task.ids.netNsId === now) return;
    this.#join(rs, task.ids.netNsId, `task ${task.pstree.pid}`);
  }

  #join(rs: RemoteSyscalls, id: number, who: string): void {
    const fd = this.#fds.get(id);
    if (fd === undefined) {
      throw new RestoreError(`Cannot restore ${who}: its network namespace ${id} has no images`);
    }
    const there = sendFd(rs, fd, `the network namespace of ${who}`);
    const r = rs.call(NR.setns, there, CLONE_NEWNET);
    rs.call(NR.close, there);
    if (r < 0n) {
      throw new RestoreError(
        `Cannot restore the network namespace of ${who} (setns): ${errnoName(Number(-r))}`,
      );
    }
  }

  /**
   * Where socket `f` is made: undefined for the root's namespace, else the helper of its
   * nested one, which must be made by now.
   */
  socketsFor(f: file_entry, what: string): NamespaceSockets | undefined {
    const id = socketNsId(f);
    if (id === undefined || this.#rootIds.has(id)) return undefined;
    const made = this.#sockets.get(id);
    if (made) return made;
    throw new RestoreError(
      this.#dump.nestedNets.has(id)
        ? `Cannot restore ${what}: its network namespace ${id} is not made`
        : `Cannot restore ${what}: it was in network namespace ${id}, which no task was in`,
    );
  }

  [Symbol.dispose](): void {
    for (const s of this.#sockets.values()) s[Symbol.dispose]();
    this.#sockets.clear();
    for (const fd of [...this.#fds.values(), ...this.#madeTun.values()]) close(fd);
    this.#fds.clear();
    this.#madeTun.clear();
  }
}

/**
 * The TCP connections (established or half-closed) in the images, of nested network namespace
 * `id` (undefined: the root's).
 */
export function tcpConnections(dump: DumpImages, id?: number): InetSocketState[] {
  const out: InetSocketState[] = [];
  for (const f of dump.files.values()) {
    if (!f.isk) continue;
    const ns = socketNsId(f);
    if (id === undefined ? dump.nestedNets.has(ns ?? -1) : ns !== id) continue;
    const s = inetState(f.isk);
    // A socket closed after its connection too: criu's dump locks it as one.
    if (isTcpConnection(s) || isClosedConnection(s)) out.push(s);
  }
  return out;
}

/** The network namespace id a socket's or tun file's entry carries, if any. */
export function socketNsId(f: file_entry): number | undefined {
  const set = (e: { nsId: number } | undefined, schema: DescMessage) =>
    e && isFieldSet(e as never, schema.field.nsId) ? e.nsId : undefined;
  return set(f.usk, unix_sk_entrySchema) ?? set(f.isk, inet_sk_entrySchema) ??
    set(f.nlsk, netlink_sk_entrySchema) ?? set(f.psk, packet_sock_entrySchema) ??
    set(f.tunf, tunfile_entrySchema);
}
