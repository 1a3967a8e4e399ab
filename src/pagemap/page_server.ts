/**
 * criu's page server protocol: pages sent over TCP to a `criu page-server` that writes them
 * into its images directory, instead of into the dump's own.
 *
 * Every message starts with a 32-byte header (u32 command with flags in its upper half, u64
 * page count, u64 address, u64 destination), little-endian:
 * - OPEN2 (destination: the object, its id shifted past an 8-bit kind, 1 a process's pagemap,
 *   2 a shared memory object's): the server opens pagemap-ID.img (or pagemap-shmem-ID.img) and
 *   a pages file, and answers one byte: whether it has parent images of it.
 * - ADD_F (flags: the pagemap entry's, PE_PRESENT followed by the pages' bytes); the older ADD
 *   (present) and HOLE (in the parent) too.
 * - PARENT: the server answers an int32, whether it has parent images of the destination.
 * - CLOSE (or FORCE_CLOSE): the server answers an int32 0 once all is written; the client
 *   then closes, and the server waits for that before it ends.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { pagemap_entrySchema, pagemap_headSchema } from "../../proto/gen/mm_pb.ts";
import { IMAGE_MODE, type ImageWriter } from "../images/image.ts";
import { flaggedEntry, pagemapName, PE_PARENT, PE_PRESENT } from "./pagemap.ts";
import type { ImagesDir } from "../images/images_dir.ts";
import type { Logger } from "../log.ts";
import { close, tryRead, writeAll } from "../syscalls/mod.ts";
import {
  AF_INET,
  AF_INET6,
  connectRaw,
  type InetAddr,
  inetSockaddr,
  setsockopt,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  socket,
} from "../syscalls/socket.ts";

const IPPROTO_TCP = 6, TCP_NODELAY = 1;

/** Commands. */
export const PS = {
  ADD: 1,
  HOLE: 2,
  OPEN: 3,
  OPEN2: 4,
  PARENT: 5,
  ADD_F: 6,
  GET: 7,
  CLOSE: 0x1023,
  FORCE_CLOSE: 0x1024,
} as const;

/** Kinds of destination. */
export const PS_TYPE = { PID: 1, SHMEM: 2 } as const;

/** The header's size. */
const HEADER = 32;

/** A destination: its kind and id (a process's id in the images, or a shmem object's). */
export function destination(kind: number, id: number | bigint): bigint {
  return (BigInt(id) << 8n) | BigInt(kind);
}

/** A message header. */
export function header(
  cmd: number,
  flags: number,
  nrPages: number,
  vaddr: bigint,
  dst: bigint,
): Uint8Array {
  const b = new Uint8Array(HEADER);
  const v = new DataView(b.buffer);
  v.setUint32(0, ((flags << 16) | cmd) >>> 0, true);
  v.setBigUint64(8, BigInt(nrPages), true);
  v.setBigUint64(16, vaddr, true);
  v.setBigUint64(24, dst, true);
  return b;
}

async function send(conn: Deno.Conn, b: Uint8Array): Promise<void> {
  for (let off = 0; off < b.length;) off += await conn.write(b.subarray(off));
}

async function readExact(conn: Deno.Conn, b: Uint8Array, what: string): Promise<boolean> {
  for (let off = 0; off < b.length;) {
    const n = await conn.read(b.subarray(off));
    if (n === null) {
      if (off === 0) return false;
      throw new Error(`The page server connection ended inside ${what}`);
    }
    off += n;
  }
  return true;
}

/** The dump's end: pages sent to a page server (blocking, on criu's own socket). */
export class PageServerClient {
  readonly #fd: number;
  readonly #where: string;

  private constructor(fd: number, where: string) {
    this.#fd = fd;
    this.#where = where;
  }

  /** Connects to the page server at `address` (an IP address; the local host if none), `port`. */
  static connect(address: string | undefined, port: number): PageServerClient {
    const host = !address || address === "localhost" ? "127.0.0.1" : address;
    const where = `${host}:${port}`;
    const addr = parseIp(host);
    if (!addr) throw new Error(`The page server address ${host} is no IP address`);
    const fd = socket(addr.family, SOCK_STREAM | SOCK_CLOEXEC);
    try {
      connectRaw(fd, inetSockaddr({ ...addr, port }), `the page server at ${where}`);
      const one = new Int32Array([1]);
      setsockopt(fd, TCP_NODELAY, new Uint8Array(one.buffer), IPPROTO_TCP);
    } catch (e) {
      close(fd);
      throw new Error(`Cannot connect to the page server at ${where}: ${(e as Error).message}`);
    }
    return new PageServerClient(fd, where);
  }

