/**
 * TCP repair: reading an established connection's state out of the kernel and putting it into
 * a new socket, so that the connection goes on with the same sequence numbers and bytes.
 *
 * A socket in repair mode (TCP_REPAIR) sends nothing: at dump its queues are peeked and its
 * sequence numbers, options and window read; it then closes silently when the dumped task
 * dies. At restore a new socket in repair mode is bound, given the sequence numbers, and
 * "connected" (no handshake), its queues refilled, its window set; repair mode is turned off
 * only when the tree resumes (`finishTcpRestore`), and then the bytes never sent are written
 * (and a FIN that was waiting behind them).
 *
 * ```
 *            snd_una        snd_nxt        write_seq (outq_seq)
 * send queue   |-- sent, unacked --|-- unsent --|          outq_len = write_seq - snd_una
 *                                  <- unsq_len ->
 *            copied_seq     rcv_nxt (inq_seq)
 * recv queue   |--- unread ---|                            inq_len
 * ```
 *
 * Half-closed connections carry a FIN in a queue: the FIN we sent is put back with shutdown()
 * in repair mode, and the FIN the peer sent is replayed by a segment forged from the peer
 * (net/tcp_segment.ts), which the network lock lets through by its mark.
 *
 * @module
 */
import { ioctl } from "../syscalls/process.ts";
import {
  AF_INET,
  connectRaw,
  getsockopt,
  inetSockaddr,
  IP_OPT,
  MSG,
  peekInto,
  sendSome,
  setsockopt,
  shutdown,
  SIOC,
  SO,
  SOL,
  TCP_OPT,
  TCP_QUEUE,
  TCP_REPAIR,
  tcpInfo,
} from "../syscalls/socket.ts";
import { Errno, F, fcntl, nap, O } from "../syscalls/mod.ts";
import { sendFakeSegment, TH } from "./tcp_segment.ts";
import { TCP_STATE } from "./tcp_state.ts";
import type { Connection } from "./addr.ts";
import { applyBufferLock } from "./sk_opts.ts";

const S = TCP_STATE;
/** States whose connection is dumped with repair (connecting, established, half-closed). */
export const REPAIRABLE_STATES: ReadonlySet<number> = new Set([
  S.SYN_SENT,
  S.ESTABLISHED,
  S.FIN_WAIT1,
  S.FIN_WAIT2,
  S.CLOSE_WAIT,
  S.LAST_ACK,
  S.CLOSING,
]);

const bit = (...states: number[]) => states.reduce((m, s) => m | (1 << s), 0);
/** Our FIN was sent before the peer's (or the peer's has not come). */
const SNDQ_FIRST_FIN = bit(S.FIN_WAIT1, S.FIN_WAIT2, S.CLOSING);
/** Our FIN was sent after the peer's. */
const SNDQ_SECOND_FIN = bit(S.LAST_ACK);
/** The peer acknowledged our FIN. */
const SNDQ_FIN_ACKED = bit(S.FIN_WAIT2);
/** The peer's FIN came before ours. */
const RCVQ_FIRST_FIN = bit(S.CLOSE_WAIT, S.LAST_ACK);
/** The peer's FIN came after ours. */
const RCVQ_SECOND_FIN = bit(S.CLOSING);

/** TCPI_OPT_* bits of opt_mask. */
export const TCPI_OPT = { TIMESTAMPS: 1, SACK: 2, WSCALE: 4 } as const;
const TCPOPT = { MAXSEG: 2, WINDOW: 3, SACK_PERM: 4, TIMESTAMP: 8 } as const;

/** What a dump reads of one connection: tcp_stream_entry and the bytes of its queues. */
export interface TcpStream {
  /** TCP state (not in the stream image: the inet entry has it). */
  state: number;
  /** rcv_nxt: the sequence number after the last byte received (a FIN counts one). */
  inqSeq: number;
  /** Bytes received and not read yet. */
  inqLen: number;
  /** write_seq: the sequence number after the last byte written (a FIN counts one). */
  outqSeq: number;
  /** Bytes written and not acknowledged yet, sent or not (our FIN not counted). */
  outqLen: number;
  /** Bytes of the send queue never sent. */
  unsqLen: number;
  /** TCPI_OPT_* options agreed on in the handshake. */
  optMask: number;
  /** Window scale shift of the peer's window (our sending). */
  sndWscale: number;
  /** Window scale shift of our window (our receiving). */
  rcvWscale: number;
  /** Largest segment the peer takes. */
  mssClamp: number;
  /** The connection's TCP timestamp clock, which goes on from here. */
  timestamp: number;
  /** TCP_CORK. */
  cork: boolean;
  /** TCP_NODELAY. */
  nodelay: boolean;
  /** TCP_REPAIR_WINDOW: what the window was on both sides. */
  window: { sndWl1: number; sndWnd: number; maxWindow: number; rcvWnd: number; rcvWup: number };
  /** The receive queue's bytes. */
  inq: Uint8Array;
  /** The send queue's bytes, sent and unsent. */
  outq: Uint8Array;
}

