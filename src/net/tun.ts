/**
 * tun and tap devices of the tree's network namespace, as criu carries them: the device in
 * netdev-ID.img with a tun_link_entry (its flags, owner, group, virtio header size and socket
 * buffer), and each open /dev/net/tun file as a tunfile_entry naming the device it is attached
 * to (files.img, beside a regular-file entry of /dev/net/tun with its open flags).
 *
 * A device is made again through a tun file opened in the namespace (ns_sockets.ts), at its index
 * (TUNSETIFINDEX): the first of the tree's files attached to it, so that it has a carrier before
 * it comes up, as it had; a device no file holds is made persistent.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { type tun_link_entry, tun_link_entrySchema } from "../../proto/gen/misc_pb.ts";
import { fd_types, type file_entry } from "../../proto/gen/files_pb.ts";
import {
  close,
  Errno,
  IFF_TUN,
  tunFilterLength,
  tunGetBuffers,
  tunSetBuffers,
  tunSetIff,
  tunSetIfindex,
  tunSetOwner,
  tunSetPersist,
  tunSetQueue,
  withTaskFd,
} from "../syscalls/mod.ts";
import { inNetns, NetnsError } from "./in_netns.ts";
import { netTunFile } from "./ns_sockets.ts";

/** A descriptor of the tree attached to a tun device. */
export interface TunHolder {
  pid: number;
  fd: number;
}

/**
 * The tun_link_entry of each of the tun devices `names` of task `pid`'s namespace: flags, owner
 * and group from its sysfs (mounted in a mount namespace of its own, inside the network
 * namespace), buffers from a descriptor of the tree attached to it (`holders`), or, for a
 * persistent device no file holds, from one attached for the time of the reading (only while
 * it is down: up, it would get a carrier, and with it addresses). Refuses a device no file of
 * the tree holds that is not persistent or is up, and a tap with a socket filter (its program
 * is in the memory of whoever set it). `up` names the devices that are up.
 */
export async function readTunLinks(
  pid: number,
  names: string[],
  holders: Map<string, TunHolder>,
  up: ReadonlySet<string>,
): Promise<Map<string, tun_link_entry>> {
  const out = new Map<string, tun_link_entry>();
  if (!names.length) return out;
  const text = new TextDecoder().decode(
    await inNetns(pid, [
      "unshare",
      "-m",
      "--",
      "sh",
      "-c",
      'mount -t sysfs sysfs /sys && for n; do d=/sys/class/net/$n; echo "$(cat $d/tun_flags) ' +
      '$(cat $d/owner) $(cat $d/group)"; done',
      "sh",
      ...names,
    ]),
  ).trim().split("\n");
  names.forEach((name, i) => {
    const [flags, owner, group] = (text[i] ?? "").split(" ").map(Number);
    if ([flags, owner, group].some((n) => !Number.isFinite(n))) {
      throw new NetnsError(`Cannot read the tun flags of device ${name}`);
    }
    const what = `tun device ${name}`;
    const read = (fd: number) => {
      if (flags & IFF_TUN.TAP && tunFilterLength(fd, what) !== 0) {
        throw new NetnsError(
          `Cannot dump ${what}: a tap with a socket filter (its program is in the memory of ` +
            `whoever set it); not supported`,
        );
      }
      return tunGetBuffers(fd, what);
    };
    const holder = holders.get(name);
    let buffers;
    if (holder) {
      buffers = withTaskFd(holder.pid, holder.fd, read);
    } else if (flags & IFF_TUN.PERSIST && up.has(name)) {
      throw new NetnsError(
        `Cannot dump ${what}: it is up with no file attached, and reading its buffers would ` +
          `attach one (its carrier, then its addresses, would come); not supported`,
      );
    } else if (flags & IFF_TUN.PERSIST) {
      let fd = -1;
      try {
        fd = netTunFile();
        tunSetIff(fd, name, flags, what);
        buffers = read(fd);
      } catch (e) {
        if (e instanceof Errno) throw new NetnsError(`Cannot dump ${what}: ${e.message}`);
        throw e;
      } finally {
        if (fd >= 0) close(fd);
      }
    } else {
      throw new NetnsError(
        `Cannot dump ${what}: it is not persistent, and no file of the tree is attached to it ` +
          `(a process outside the tree holds it)`,
      );
    }
    out.set(name, create(tun_link_entrySchema, { flags, owner, group, ...buffers }));
  });
  return out;
}

/** The first tun file of the tree attached to a device, which makes it at restore. */
export interface TunMaker {
  /** Its file id. */
  id: number;
  detached: boolean;
}

/** The file that makes each tun device, by device: the first attached one (else a detached). */
export function tunMakers(files: Iterable<file_entry>): Map<string, TunMaker> {
  const out = new Map<string, TunMaker>();
  for (const f of files) {
    const t = f.type === fd_types.TUNF ? f.tunf : undefined;
    if (!t?.netdev) continue;
    const had = out.get(t.netdev);
    if (!had || (had.detached && !t.detached)) {
      out.set(t.netdev, { id: f.id, detached: t.detached ?? false });
    }
  }
  return out;
}

/**
 * Makes tun device `name` in the namespace sockets are made in now, at index `index`, with its
 * flags, owner, group and buffers, through the tree's file `maker` attached to it: returned,
 * attached (its queue detached if it was), as the device comes up with a carrier as it did. A
 * device no file holds is made persistent.
 */
export function makeTunDevice(
  name: string,
  index: number,
  tun: tun_link_entry,
  maker: TunMaker | undefined,
): number | undefined {
  const what = `tun device ${name}`;
  let fd = -1;
  try {
    fd = netTunFile();
    tunSetIfindex(fd, index, what);
    tunSetIff(fd, name, tun.flags, what);
    tunSetOwner(fd, tun.owner, tun.group, what);
    tunSetBuffers(fd, tun.sndbuf, tun.vnethdr, what);
    if (tun.flags & IFF_TUN.PERSIST || !maker) tunSetPersist(fd, true, what);
    if (maker?.detached) tunSetQueue(fd, IFF_TUN.DETACH_QUEUE, what);
    if (maker) {
      const made = fd;
      fd = -1;
      return made;
    }
    return undefined;
  } catch (e) {
    if (e instanceof Errno) throw new NetnsError(`Cannot restore ${what}: ${e.message}`);
    throw e;
  } finally {
    if (fd >= 0) close(fd);
  }
}

/**
 * A tun file as the tree had it (but the one that made its device): attached to device
 * `netdev` (made with `tun`), its queue detached, or attached to none.
 */
export function openTunFile(
  netdev: string | undefined,
  tun: tun_link_entry | undefined,
  detached: boolean,
  what: string,
): number {
  const fd = netTunFile();
  try {
    if (netdev !== undefined) {
      if (!tun) {
        throw new NetnsError(`Cannot restore ${what}: tun device ${netdev} is not in the images`);
      }
      tunSetIff(fd, netdev, tun.flags, what);
      if (detached) tunSetQueue(fd, IFF_TUN.DETACH_QUEUE, what);
    }
    return fd;
  } catch (e) {
    close(fd);
    throw e;
  }
}
