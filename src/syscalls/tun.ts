/**
 * The tun/tap driver's ioctls on a /dev/net/tun file (x86_64): attaching to a device by name
 * (struct ifreq), its index, owner, group, persistence, socket buffer, virtio header size,
 * queue detaching, its filter's length and its network namespace.
 *
 * @module
 */
import { Errno, orErrno, unwrap } from "./errno.ts";
import { libc } from "./ffi.ts";
import { ioctl, rawSyscall } from "./process.ts";
import { socketNetns } from "./socket.ts";
import { NR } from "./syscall_numbers.ts";

/** TUNSETIFF flags (and the device's flags, as TUNGETIFF and sysfs tun_flags show them). */
export const IFF_TUN = {
  TUN: 0x1,
  TAP: 0x2,
  NAPI: 0x10,
  NAPI_FRAGS: 0x20,
  MULTI_QUEUE: 0x100,
  ATTACH_QUEUE: 0x200,
  DETACH_QUEUE: 0x400,
  PERSIST: 0x800,
  NO_PI: 0x1000,
  ONE_QUEUE: 0x2000,
  VNET_HDR: 0x4000,
} as const;

const TUNSETIFF = 0x400454ca;
const TUNSETPERSIST = 0x400454cb;
const TUNSETOWNER = 0x400454cc;
const TUNSETGROUP = 0x400454ce;
const TUNGETIFF = 0x800454d2;
const TUNGETSNDBUF = 0x800454d3;
const TUNSETSNDBUF = 0x400454d4;
const TUNGETVNETHDRSZ = 0x800454d7;
const TUNSETVNETHDRSZ = 0x400454d8;
const TUNSETQUEUE = 0x400454d9;
const TUNSETIFINDEX = 0x400454da;
const TUNGETFILTER = 0x801054db;
const TUNGETDEVNETNS = 0x54e3;

/** struct ifreq: a 16-byte name, then the flags (a short) in a 24-byte union. */
const IFREQ_SIZE = 40;

function ifreq(name: string, flags: number): Uint8Array {
  const b = new Uint8Array(IFREQ_SIZE);
  b.set(new TextEncoder().encode(name).subarray(0, 15));
  new DataView(b.buffer).setInt16(16, flags, true);
  return b;
}

function getInt(fd: number, req: number, what: string): number {
  const b = new Uint8Array(4);
  ioctl(fd, req, b, what);
  return new DataView(b.buffer).getInt32(0, true);
}

function setInt(fd: number, req: number, v: number, what: string): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, v, true);
  ioctl(fd, req, b, what);
}

function setValue(fd: number, req: number, v: number, what: string): void {
  unwrap(rawSyscall(NR.ioctl, fd, req, v), `ioctl(0x${req.toString(16)})`, what);
}

/**
 * TUNGETIFF: the device a tun file is attached to and its flags (DETACH_QUEUE for a detached
 * queue); undefined for a file attached to none (EBADFD).
 */
export function tunGetIff(fd: number, what: string): { name: string; flags: number } | undefined {
  const b = new Uint8Array(IFREQ_SIZE);
  const r = orErrno(libc.ioctl(fd, BigInt(TUNGETIFF), b));
  if (r === -77 /* EBADFD */) return undefined;
  if (r < 0) throw new Errno("ioctl(TUNGETIFF)", -r, what);
  const end = b.indexOf(0);
  return {
    name: new TextDecoder().decode(b.subarray(0, end < 0 ? 16 : Math.min(end, 16))),
    flags: new DataView(b.buffer).getUint16(16, true),
  };
}

/** TUNSETIFF: attaches the file to device `name`, made with `flags` when there is none. */
export function tunSetIff(fd: number, name: string, flags: number, what: string): void {
  ioctl(fd, TUNSETIFF, ifreq(name, flags), what);
}

/** TUNSETIFINDEX: the index the device this file makes next gets. */
export function tunSetIfindex(fd: number, index: number, what: string): void {
  setInt(fd, TUNSETIFINDEX, index, what);
}

/** TUNSETQUEUE: detaches (or attaches again) a queue of a multi-queue device. */
export function tunSetQueue(fd: number, flags: number, what: string): void {
  ioctl(fd, TUNSETQUEUE, ifreq("", flags), what);
}

/** TUNSETPERSIST: whether the device outlives its files. */
export function tunSetPersist(fd: number, on: boolean, what: string): void {
  setValue(fd, TUNSETPERSIST, on ? 1 : 0, what);
}

/** TUNSETOWNER and TUNSETGROUP: who may attach to the device besides CAP_NET_ADMIN. */
export function tunSetOwner(fd: number, uid: number, gid: number, what: string): void {
  if (uid !== -1) setValue(fd, TUNSETOWNER, uid, what);
  if (gid !== -1) setValue(fd, TUNSETGROUP, gid, what);
}

/** The device's socket send buffer (TUNGETSNDBUF) and virtio header size (TUNGETVNETHDRSZ). */
export function tunGetBuffers(fd: number, what: string): { sndbuf: number; vnethdr: number } {
  return { sndbuf: getInt(fd, TUNGETSNDBUF, what), vnethdr: getInt(fd, TUNGETVNETHDRSZ, what) };
}

/** TUNSETSNDBUF and TUNSETVNETHDRSZ. */
export function tunSetBuffers(fd: number, sndbuf: number, vnethdr: number, what: string): void {
  setInt(fd, TUNSETSNDBUF, sndbuf, what);
  setInt(fd, TUNSETVNETHDRSZ, vnethdr, what);
}

/** TUNGETFILTER: the length of the tap's socket filter (0: none). */
export function tunFilterLength(fd: number, what: string): number {
  const b = new Uint8Array(16);
  ioctl(fd, TUNGETFILTER, b, what);
  return new DataView(b.buffer).getUint16(0, true);
}

/** TUNGETDEVNETNS: a descriptor of the network namespace the device is in. */
export function tunDeviceNetns(fd: number, what: string): number {
  return Number(unwrap(rawSyscall(NR.ioctl, fd, TUNGETDEVNETNS, 0), "ioctl(TUNGETDEVNETNS)", what));
}

/** SIOCGSKNS on a tun file: a descriptor of the network namespace it was opened in. */
export function tunFileNetns(fd: number, what: string): number {
  return socketNetns(fd, what);
}