function u32(fd: number, name: number): number {
  const v = new Uint32Array(1);
  getsockopt(fd, name, new Uint8Array(v.buffer), SOL.TCP);
  return v[0];
}

function setU32(fd: number, name: number, value: number): void {
  setsockopt(fd, name, new Uint8Array(new Uint32Array([value >>> 0]).buffer), SOL.TCP);
}

function setI32(fd: number, name: number, value: number): void {
  setsockopt(fd, name, new Uint8Array(new Int32Array([value]).buffer), SOL.TCP);
}

function ioctlInt(fd: number, req: number, what: string): number {
  const v = new Int32Array(1);
  ioctl(fd, req, new Uint8Array(v.buffer), what);
  return v[0];
}

/** Puts `fd` into repair mode. */
export function repairOn(fd: number): void {
  setI32(fd, TCP_OPT.REPAIR, TCP_REPAIR.ON);
}

/** Takes `fd` out of repair mode (the kernel then sends a window probe to the peer). */
export function repairOff(fd: number): void {
  setI32(fd, TCP_OPT.REPAIR, TCP_REPAIR.OFF);
}

function peekQueue(fd: number, queue: number, len: number, what: string): Uint8Array {
  setI32(fd, TCP_OPT.REPAIR_QUEUE, queue);
  const buf = new Uint8Array(len);
  if (!len) return buf;
  const got = peekInto(fd, buf, what);
  if (got !== len) {
    throw new Error(
      `Cannot read the ${queue === TCP_QUEUE.RECV ? "receive" : "send"} queue of ` +
        `${what}: ${got} of ${len} bytes`,
    );
  }
  return buf;
}

function queueSeq(fd: number, queue: number): number {
  setI32(fd, TCP_OPT.REPAIR_QUEUE, queue);
  return u32(fd, TCP_OPT.QUEUE_SEQ);
}

/** Reads the connection of `fd`, which must be in repair mode. */
export function readTcpStream(fd: number, what: string): TcpStream {
  const info = tcpInfo(fd);
  const inqLen = ioctlInt(fd, SIOC.INQ, what);
  let outqLen = ioctlInt(fd, SIOC.OUTQ, what);
  let unsqLen = ioctlInt(fd, SIOC.OUTQNSD, what);
  // Our FIN, not yet acknowledged, is counted in the send queue but is not a byte of it.
  if ((1 << info.state) & (SNDQ_FIRST_FIN | SNDQ_SECOND_FIN) & ~SNDQ_FIN_ACKED) {
    outqLen--;
    if (unsqLen) unsqLen--;
  }
  const win = new Uint32Array(5);
  getsockopt(fd, TCP_OPT.REPAIR_WINDOW, new Uint8Array(win.buffer), SOL.TCP);
  const stream: TcpStream = {
    state: info.state,
    inqSeq: queueSeq(fd, TCP_QUEUE.RECV),
    inqLen,
    outqSeq: queueSeq(fd, TCP_QUEUE.SEND),
    outqLen,
    unsqLen,
    optMask: info.options,
    sndWscale: info.sndWscale,
    rcvWscale: info.rcvWscale,
    mssClamp: u32(fd, TCP_OPT.MAXSEG),
    timestamp: info.options & TCPI_OPT.TIMESTAMPS ? u32(fd, TCP_OPT.TIMESTAMP) : 0,
    cork: u32(fd, TCP_OPT.CORK) !== 0,
    nodelay: u32(fd, TCP_OPT.NODELAY) !== 0,
    window: {
      sndWl1: win[0],
      sndWnd: win[1],
      maxWindow: win[2],
      rcvWnd: win[3],
      rcvWup: win[4],
    },
    inq: peekQueue(fd, TCP_QUEUE.RECV, inqLen, what),
    outq: peekQueue(fd, TCP_QUEUE.SEND, outqLen, what),
  };
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.NONE);
  return stream;
}

