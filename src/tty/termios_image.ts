/**
 * struct termios as criu's images carry it: c_cc is glibc's 32-byte array copied into 19
 * uint32 words (four characters to a word, little-endian; words past the 8th unused), and the
 * speeds are those c_cflag does not say (BOTHER), else 0.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { type termios_entry, termios_entrySchema } from "../../proto/gen/files_pb.ts";
import { BOTHER, CBAUD, NCCS, type Termios } from "../syscalls/mod.ts";

const WORDS = 19;

/** A termios_entry of settings `t`. */
export function termiosEntry(t: Termios): termios_entry {
  const words = new Uint32Array(WORDS);
  const bytes = new Uint8Array(words.buffer);
  bytes.set(t.cc.subarray(0, NCCS));
  const custom = (t.cflag & CBAUD) === BOTHER;
  return create(termios_entrySchema, {
    cIflag: t.iflag,
    cOflag: t.oflag,
    cCflag: t.cflag,
    cLflag: t.lflag,
    cLine: t.line,
    cIspeed: custom ? t.ispeed : 0,
    cOspeed: custom ? t.ospeed : 0,
    cCc: [...words],
  });
}

/** The settings a termios_entry carries. */
export function termiosOf(e: termios_entry): Termios {
  const words = new Uint32Array(WORDS);
  words.set(e.cCc.slice(0, WORDS));
  return {
    iflag: e.cIflag,
    oflag: e.cOflag,
    cflag: e.cCflag,
    lflag: e.cLflag,
    line: e.cLine,
    cc: new Uint8Array(words.buffer).slice(0, NCCS),
    ispeed: e.cIspeed,
    ospeed: e.cOspeed,
  };
}
