/**
 * The running kernel's type information (BTF, /sys/kernel/btf/vmlinux): where a member of a
 * kernel struct lies, and the id of a kernel function. The BPF readers (bpf.ts) take their
 * offsets from here, so no offset of a kernel-internal struct is written in this code.
 *
 * ```
 *  header (24 bytes)     magic 0xeb9f, version, flags, hdr_len, type_off, type_len, str_off, str_len
 *  types                 one after another, ids from 1: {name_off, info, size|type} + by kind:
 *                          INT +4, ARRAY +12, STRUCT/UNION +12 per member, ENUM +8 per value,
 *                          FUNC_PROTO +8 per parameter, VAR +4, DATASEC +12 per variable,
 *                          DECL_TAG +4, ENUM64 +12 per value, the others nothing
 *  strings               NUL-terminated, by offset
 * ```
 *
 * @module
 */

const KIND = {
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

interface BtfType {
  name: string;
  kind: number;
  /** Members (STRUCT, UNION), values (ENUM) or parameters: how many. */
  vlen: number;
  kflag: boolean;
  /** Size (INT, STRUCT, UNION, ENUM...) or the type referred to (PTR, TYPEDEF, FUNC...). */
  sizeOrType: number;
  /** Offset of the kind-specific data that follows the common part. */
  extra: number;
}

/** A member of a kernel struct as BTF places it. */
export interface BtfMember {
  /** Byte offset from the start of the outer struct. */
  offset: number;
  /** Size in bytes (of the whole storage unit for a bitfield). */
  size: number;
  /** For a bitfield: its bit offset within the struct and its width. */
  bits?: { offset: number; size: number };
  /** It is a pointer (cpumask_var_t, say, may be one or an array by the kernel's config). */
  pointer: boolean;
}

const DECODER = new TextDecoder();

/** The kernel's BTF, parsed once. */
export class KernelBtf {
  readonly #view: DataView;
  readonly #strings: Uint8Array;
  readonly #types: BtfType[] = [{
    name: "",
    kind: 0,
    vlen: 0,
    kflag: false,
    sizeOrType: 0,
    extra: 0,
  }];
  #byName?: Map<string, number[]>;

  constructor(data: Uint8Array) {
    const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (v.getUint16(0, true) !== 0xeb9f) throw new Error("vmlinux BTF: bad magic");
    const hdrLen = v.getUint32(4, true);
    const typeOff = hdrLen + v.getUint32(8, true), typeLen = v.getUint32(12, true);
    const strOff = hdrLen + v.getUint32(16, true), strLen = v.getUint32(20, true);
    this.#view = v;
    this.#strings = data.subarray(strOff, strOff + strLen);
    for (let p = typeOff; p < typeOff + typeLen;) {
      const info = v.getUint32(p + 4, true);
      const t: BtfType = {
        name: this.#str(v.getUint32(p, true)),
        kind: (info >>> 24) & 0x1f,
        vlen: info & 0xffff,
        kflag: (info >>> 31) === 1,
        sizeOrType: v.getUint32(p + 8, true),
        extra: p + 12,
      };
      this.#types.push(t);
      p += 12 + extraSize(t);
    }
  }

  /** The running kernel's BTF. */
  static load(path = "/sys/kernel/btf/vmlinux"): KernelBtf {
    return new KernelBtf(Deno.readFileSync(path));
  }

  /** The id of the type `name` of `kind` ("struct", "func", ...), or undefined. */
  #find(name: string, kind: number): number | undefined {
    if (!this.#byName) {
      this.#byName = new Map();
      this.#types.forEach((t, id) => {
        if (!t.name) return;
        const ids = this.#byName!.get(t.name);
        if (ids) ids.push(id);
        else this.#byName!.set(t.name, [id]);
      });
    }
    return this.#byName.get(name)?.find((id) => this.#types[id].kind === kind);
  }

  /** The BTF id of kernel function `name` (a BPF program's attach point). */
  funcId(name: string): number {
    const id = this.#find(name, KIND.FUNC);
    if (id === undefined) throw new Error(`vmlinux BTF: no function ${name}`);
    return id;
  }

  /** The offset of variable `name` in data section `section` (".data..percpu", say). */
  sectionOffset(section: string, name: string): number {
    const sec = this.#find(section, KIND.DATASEC);
    if (sec === undefined) throw new Error(`vmlinux BTF: no section ${section}`);
    const t = this.#types[sec];
    for (let i = 0; i < t.vlen; i++) {
      const p = t.extra + i * 12;
      if (this.#types[this.#view.getUint32(p, true)]?.name === name) {
        return this.#view.getUint32(p + 4, true);
      }
    }
    throw new Error(`vmlinux BTF: no variable ${name} in ${section}`);
  }

  #struct(name: string): number {
    const id = this.#find(name, KIND.STRUCT);
    if (id === undefined) throw new Error(`vmlinux BTF: no struct ${name}`);
    return id;
  }

  /**
   * Where member `path` ("flags", "file_table.data.nr") of `struct name` lies. Members of
   * anonymous structs and unions are found as the C code names them, through them.
   */
  member(struct: string, path: string): BtfMember {
    let id = this.#struct(struct);
    let offset = 0, bits: BtfMember["bits"];
    for (const part of path.split(".")) {
      const found = this.#memberOf(id, part);
      if (!found) throw new Error(`vmlinux BTF: struct ${struct} has no member ${path}`);
      offset += found.bitOffset;
      id = found.type;
      if (found.bitSize) bits = { offset, size: found.bitSize };
    }
    if (bits) {
      const unit = this.#sizeOf(id);
      const start = Math.floor(bits.offset / (unit * 8)) * unit;
      return {
        offset: start,
        size: unit,
        bits: { offset: bits.offset - start * 8, size: bits.size },
        pointer: false,
      };
    }
    if (offset % 8) throw new Error(`vmlinux BTF: ${struct}.${path} is not byte-aligned`);
    const pointer = this.#types[this.#resolve(id)].kind === KIND.PTR;
    return { offset: offset / 8, size: this.#sizeOf(id), pointer };
  }

  /** The size of `struct name`. */
  size(struct: string): number {
    return this.#sizeOf(this.#struct(struct));
  }

  /** The value of enumerator `name` (of any enum). */
  enumValue(name: string): number {
    for (const t of this.#types) {
      if (t.kind !== KIND.ENUM) continue;
      for (let i = 0; i < t.vlen; i++) {
        const p = t.extra + i * 8;
        if (this.#str(this.#view.getUint32(p, true)) === name) {
          return this.#view.getInt32(p + 4, true);
        }
      }
    }
    throw new Error(`vmlinux BTF: no enumerator ${name}`);
  }

  /** Member `name` of struct or union `id`: its bit offset and type (anonymous ones searched). */
  #memberOf(
    id: number,
    name: string,
  ): { bitOffset: number; bitSize: number; type: number } | undefined {
    const t = this.#types[this.#resolve(id)];
    if (t.kind !== KIND.STRUCT && t.kind !== KIND.UNION) return undefined;
    for (let i = 0; i < t.vlen; i++) {
      const p = t.extra + i * 12;
      const mName = this.#str(this.#view.getUint32(p, true));
      const mType = this.#view.getUint32(p + 4, true);
      const raw = this.#view.getUint32(p + 8, true);
      const bitOffset = t.kflag ? raw & 0xffffff : raw;
      const bitSize = t.kflag ? raw >>> 24 : 0;
      if (mName === name) return { bitOffset, bitSize, type: mType };
      if (!mName) {
        const inner = this.#memberOf(mType, name);
        if (inner) return { ...inner, bitOffset: bitOffset + inner.bitOffset };
      }
    }
    return undefined;
  }

  /** Past typedefs and qualifiers. */
  #resolve(id: number): number {
    for (;;) {
      const t = this.#types[id];
      if (
        t.kind === KIND.TYPEDEF || t.kind === KIND.VOLATILE || t.kind === KIND.CONST ||
        t.kind === KIND.RESTRICT || t.kind === KIND.TYPE_TAG
      ) {
        id = t.sizeOrType;
      } else {
        return id;
      }
    }
  }

  #sizeOf(id: number): number {
    const t = this.#types[this.#resolve(id)];
    if (t.kind === KIND.PTR) return 8;
    if (t.kind === KIND.ARRAY) {
      const elem = this.#view.getUint32(t.extra, true);
      return this.#sizeOf(elem) * this.#view.getUint32(t.extra + 8, true);
    }
    return t.sizeOrType;
  }

  #str(off: number): string {
    return DECODER.decode(this.#strings.subarray(off, this.#strings.indexOf(0, off)));
  }
}

function extraSize(t: BtfType): number {
  switch (t.kind) {
    case KIND.INT:
    case KIND.VAR:
    case KIND.DECL_TAG:
      return 4;
    case KIND.ARRAY:
      return 12;
    case KIND.STRUCT:
    case KIND.UNION:
    case KIND.DATASEC:
    case KIND.ENUM64:
      return 12 * t.vlen;
    case KIND.ENUM:
    case KIND.FUNC_PROTO:
      return 8 * t.vlen;
    default:
      return 0;
  }
}
