/**
 * Registers of a restored task from its core image: general-purpose registers in
 * `user_regs_struct` order and a standard-format XSAVE area for PTRACE_SETREGSET.
 *
 * @module
 */
import type { user_x86_fpregs_entry, user_x86_regs_entry } from "../../proto/gen/core_pb.ts";
import { REG, type RegName, USER_REGS_WORDS, XSAVE, xstateLayout } from "../syscalls/mod.ts";
import { RestoreError } from "./files.ts";

/** The 27 register words; orig_ax is -1 so that the kernel does not restart anything itself. */
export function gpregsWords(g: user_x86_regs_entry): BigUint64Array {
  const out = new BigUint64Array(USER_REGS_WORDS);
  for (const [name, idx] of Object.entries(REG) as [RegName, number][]) {
    const key = name.replace(
      /_(\w)/g,
      (_, c: string) => c.toUpperCase(),
    ) as keyof user_x86_regs_entry;
    out[idx] = BigInt(g[key] as bigint);
  }
  out[REG.orig_ax] = 0xffffffffffffffffn;
  if ((g.mode ?? 1) !== 1) throw new RestoreError("Cannot restore a 32-bit (compat) task");
  return out;
}

const XSAVE_FIELDS: Record<number, { field: string; word: 4 | 8 }> = {
  2: { field: "ymmhSpace", word: 4 },
  3: { field: "bndregState", word: 8 },
  4: { field: "bndcsrState", word: 8 },
  5: { field: "opmaskReg", word: 8 },
  6: { field: "zmmUpper", word: 8 },
  7: { field: "hi16Zmm", word: 8 },
  9: { field: "pkru", word: 4 },
};

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
        throw new RestoreError(`Cannot restore FPU state: this CPU lacks XSAVE component ${bit}`);
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
