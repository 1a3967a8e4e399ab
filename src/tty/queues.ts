/**
 * What a pty pair holds unread, taken out and put back byte for byte.
 *
 * A terminal cannot be peeked: the dump reads both queues (the slave's input, after the line
 * discipline; the master's, the slave's output after it) and writes them back at once, and the
 * restore writes them the same way. Writing back goes through the line discipline again, so it
 * runs under settings that let every byte through unchanged, and ends under the terminal's own.
 * In canonical mode the lines come back as lines and a partial line as a partial line; what the
 * images cannot say exactly (an end-of-file mark, a line end escaped into a line, packet mode
 * with something queued, more than the line discipline holds) is refused by name.
 *
 * @module
 */
import {
  inputQueued,
  LFLAG,
  nap,
  pollNow,
  setTermios,
  type Termios,
  tryRead,
  VCC,
  writeAll,
} from "../syscalls/mod.ts";

/** The unread bytes of a pty pair. */
export interface PtyQueues {
  /** What the slave's reader gets next (complete lines, then a partial one). */
  input: Uint8Array;
  /** What the master's reader gets next. */
  output: Uint8Array;
  /**
   * Offsets in `input` where an end-of-file mark (^D) ends a line (canonical mode). The images
   * cannot carry them (such a queue is refused), but a queue put back after a refused dump must
   * have them.
   */
  eofAt?: number[];
}

/** A queue the images cannot carry exactly. */
export class TtyQueueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TtyQueueError";
  }
}

/** The line discipline's buffer (N_TTY_BUF_SIZE) less one. */
const MAX_QUEUED = 4095;
const NL = 0x0a;

/** Reads what `fd` returns now without blocking (FIONREAD first, poll to flush), read by read. */
function readyChunks(fd: number, what: string): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < 8192; i++) {
    pollNow(fd); // runs the port's pending work when nothing is readable yet
    const n = inputQueued(fd, what);
    if (n <= 0) return chunks;
    const buf = new Uint8Array(n);
    const got = tryRead(fd, buf);
    if (got < 0) return chunks;
    chunks.push(buf.subarray(0, got)); // empty: a line of nothing but an end-of-file mark
  }
  throw new TtyQueueError(`Cannot read the queue of ${what}: it does not drain`);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Line ends of canonical mode under `t` besides '\n' (VEOL, VEOL2 when set). */
function lineEnds(t: Termios): number[] {
  const ends = [NL];
  if (t.cc[VCC.VEOL]) ends.push(t.cc[VCC.VEOL]);
  if (t.lflag & LFLAG.IEXTEN && t.cc[VCC.VEOL2]) ends.push(t.cc[VCC.VEOL2]);
  return ends;
}

/**
 * Takes the unread bytes out of a pty pair whose settings are `t`: the master's queue, then the
 * slave's (line by line in canonical mode, then the partial line with canonical mode off for a
 * moment). `slave` may be undefined when no descriptor of the slave is at hand (nothing to read
 * there then). Throws {@link TtyQueueError} for what cannot be carried; what was taken out is
 * in the error's queues then, to be put back.
 */
export function drainPty(
  master: number,
  slave: number | undefined,
  t: Termios,
  packet: boolean,
  what: string,
): PtyQueues {
  if (packet) {
    // Settings changed for a moment would queue packet-mode status for the master's reader:
    // only what shows without touching them is looked at.
    pollNow(master);
    const queued = inputQueued(master, what) + (slave === undefined ? 0 : inputQueued(slave, what));
    if (queued) throw new TtyQueueError(`${what}: it is in packet mode with data unread`);
    return { input: new Uint8Array(0), output: new Uint8Array(0) };
  }
  const output = concat(readyChunks(master, `the master of ${what}`));
  let input: Uint8Array = new Uint8Array(0);
  const queues: PtyQueues = { input, output };
  let refusal: string | undefined;
  if (slave !== undefined) {
    const lines = readyChunks(slave, `the slave of ${what}`);
    let partial: Uint8Array = new Uint8Array(0);
    const eofAt: number[] = [];
    if (t.lflag & LFLAG.ICANON) {
      // The partial line shows only outside canonical mode; with the queue empty otherwise,
      // switching back leaves the line discipline as it was.
      const cc = t.cc.slice();
      cc[VCC.VMIN] = 1;
      cc[VCC.VTIME] = 0;
      setTermios(master, { ...t, lflag: t.lflag & ~LFLAG.ICANON, cc }, what);
      try {
        partial = concat(readyChunks(slave, `the slave of ${what}`));
      } finally {
        setTermios(master, t, what);
      }
      const ends = lineEnds(t);
      let off = 0;
      for (const line of lines) {
        off += line.length;
        // A read stops after a line end; one that ends otherwise met an end-of-file mark.
        if (!line.length || !ends.includes(line[line.length - 1])) eofAt.push(off);
        if (line.subarray(0, -1).some((b) => ends.includes(b))) {
          refusal = "an unread line holds an escaped line end";
        }
      }
      // Marks left show as NULs at the front of the rest (lines of nothing but the mark, which
      // FIONREAD does not count).
      let lead = 0;
      while (lead < partial.length && partial[lead] === 0) {
        eofAt.push(off);
        lead++;
      }
      partial = partial.subarray(lead);
      if (eofAt.length) refusal = "a line ended by end-of-file (^D) is unread";
      if (partial.some((b) => ends.includes(b))) {
        refusal = "its unread partial line holds an escaped line end";
      }
    }
    input = concat([...lines, partial]);
    if (eofAt.length) queues.eofAt = eofAt;
  }
  queues.input = input;
  if (!refusal && (input.length || output.length)) {
    if (t.lflag & LFLAG.EXTPROC) refusal = "it is in external processing mode with data unread";
    else if (input.length > MAX_QUEUED || output.length > MAX_QUEUED) {
      refusal = `more than ${MAX_QUEUED} bytes are unread`;
    }
  }
  if (refusal) throw Object.assign(new TtyQueueError(`${what}: ${refusal}`), { queues });
  return queues;
}

