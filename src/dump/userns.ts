/**
 * A user namespace of the tree's own: the root's, one level below criu's, owning each other
 * namespace the root has of its own. Its id maps go into userns-ID.img as criu writes them
 * (lower ids as criu sees them); every id of the tree is carried as the tree sees it
 * (DumpContext.uid and gid).
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { uid_gid_extentSchema, userns_entrySchema } from "../../proto/gen/misc_pb.ts";
import { relatedNamespace } from "../syscalls/mod.ts";
import { ownNamespace } from "../tree/proc.ts";
import { type IdMap, readUserNamespace, type UserNamespace } from "../tree/userns.ts";
import { type DumpContext, NS_KINDS } from "./context.ts";
import { UnsupportedError } from "./file_types.ts";

/**
 * The user namespace of root task `root`, checked: refused when it is nested deeper than
 * one level below criu's, or when another namespace of the root's own belongs to another
 * user namespace (made again, it would belong to the new one). Its `tasks` (threads among
 * them) are made at restore by the tasks of the tree, with their ids: that takes a PID
 * namespace of the tree's own (`ownPid`) for more than one, as a task of a user namespace
 * may choose ids only in a PID namespace of that user namespace.
 */
export function readTreeUserns(root: number, tasks: number, ownPid: boolean): UserNamespace {
  if (!ownPid && tasks > 1) {
    throw new UnsupportedError(
      `Cannot dump task ${root}: it has a user namespace of its own but not a PID namespace, ` +
        `and more than one task: those would be made again by tasks of that user namespace, ` +
        `which may not choose their ids in criu's PID namespace`,
    );
  }
  const ino = (path: string) => Number(Deno.statSync(path).ino);
  const own = ino(`/proc/${root}/ns/user`);
  if (relatedNamespace(`/proc/${root}/ns/user`, "parent") !== ino("/proc/self/ns/user")) {
    throw new UnsupportedError(
      `Cannot dump task ${root}: its user namespace is nested in another one than criu's; ` +
        `nested user namespaces are not supported`,
    );
  }
  for (const kind of NS_KINDS) {
    if (kind === "user" || !ownNamespace(root, kind)) continue;
    if (relatedNamespace(`/proc/${root}/ns/${kind}`, "owner") !== own) {
      throw new UnsupportedError(
        `Cannot dump task ${root}: its ${kind} namespace belongs to another user namespace ` +
          `than its own`,
      );
    }
  }
  const ns = readUserNamespace(root);
  if (!ns.uid.extents.length || !ns.gid.extents.length) {
    throw new UnsupportedError(
      `Cannot dump task ${root}: its user namespace has no ${
        ns.uid.extents.length ? "gid" : "uid"
      } map`,
    );
  }
  return ns;
}

/**
 * Lets the root of the tree's user namespace read the images in `dir` too (criu 4.2 reads
 * some from inside it as it restores): each is given that root's group, as criu sees it, and
 * made readable by its group (0640), no one else's.
 */
export function shareImages(dir: string, ns: UserNamespace): void {
  const gid = ns.gid.outside(0);
  if (gid === undefined) return;
  for (const e of Deno.readDirSync(dir)) {
    if (!e.isFile || !e.name.endsWith(".img")) continue;
    Deno.chownSync(`${dir}/${e.name}`, null, gid);
    Deno.chmodSync(`${dir}/${e.name}`, 0o640);
  }
}

/** userns-ID.img. */
export function writeUserns(ctx: DumpContext, id: number, ns: UserNamespace): void {
  const extents = (m: IdMap) => m.extents.map((e) => create(uid_gid_extentSchema, e));
  ctx.image(`userns-${id}.img`, "USERNS").entry(
    userns_entrySchema,
    create(userns_entrySchema, { uidMap: extents(ns.uid), gidMap: extents(ns.gid) }),
  );
}
