/**
 * Open /dev/net/tun files of the tree (net/tun.ts has the devices): which device each is
 * attached to, as its fdinfo and TUNGETIFF show, and the images criu writes for one (a
 * regular-file entry of /dev/net/tun with its open flags, and a tunfile_entry of the same id).
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { fd_types, file_entrySchema, tunfile_entrySchema } from "../../proto/gen/files_pb.ts";
import { close, IFF_TUN, tunFileNetns, tunGetIff, withTaskFd } from "../syscalls/mod.ts";
import type { TunHolder } from "../net/tun.ts";
import { nsLink, parseFdinfo, readProcText } from "../tree/proc.ts";
import type { DumpContext } from "./context.ts";
import { type FileKind, type OpenFile, UnsupportedError } from "./file_types.ts";
import { regFileEntry, writeRegFile } from "./files.ts";

/** The device number of /dev/net/tun (misc 10:200), as stat gives it. */
export const TUN_RDEV = (10 << 8) | 200;

/** The device tun file `fd` of task `pid` is attached to, from its fdinfo ("" for none). */
function attachedTo(pid: number, fd: number): string {
  return parseFdinfo(readProcText(pid, `fdinfo/${fd}`)).extra.get("iff") ?? "";
}

/** The tree's descriptors attached to tun devices, by device (the first found for each). */
export function tunHolders(pids: number[]): Map<string, TunHolder> {
  const out = new Map<string, TunHolder>();
  for (const pid of pids) {
    for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
      const fd = Number(e.name);
      let target;
      try {
        target = Deno.readLinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue; // a zombie's, or closed
      }
      if (target !== "/dev/net/tun") continue;
      const name = attachedTo(pid, fd);
      if (name && !out.has(name)) out.set(name, { pid, fd });
    }
  }
  return out;
}

/**
 * Tun file `fd` of task `pid` (/dev/net/tun at `path`): opened in the tree's network namespace,
 * attached to a device of its own namespace (the device is carried with it) or to none.
 */
export function tunKind(
  pid: number,
  fd: number,
  path: string,
  mode: number,
  what: string,
): FileKind {
  const netdev = attachedTo(pid, fd);
  const treeNet = Deno.statSync(`/proc/${pid}/ns/net`).ino;
  const { detached, sameNs } = withTaskFd(pid, fd, (copy) => {
    const ns = tunFileNetns(copy, what);
    try {
      return {
        sameNs: Deno.statSync(`/proc/self/fd/${ns}`).ino === treeNet,
        detached: !!((tunGetIff(copy, what)?.flags ?? 0) & IFF_TUN.DETACH_QUEUE),
      };
    } finally {
      close(ns);
    }
  });
  if (!sameNs) {
    throw new UnsupportedError(
      `Cannot dump ${what}: a tun file opened in another network namespace than its task's; ` +
        `not supported`,
    );
  }
  // (The devices of the tree's namespaces are carried: its root's own and those nested.)
  if (netdev && nsLink(pid, "net") === nsLink(Deno.pid, "net")) {
    throw new UnsupportedError(
      `Cannot dump ${what}: it is attached to tun device ${netdev} of criu's network ` +
        `namespace; only the devices of a network namespace of the tree's own are carried`,
    );
  }
  return { type: "tun", path, mode, netdev: netdev || undefined, detached };
}

/** Writes the files.img entries of tun file `file`: /dev/net/tun, then the tunfile. */
export function writeTunFile(
  ctx: DumpContext,
  files: ReturnType<DumpContext["image"]>,
  file: OpenFile & { kind: { type: "tun" } },
): void {
  const k = file.kind;
  writeRegFile(
    files,
    regFileEntry(file.id, k.path, {
      flags: file.flags,
      pos: file.pos,
      mode: k.mode,
      mntId: ctx.mntNs ? file.mntId : undefined,
      fown: file.fown,
    }),
  );
  files.entry(
    file_entrySchema,
    create(file_entrySchema, {
      type: fd_types.TUNF,
      id: file.id,
      tunf: create(tunfile_entrySchema, {
        id: file.id,
        netdev: k.netdev,
        detached: k.detached || undefined,
        nsId: ctx.nsIds(file.owner.pid).netNsId,
      }),
    }),
  );
}
