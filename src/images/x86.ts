/**
 * x86-64 register state between the kernel's layouts and CRIU's core image: the 27 words of
 * `user_regs_struct` ↔ user_x86_regs_entry, and a standard-format XSAVE area ↔
 * user_x86_fpregs_entry (legacy FXSAVE fields plus one repeated field per XSAVE component).
 *
 * @module
 */
import { create } from "./protobuf.ts";
import {
  type user_x86_fpregs_entry,
  user_x86_fpregs_entrySchema,
  type user_x86_regs_entry,
  user_x86_regs_entrySchema,
  user_x86_xsave_entrySchema,
} from "../../proto/gen/core_pb.ts";
import { REG, type RegName, USER_REGS_WORDS, XSAVE, xstateLayout } from "../syscalls/mod.ts";

/** The user_x86_regs_entry field of a register (`orig_ax` → `origAx`). */
function regKey(name: RegName): keyof user_x86_regs_entry {
  return name.replace(/_(\w)/g, (_, c: string) => c.toUpperCase()) as keyof user_x86_regs_entry;
}

/** XSAVE component bit → the user_x86_xsave_entry field holding it, and its word size. */
const XSAVE_FIELDS: Record<number, { field: string; word: 4 | 8 }> = {
  2: { field: "ymmhSpace", word: 4 },
  3: { field: "bndregState", word: 8 },
  4: { field: "bndcsrState", word: 8 },
  5: { field: "opmaskReg", word: 8 },
  6: { field: "zmmUpper", word: 8 },
  7: { field: "hi16Zmm", word: 8 },
  9: { field: "pkru", word: 4 },
};

/** user_x86_regs_entry from 27 register words. */
export function gpregsEntry(regs: BigUint64Array): user_x86_regs_entry {
  const init: Record<string, bigint> = {};
  for (const [name, idx] of Object.entries(REG) as [RegName, number][]) {
    init[regKey(name)] = regs[idx];
  }
  return create(user_x86_regs_entrySchema, { ...init, mode: 1 });
}

/** The 27 register words; orig_ax is -1 so that the kernel does not restart anything itself. */
export function gpregsWords(g: user_x86_regs_entry): BigUint64Array {
  if ((g.mode ?? 1) !== 1) throw new Error("Cannot restore a 32-bit (compat) task");
  const out = new BigUint64Array(USER_REGS_WORDS);
  for (const [name, idx] of Object.entries(REG) as [RegName, number][]) {
    out[idx] = BigInt(g[regKey(name)] as bigint);
  }
  out[REG.orig_ax] = 0xffffffffffffffffn;
  return out;
}

function u32s(bytes: Uint8Array, off: number, count: number): number[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: count }, (_, i) => v.getUint32(off + i * 4, true));
}

function u64s(bytes: Uint8Array, off: number, count: number): bigint[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: count }, (_, i) => v.getBigUint64(off + i * 8, true));
}

/** user_x86_fpregs_entry from a standard-format XSAVE area. */
export function fpregsEntry(xsave: Uint8Array): user_x86_fpregs_entry {
  const v = new DataView(xsave.buffer, xsave.byteOffset, xsave.byteLength);
  const xs = create(user_x86_xsave_entrySchema, {
    xstateBv: xsave.length > XSAVE.xstateBv ? v.getBigUint64(XSAVE.xstateBv, true) : 3n,
  });
  for (const [bit, comp] of xstateLayout()) {
    const f = XSAVE_FIELDS[bit];
    if (!f || comp.offset + comp.size > xsave.length) continue;
    (xs as unknown as Record<string, unknown>)[f.field] = f.word === 4
      ? u32s(xsave, comp.offset, comp.size / 4)
      : u64s(xsave, comp.offset, comp.size / 8);
  }
  return create(user_x86_fpregs_entrySchema, {
    cwd: v.getUint16(XSAVE.cwd, true),
    swd: v.getUint16(XSAVE.swd, true),
    twd: v.getUint16(XSAVE.twd, true),
    fop: v.getUint16(XSAVE.fop, true),
    rip: v.getBigUint64(XSAVE.rip, true),
    rdp: v.getBigUint64(XSAVE.rdp, true),
    mxcsr: v.getUint32(XSAVE.mxcsr, true),
    mxcsrMask: v.getUint32(XSAVE.mxcsrMask, true),
    stSpace: u32s(xsave, XSAVE.stSpace, 32),
    xmmSpace: u32s(xsave, XSAVE.xmmSpace, 64),
    padding: u32s(xsave, XSAVE.padding, 24),
    xsave: xsave.length > XSAVE.fxsaveSize ? xs : undefined,
  });
}

/**
 * An XSAVE area of `template`'s size (what this kernel hands out for the task) holding the
 * dumped state. Components this CPU lacks but the image uses are an error; components the
 * image lacks stay in their init state.
 */
export function xsaveArea(fp: user_x86_fpregs_entry, template: Uint8Array): Uint8Array {
  const buf = new Uint8Array(template.length);
  const v = new DataView(buf.buffer);
  v.setUint16(XSAVE.cwd, fp.cwd, true);
  v.setUint16(XSAVE.swd, fp.swd, true);
  v.setUint16(XSAVE.twd, fp.twd, true);
  v.setUint16(XSAVE.fop, fp.fop, true);
  v.setBigUint64(XSAVE.rip, fp.rip, true);
  v.setBigUint64(XSAVE.rdp, fp.rdp, true);
  v.setUint32(XSAVE.mxcsr, fp.mxcsr, true);
  v.setUint32(XSAVE.mxcsrMask, fp.mxcsrMask, true);
  fp.stSpace.slice(0, 32).forEach((w, i) => v.setUint32(XSAVE.stSpace + i * 4, w, true));
  fp.xmmSpace.slice(0, 64).forEach((w, i) => v.setUint32(XSAVE.xmmSpace + i * 4, w, true));
  if (buf.length <= XSAVE.fxsaveSize) return buf;
  let bv = 3n; // x87 and SSE state are always given
  const xs = fp.xsave;
  if (xs) {
    const layout = xstateLayout();
    for (const [bit, f] of Object.entries(XSAVE_FIELDS)) {
      const words = (xs as unknown as Record<string, (number | bigint)[]>)[f.field] ?? [];
      if (!words.length) continue;
      const comp = layout.get(Number(bit));
      if (!comp || comp.offset + comp.size > buf.length) {
        throw new Error(`Cannot restore FPU state: this CPU lacks XSAVE component ${bit}`);
      }
      words.slice(0, comp.size / f.word).forEach((w, i) => {
        if (f.word === 4) v.setUint32(comp.offset + i * 4, Number(w), true);
        else v.setBigUint64(comp.offset + i * 8, BigInt(w), true);
      });
    }
    let supported = 3n;
    for (const bit of layout.keys()) supported |= 1n << BigInt(bit);
    bv = xs.xstateBv & supported;
  }
  v.setBigUint64(XSAVE.xstateBv, bv, true);
  return buf;
}