/**
 * Writes `data` into the socket without ever blocking. In repair mode the kernel makes one
 * linear buffer per send, so a large piece fails with ENOMEM and is retried in halves; a full
 * buffer (EAGAIN) is waited for a little, then is an error.
 */
function sendQueue(fd: number, data: Uint8Array, what: string): void {
  let chunk = data.length;
  const until = Date.now() + 5000;
  for (let off = 0; off < data.length;) {
    try {
      off += sendSome(fd, data.subarray(off, off + chunk), what, MSG.DONTWAIT);
    } catch (e) {
      if (e instanceof Errno && e.errno === 12 && chunk > 1024) {
        chunk >>= 1;
      } else if (e instanceof Errno && e.errno === 11 && Date.now() < until) {
        nap(1);
      } else {
        throw e;
      }
    }
  }
}

function setBuf(fd: number, name: number, bytes: number): void {
  // The kernel doubles what is set; FORCE passes net.core.[rw]mem_max (CAP_NET_ADMIN).
  setsockopt(fd, name, new Uint8Array(new Int32Array([Math.ceil(bytes / 2)]).buffer));
}

/**
 * Whether our FIN must wait until the bytes never sent are written: it comes after them, and
 * a socket shut for writing takes no more.
 */
function finAfterUnsent(t: TcpStream): boolean {
  return ((1 << t.state) & (SNDQ_FIRST_FIN | SNDQ_SECOND_FIN) & ~SNDQ_FIN_ACKED) !== 0 &&
    t.unsqLen > 0;
}

/** The socket buffer sizes a connection had, put back once its queues are refilled. */
export interface BufferSizes {
  sndbuf: number;
  rcvbuf: number;
  /** SO_REUSEADDR, which leaving repair mode clears. */
  reuseaddr?: boolean;
  /** SO_BUF_LOCK, last: until then the sizes stay locked. */
  bufLock?: number;
}

/**
 * Ends the restore of connection `t` on `fd`: repair mode off, then the bytes of the send
 * queue that had never been sent written normally, and our FIN after them if it was waiting
 * behind them; last, the buffer sizes it had, and whether the kernel may tune them. Written any earlier, the bytes would go out at
 * once, and a peer not restored yet (or a port no longer locked) would answer with a reset.
 */
export function finishTcpRestore(
  fd: number,
  t: TcpStream,
  bufs: BufferSizes,
  what: string,
): void {
  repairOff(fd);
  setsockopt(fd, SO.REUSEADDR, new Uint8Array(new Int32Array([bufs.reuseaddr ? 1 : 0]).buffer));
  sendQueue(fd, t.outq.subarray(t.outqLen - t.unsqLen), what);
  if (finAfterUnsent(t)) shutdown(fd, 1);
  setBuf(fd, SO.SNDBUFFORCE, bufs.sndbuf);
  setBuf(fd, SO.RCVBUFFORCE, bufs.rcvbuf);
  applyBufferLock(fd, bufs.bufLock);
}

/** The largest segment size a user may set (TCP_MAXSEG: the kernel's MAX_TCP_WINDOW). */
const MAX_USER_MSS = 32767;

/** Buffer room for a queue of `bytes`, whatever they cost in kernel buffers. */
function room(bytes: number): number {
  return 2 * bytes + (1 << 20);
}

/**
 * The sequence number of the segment that last updated the send window (snd_wl1), as the
 * kernel takes it back: at most `rcvNxt` + `rcvWnd`. A segment received out of order, ahead of
 * a gap, may have updated it last; the receive window may have shrunk since, under memory
 * pressure, leaving it beyond, which TCP_REPAIR_WINDOW refuses (EINVAL). Such segments are not
 * in the images (criu's neither: its sender sends them again, unacknowledged), so the latest
 * point the kernel allows stands for it: segments before it still do not update the window.
 */
export function windowUpdateSeq(sndWl1: number, rcvNxt: number, rcvWnd: number): number {
  const limit = (rcvNxt + rcvWnd) >>> 0;
  return ((sndWl1 - limit) | 0) > 0 ? limit : sndWl1;
}