  #send(b: Uint8Array): void {
    writeAll(this.#fd, b, `the page server at ${this.#where}`);
  }

  #recv(b: Uint8Array, what: string): void {
    for (let off = 0; off < b.length;) {
      const n = tryRead(this.#fd, b.subarray(off));
      if (n === -4) continue; // EINTR
      if (n <= 0) throw new Error(`The page server at ${this.#where} sent no ${what}`);
      off += n;
    }
  }

  /** Opens destination `dst`; whether the server has parent images of it. */
  open(dst: bigint): boolean {
    this.#send(header(PS.OPEN2, 0, 0, 0n, dst));
    const answer = new Uint8Array(1);
    this.#recv(answer, "answer to OPEN2");
    return answer[0] !== 0;
  }

  /** Sends an entry of `dst`: pages at `vaddr` with pagemap `flags` (their bytes follow if present). */
  add(dst: bigint, vaddr: bigint, nrPages: number, flags: number): void {
    this.#send(header(PS.ADD_F, flags, nrPages, vaddr, dst));
  }

  /** Sends pages' bytes (after an add of present pages, in order). */
  data(bytes: Uint8Array): void {
    this.#send(bytes);
  }

  /**
   * Asks for `nrPages` pages of process `pid` (its id in the images) at `vaddr` (PS_IOV_GET)
   * and reads them into `buf`: how many came (the server sends fewer where what it holds
   * there ends).
   */
  get(pid: number, vaddr: bigint, nrPages: number, buf: Uint8Array): number {
    this.#send(header(PS.GET, 0, nrPages, vaddr, BigInt(pid)));
    const h = new Uint8Array(HEADER);
    this.#recv(h, "answer to a request for pages");
    const v = new DataView(h.buffer);
    const got = Number(v.getBigUint64(8, true));
    if (
      (v.getUint32(0, true) & 0xffff) !== PS.ADD_F || got === 0 || got > nrPages ||
      v.getBigUint64(16, true) !== vaddr || got * 4096 > buf.length
    ) {
      throw new Error(
        `The page server at ${this.#where} answered a request for ${nrPages} pages of task ` +
          `${pid} at 0x${vaddr.toString(16)} with ${got} at 0x${
            v.getBigUint64(16, true).toString(16)
          } (command ${v.getUint32(0, true) & 0xffff})`,
      );
    }
    this.#recv(buf.subarray(0, got * 4096), "pages");
    return got;
  }