/**
 * Puts unread bytes back into a pty pair (fresh, or drained) and leaves it under settings `t`:
 * the input written through the master with echo as the only processing (its echo, awaited on
 * the master and read away, says the line discipline has taken it), then the output written
 * through the slave with no output processing (awaited on the master).
 */
export function refillPty(
  master: number,
  slave: number | undefined,
  t: Termios,
  queues: PtyQueues,
  what: string,
): void {
  if (!queues.input.length && !queues.output.length && !queues.eofAt?.length) return;
  const canonical = t.lflag & LFLAG.ICANON;
  const cc = new Uint8Array(t.cc.length);
  cc[VCC.VMIN] = 1;
  if (canonical) {
    cc[VCC.VEOL] = t.cc[VCC.VEOL];
    if (t.lflag & LFLAG.IEXTEN) cc[VCC.VEOL2] = t.cc[VCC.VEOL2];
  }
  // End-of-file marks come from a character that is none of the data's.
  const eofAt = queues.eofAt ?? [];
  let written = queues.input;
  if (eofAt.length) {
    const used = new Set([...queues.input, 0, NL, cc[VCC.VEOL], cc[VCC.VEOL2]]);
    const mark = [...Array(256).keys()].find((b) => !used.has(b));
    if (mark === undefined) throw new TtyQueueError(`Cannot put the input of ${what} back`);
    cc[VCC.VEOF] = mark;
    const parts: Uint8Array[] = [];
    let from = 0;
    for (const at of eofAt) {
      parts.push(queues.input.subarray(from, at), new Uint8Array([mark]));
      from = at;
    }
    parts.push(queues.input.subarray(from));
    written = concat(parts);
  }
  const replay: Termios = {
    ...t,
    iflag: 0,
    oflag: 0,
    lflag: canonical ? LFLAG.ICANON | LFLAG.IEXTEN | LFLAG.ECHO : LFLAG.ECHO,
    cc,
  };
  try {
    if (written.length) {
      setTermios(master, replay, what);
      writeAll(master, written, `the master of ${what}`);
      const echo = awaitQueued(master, queues.input.length, what);
      // Marks alone echo nothing: they are given a moment.
      if (!queues.input.length) nap(20);
      if (echo.length !== queues.input.length) {
        throw new TtyQueueError(`Cannot put the input of ${what} back: its echo differs`);
      }
    }
    if (queues.output.length) {
      if (slave === undefined) {
        throw new TtyQueueError(`Cannot put the output of ${what} back: no slave at hand`);
      }
      setTermios(master, { ...replay, lflag: replay.lflag & ~LFLAG.ECHO }, what);
      writeAll(slave, queues.output, `the slave of ${what}`);
      awaitQueued(master, queues.output.length, what, false);
    }
  } finally {
    setTermios(master, t, what);
  }
}

/** Waits (a second at most) until `fd` has `n` bytes to read; reads them when `take`. */
function awaitQueued(fd: number, n: number, what: string, take = true): Uint8Array {
  const deadline = Date.now() + 1000;
  for (;;) {
    pollNow(fd);
    const have = inputQueued(fd, what);
    if (have >= n) break;
    nap(1);
    if (Date.now() > deadline) {
      throw new TtyQueueError(`Cannot put the queues of ${what} back: ${have} of ${n} bytes came`);
    }
  }
  if (!take) return new Uint8Array(0);
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = tryRead(fd, buf.subarray(got));
    if (r <= 0) break;
    got += r;
  }
  return buf.subarray(0, got);
}