/**
 * Makes bound socket `fd` (in repair mode) the connection `t` was: sequence numbers, the
 * connect without handshake, options, queues, window, and the FINs of a half-closed one; its
 * receive buffer `rcvbuf` bytes (the kernel's figure) once its queue is in. The socket stays in
 * repair mode.
 */
export function restoreTcpStream(
  fd: number,
  ends: Connection,
  t: TcpStream,
  rcvbuf: number,
  what: string,
): void {
  if (t.state === S.SYN_SENT) return restoreSynSent(fd, ends, t, what);
  const mstate = 1 << t.state;
  let inqSeq = t.inqSeq, outqSeq = t.outqSeq;
  // The sequence numbers count the FINs, which are put back separately below.
  if (mstate & (RCVQ_FIRST_FIN | RCVQ_SECOND_FIN)) inqSeq = (inqSeq - 1) >>> 0;
  if (mstate & (SNDQ_FIRST_FIN | SNDQ_SECOND_FIN)) outqSeq = (outqSeq - 1) >>> 0;
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.RECV);
  setU32(fd, TCP_OPT.QUEUE_SEQ, inqSeq - t.inqLen);
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.SEND);
  setU32(fd, TCP_OPT.QUEUE_SEQ, outqSeq - t.outqLen);
  // Over IPv6 the connect sizes segments from a user's clamp if there is one (see below).
  const v6 = ends.family !== AF_INET;
  if (v6) setI32(fd, TCP_OPT.MAXSEG, Math.min(t.mssClamp, MAX_USER_MSS));
  connectRaw(
    fd,
    inetSockaddr({ family: ends.family, port: ends.dstPort, addr: ends.dstAddr }),
    what,
  );

  const opts: number[] = [];
  if (t.optMask & TCPI_OPT.SACK) opts.push(TCPOPT.SACK_PERM, 0);
  if (t.optMask & TCPI_OPT.WSCALE) opts.push(TCPOPT.WINDOW, t.sndWscale + (t.rcvWscale << 16));
  if (t.optMask & TCPI_OPT.TIMESTAMPS) opts.push(TCPOPT.TIMESTAMP, 0);
  opts.push(TCPOPT.MAXSEG, t.mssClamp);
  setsockopt(fd, TCP_OPT.REPAIR_OPTIONS, new Uint8Array(new Uint32Array(opts).buffer), SOL.TCP);
  if (t.optMask & TCPI_OPT.TIMESTAMPS) setU32(fd, TCP_OPT.TIMESTAMP, t.timestamp);
  // The connect without handshake worked the segment size out from the default clamp (536
  // bytes, 524 with timestamps) and the options above do not work it out again: the
  // connection would send small segments, each costing the peer's buffer twice its bytes, until
  // its peer offers a window larger than any it offered before, maybe never (a peer with a
  // full buffer then dropped data inside the window it had offered, and both ends stalled).
  // Setting IPv4 options works it out from the clamp now: none, as the socket had (a dump
  // refuses a socket with some: inet.ts). IPv6 has no such call for a connection of its own:
  // its connect took the clamp as a user's (TCP_MAXSEG, at most 32767 bytes: loopback's 65476
  // is cut to that; 1208 with timestamps otherwise, as criu's connections keep), which is
  // dropped now that the options hold it.
  if (!v6) setsockopt(fd, IP_OPT.OPTIONS, new Uint8Array(0), SOL.IP);
  else setI32(fd, TCP_OPT.MAXSEG, 0);

  // Room for the queues whatever their bytes cost in kernel buffers now (until the end).
  setBuf(fd, SO.SNDBUFFORCE, room(t.outqLen));
  setBuf(fd, SO.RCVBUFFORCE, room(t.inqLen));
  if (t.inqLen) {
    setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.RECV);
    sendQueue(fd, t.inq, what);
  }
  // The receive buffer back to its size before the connection can take anything (the network
  // is locked until the restore ends): a window offered against the larger room would be taken
  // back when it shrinks, with data in flight inside it.
  if (rcvbuf) setBuf(fd, SO.RCVBUFFORCE, rcvbuf);
  // Sent but unacknowledged bytes go back as sent (the peer may acknowledge them); the unsent
  // rest is written normally once repair mode is off (`finishTcpRestore`), as the task would
  // have written it.
  const sent = t.outqLen - t.unsqLen;
  if (sent) {
    setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.SEND);
    sendQueue(fd, t.outq.subarray(0, sent), what);
  }
  const w = t.window;
  const finIn = (mstate & (RCVQ_FIRST_FIN | RCVQ_SECOND_FIN)) !== 0;
  const rcvWnd = finIn ? w.rcvWnd + 1 : w.rcvWnd;
  const win = [windowUpdateSeq(w.sndWl1, inqSeq, rcvWnd), w.sndWnd, w.maxWindow, rcvWnd];
  win.push(finIn ? (w.rcvWup - 1) >>> 0 : w.rcvWup);
  setsockopt(fd, TCP_OPT.REPAIR_WINDOW, new Uint8Array(new Uint32Array(win).buffer), SOL.TCP);
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.NONE);

  const peerSegment = (flags: number, ack: number) =>
    sendFakeSegment(ends, { seq: inqSeq, ack, flags, window: w.rcvWnd });
  const finOut = () => {
    const acked = (mstate & SNDQ_FIN_ACKED) !== 0;
    if (acked) setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.SEND);
    shutdown(fd, 1);
    if (acked) setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.NONE);
  };
  const snduna = (outqSeq - t.outqLen) >>> 0;
  const finNow = !finAfterUnsent(t);
  if (mstate & SNDQ_FIRST_FIN && finNow) finOut();
  if (finIn) peerSegment(TH.ACK | TH.FIN, snduna);
  if (mstate & SNDQ_SECOND_FIN && finNow) finOut();
  if (mstate & SNDQ_FIN_ACKED) peerSegment(TH.ACK, (outqSeq + 1) >>> 0);

  if (t.nodelay) setI32(fd, TCP_OPT.NODELAY, 1);
  if (t.cork) setI32(fd, TCP_OPT.CORK, 1);
}

