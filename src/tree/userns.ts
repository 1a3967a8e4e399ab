/**
 * A user namespace's id maps (/proc/PID/uid_map and gid_map): which ids inside stand for which
 * ids of the namespace above (criu's, the host's). The tree's ids are carried as the tree sees
 * them, as criu carries them; criu, outside, turns them into its own where it acts for the tree
 * (a file's owner, a tar's).
 *
 * @module
 */
import { readProcText } from "./proc.ts";
import { withFsIds } from "../syscalls/mod.ts";

/** A line of an id map: `count` ids from `first` inside are those from `lowerFirst` outside. */
export interface IdExtent {
  first: number;
  lowerFirst: number;
  count: number;
}

/** The ids a user namespace maps, one way and back. */
export class IdMap {
  readonly extents: readonly IdExtent[];

  constructor(extents: readonly IdExtent[]) {
    this.extents = extents;
  }

  /** The map /proc/PID/uid_map (or gid_map) shows: lines "FIRST LOWER_FIRST COUNT". */
  static parse(text: string): IdMap {
    const extents = text.split("\n").filter((l) => l.trim()).map((l) => {
      const [first, lowerFirst, count] = l.trim().split(/\s+/).map(Number);
      return { first, lowerFirst, count };
    });
    return new IdMap(extents);
  }

  /** The id inside that stands for `outside`, or undefined when none does. */
  inside(outside: number): number | undefined {
    const e = this.extents.find((e) => outside >= e.lowerFirst && outside - e.lowerFirst < e.count);
    return e && e.first + (outside - e.lowerFirst);
  }

  /** The id outside that `inside` stands for, or undefined when it is not mapped. */
  outside(inside: number): number | undefined {
    const e = this.extents.find((e) => inside >= e.first && inside - e.first < e.count);
    return e && e.lowerFirst + (inside - e.first);
  }

  /** The map as uid_map takes it. */
  toString(): string {
    return this.extents.map((e) => `${e.first} ${e.lowerFirst} ${e.count}\n`).join("");
  }
}

/** The id maps of a user namespace. */
export interface UserNamespace {
  uid: IdMap;
  gid: IdMap;
}

/** The id maps of the user namespace task `pid` is in, as criu sees them. */
export function readUserNamespace(pid: number): UserNamespace {
  return {
    uid: IdMap.parse(readProcText(pid, "uid_map")),
    gid: IdMap.parse(readProcText(pid, "gid_map")),
  };
}

/** The id no map holds: "unset" (a login uid never written), carried as it is. */
export const NO_ID = 0xffffffff;

/** The id the kernel shows for one a namespace does not map (/proc/sys/kernel/overflowuid). */
export function overflowId(kind: "uid" | "gid"): number {
  return Number(Deno.readTextFileSync(`/proc/sys/kernel/overflow${kind}`).trim());
}

/**
 * `id` turned `way` through `map` (into the namespace, or out of it): itself without a map, and
 * {@link NO_ID} as it is; undefined when the map has none for it.
 */
export function throughMap(
  map: IdMap | undefined,
  id: number,
  way: "inside" | "outside",
): number | undefined {
  return !map || id === NO_ID ? id : map[way](id);
}

/**
 * Runs `fn` (synchronous) making files as the root of user namespace `ns` (its uid and gid 0 as
 * seen outside, else its first ids), or plainly without one: a file system of that namespace
 * takes only files of ids it maps. Owners are given after, as criu sees them.
 */
export function asRootOf<T>(ns: UserNamespace | undefined, fn: () => T): T {
  if (!ns) return fn();
  const root = rootOf(ns);
  return withFsIds(root.uid, root.gid, fn);
}

/** The ids, as seen outside, of the root of `ns` (its uid and gid 0, else its first ids). */
export function rootOf(ns: UserNamespace): { uid: number; gid: number } {
  const first = (m: IdMap) => m.outside(0) ?? m.extents[0].lowerFirst;
  return { uid: first(ns.uid), gid: first(ns.gid) };
}

/**
 * Gives the user namespace task `pid` was made in (with no maps yet) the maps of `ns`: criu,
 * privileged in the namespace above, may write any (and gid_map without denying setgroups).
 */
export function writeIdMaps(pid: number, ns: UserNamespace): void {
  for (const [file, map] of [["uid_map", ns.uid], ["gid_map", ns.gid]] as const) {
    try {
      Deno.writeTextFileSync(`/proc/${pid}/${file}`, map.toString());
    } catch (e) {
      throw new Error(
        `Cannot write /proc/${pid}/${file} (${map.toString().trim().replaceAll("\n", ", ")}): ${
          (e as Error).message
        }`,
      );
    }
  }
}