  /** Ends the session: the server has written everything once it answers. */
  close(): void {
    try {
      this.#send(header(PS.CLOSE, 0, 0, 0n, 0n));
      const status = new Uint8Array(4);
      this.#recv(status, "last answer");
      const code = new DataView(status.buffer).getInt32(0, true);
      if (code !== 0) throw new Error(`The page server at ${this.#where} failed (${code})`);
    } finally {
      close(this.#fd);
    }
  }

  /** Drops the connection (after a failure). */
  abort(): void {
    close(this.#fd);
  }
}

/** An IPv4 or IPv6 literal as InetAddr words (port 0), or undefined. */
function parseIp(host: string): InetAddr | undefined {
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(host);
  if (v4) {
    const b = new Uint8Array(v4.slice(1).map(Number));
    return { family: AF_INET, port: 0, addr: [new DataView(b.buffer).getUint32(0, true)] };
  }
  if (host.includes(":")) {
    const [head, tail = ""] = host.split("::");
    const parts = (s: string) => (s ? s.split(":") : []);
    const h = parts(head), t = parts(tail);
    const groups = host.includes("::")
      ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t]
      : h;
    if (groups.length !== 8) return undefined;
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    groups.forEach((g, i) => v.setUint16(i * 2, parseInt(g, 16), false));
    return {
      family: AF_INET6,
      port: 0,
      addr: [0, 4, 8, 12].map((o) => v.getUint32(o, true)),
    };
  }
  return undefined;
}

/** The first pages-N.img id a page server gives (criu's, past the dumper's own). */
const SERVER_PAGES_BASE = 0x10001;

/** Pages a page server hands out on request (PS_IOV_GET): a lazy restore's. */
export interface PagesToServe {
  /**
   * Up to `nrPages` pages of process `pid` (its id in the images) at `vaddr`, fewer where what
   * is held there ends; undefined when none is held there.
   */
  get(pid: number, vaddr: bigint, nrPages: number): Uint8Array | undefined;
}

/**
 * The server's end of one session on `conn`: pagemaps and pages files written into `dir`,
 * whose parent images (if any) tell what it has parents of; with `lazy`, requests for pages
 * answered from it. The images written are returned.
 */
export async function servePages(
  dir: ImagesDir,
  conn: Deno.Conn,
  log: Logger,
  lazy?: PagesToServe,
): Promise<string[]> {
  const written: string[] = [];
  let pagesId = SERVER_PAGES_BASE;
  let current: { dst: bigint; img: ImageWriter; pages: Deno.FsFile } | undefined;
  const closeCurrent = () => {
    if (!current) return;
    current.pages.syncSync();
    current.pages.close();
    current.img.close();
    current = undefined;
  };
  const nameOf = (dst: bigint) => {
    const kind = Number(dst & 0xffn), id = dst >> 8n;
    if (kind === PS_TYPE.PID) return pagemapName({ kind: "pid", id: Number(id) });
    if (kind === PS_TYPE.SHMEM) return pagemapName({ kind: "shmem", id });
    throw new Error(`The page server got an unknown destination kind ${kind}`);
  };
  const hasParent = (dst: bigint) => dir.parent?.has(nameOf(dst)) ?? false;
  const open = (dst: bigint) => {
    closeCurrent();
    const name = nameOf(dst);
    const id = pagesId++;
    const img = dir.writer(name, "PAGEMAP");
    img.entry(pagemap_headSchema, create(pagemap_headSchema, { pagesId: id }));
    const pagesName = `pages-${id}.img`;
    const pages = Deno.openSync(dir.file(pagesName), {
      write: true,
      create: true,
      truncate: true,
      mode: IMAGE_MODE,
    });
    written.push(name, pagesName);
    current = { dst, img, pages };
    log.info(`Opened ${name} (pages in ${pagesName})`);
  };
  const h = new Uint8Array(HEADER);
  const v = new DataView(h.buffer);
  const buf = new Uint8Array(1 << 20);
  let closed = false, served = 0;
  try {
    while (await readExact(conn, h, "a header")) {
      const word = v.getUint32(0, true);
      const cmd = word & 0xffff, flagsIn = word >>> 16;
      const nrPages = Number(v.getBigUint64(8, true));
      const vaddr = v.getBigUint64(16, true), dst = v.getBigUint64(24, true);
      if (cmd === PS.OPEN || cmd === PS.OPEN2) {
        open(dst);
        if (cmd === PS.OPEN2) await send(conn, new Uint8Array([hasParent(dst) ? 1 : 0]));
      } else if (cmd === PS.PARENT) {
        const answer = new Uint8Array(4);
        new DataView(answer.buffer).setInt32(0, hasParent(dst) ? 1 : 0, true);
        await send(conn, answer);
      } else if (cmd === PS.ADD || cmd === PS.ADD_F || cmd === PS.HOLE) {
        const flags = cmd === PS.ADD_F ? flagsIn : cmd === PS.ADD ? PE_PRESENT : PE_PARENT;
        // Older clients send no OPEN: the destination opens with its first pages.
        if (current?.dst !== dst) open(dst);
        current!.img.entry(pagemap_entrySchema, flaggedEntry(vaddr, nrPages, flags));
        if (flags & PE_PRESENT) {
          for (let left = nrPages * 4096; left > 0;) {
            const n = Math.min(left, buf.length);
            await readExact(conn, buf.subarray(0, n), "pages");
            for (let off = 0; off < n;) off += current!.pages.writeSync(buf.subarray(off, n));
            left -= n;
          }
        }
      } else if (cmd === PS.GET && lazy) {
        const pid = Number(dst);
        const pages = lazy.get(pid, vaddr, nrPages);
        if (!pages) {
          throw new Error(`No pages of task ${pid} at 0x${vaddr.toString(16)} to serve`);
        }
        const n = pages.length / 4096;
        const reply = new Uint8Array(HEADER + pages.length);
        reply.set(header(PS.ADD_F, PE_PRESENT, n, vaddr, dst));
        reply.set(pages, HEADER);
        await send(conn, reply);
        served += n;
      } else if (cmd === PS.CLOSE || cmd === PS.FORCE_CLOSE) {
        closeCurrent();
        await send(conn, new Uint8Array(4));
        closed = true;
        // The client closes first (no TIME_WAIT here).
        if (cmd === PS.CLOSE) await conn.read(new Uint8Array(1));
        break;
      } else {
        throw new Error(`The page server got an unknown command ${cmd}`);
      }
    }
  } finally {
    closeCurrent();
    conn.close();
  }
  if (lazy) log.info(`Page server: ${served} pages served`);
  if (!closed) throw new Error("The page server's session ended before its data were flushed");
  return written;
}