/**
 * A connection still waiting for its SYN's answer: its initial sequence number set (the send
 * sequence less the SYN's), then connected out of repair mode, without blocking, which sends
 * the SYN again with that number (the network lock holds it until the restore ends, then the
 * kernel retransmits it); back in repair mode until the restore ends.
 */
function restoreSynSent(fd: number, ends: Connection, t: TcpStream, what: string): void {
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.RECV);
  setU32(fd, TCP_OPT.QUEUE_SEQ, t.inqSeq - t.inqLen);
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.SEND);
  setU32(fd, TCP_OPT.QUEUE_SEQ, (t.outqSeq - t.outqLen - 1) >>> 0);
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.NONE);
  repairOff(fd);
  const flags = fcntl(fd, F.GETFL);
  fcntl(fd, F.SETFL, flags | O.NONBLOCK);
  try {
    connectRaw(
      fd,
      inetSockaddr({ family: ends.family, port: ends.dstPort, addr: ends.dstAddr }),
      what,
    );
  } catch (e) {
    if (!(e instanceof Errno) || e.errno !== EINPROGRESS) throw e;
  } finally {
    fcntl(fd, F.SETFL, flags);
  }
  repairOn(fd);
  if (t.nodelay) setI32(fd, TCP_OPT.NODELAY, 1);
  if (t.cork) setI32(fd, TCP_OPT.CORK, 1);
}

const EINPROGRESS = 115;

/**
 * Closes bound socket `fd` the way a TCP connection `ends` closed: naming its peer still
 * (SO_PEERNAME), which only a connection gives. It is connected in repair mode (no handshake),
 * reset by a segment from its peer while still in repair mode (nothing goes out), then taken
 * out of it, closed and shut both ways; the reset's error is read away, as the closed
 * connection had none waiting.
 */
export function closeAfterConnection(fd: number, ends: Connection, what: string): void {
  const seq = 1;
  repairOn(fd);
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.RECV);
  setU32(fd, TCP_OPT.QUEUE_SEQ, seq);
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.SEND);
  setU32(fd, TCP_OPT.QUEUE_SEQ, seq);
  setI32(fd, TCP_OPT.REPAIR_QUEUE, TCP_QUEUE.NONE);
  connectRaw(
    fd,
    inetSockaddr({ family: ends.family, port: ends.dstPort, addr: ends.dstAddr }),
    what,
  );
  sendFakeSegment(ends, { seq, ack: seq, flags: TH.RST | TH.ACK, window: 0 });
  const state = tcpInfo(fd).state;
  repairOff(fd);
  if (state !== S.CLOSE) {
    throw new Error(`Cannot close ${what} again after its connection: it stays in state ${state}`);
  }
  getsockopt(fd, SO.ERROR, new Uint8Array(4));
}
