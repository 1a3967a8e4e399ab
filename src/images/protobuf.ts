/**
 * proto2 messages for the types generated from proto/*.proto (proto/gen/, by `deno task proto`):
 * making them, encoding and decoding them, asking whether a field is set, and the JSON that
 * `criu show` prints.
 *
 * A generated schema is a table: each field's number, names, type, label and, for a message or
 * enum field, its type. Nothing is built when a module loads: a schema makes its field list the
 * first time it is used, so a command pays only for the types it meets (the protobuf-es runtime
 * this replaces decoded every file's descriptors at start-up, about 25 ms of each command).
 *
 * Messages are plain objects, as before: `$typeName`, one property per field. A singular field
 * of proto2 has explicit presence: it is set when the object has it as an own property; its
 * default (the `[default = ...]`, else the type's zero, else an enum's first value) sits on a
 * prototype shared by the type's messages. A repeated field is always an own array, set when
 * not empty. Fields a reader does not know are kept (`$unknown`) and written back.
 *
 * Wire format: https://protobuf.dev/programming-guides/encoding/ (proto2: repeated scalars are
 * written unpacked unless declared `[packed = true]`, and read either way).
 *
 * @module
 */

/** Field types, numbered as in descriptor.proto's FieldDescriptorProto.Type. */
export enum ScalarType {
  DOUBLE = 1,
  FLOAT = 2,
  INT64 = 3,
  UINT64 = 4,
  INT32 = 5,
  FIXED64 = 6,
  FIXED32 = 7,
  BOOL = 8,
  STRING = 9,
  BYTES = 12,
  UINT32 = 13,
  SFIXED32 = 15,
  SFIXED64 = 16,
  SINT32 = 17,
  SINT64 = 18,
}

/** A field type that is not a scalar: a nested message or an enum. */
const MESSAGE = 11;
const ENUM = 14;

/** A field's label: optional, required, repeated, or repeated and packed on the wire. */
export enum Label {
  OPTIONAL = 1,
  REQUIRED = 2,
  REPEATED = 3,
  PACKED = 4,
}

/** A field a decoder met but its type does not declare, kept to be written back. */
export interface UnknownField {
  no: number;
  wireType: number;
  data: Uint8Array;
}

/** What every message has: its type's full name, and the fields read that it does not know. */
export interface Message<TypeName extends string = string> {
  readonly $typeName: TypeName;
  $unknown?: UnknownField[];
}

/** An enum type: its name, and its values' names for JSON. */
export interface DescEnum {
  readonly kind: "enum";
  readonly typeName: string;
  /** The name of the value numbered `n`, or undefined. */
  nameOf(n: number): string | undefined;
}

/** One field of a message type. */
export interface DescField {
  readonly number: number;
  /** The name in the .proto file (`mm_start_code`). */
  readonly name: string;
  /** The property of a message that holds it (`mmStartCode`). */
  readonly localName: string;
  /** Its key in JSON (`mmStartCode`). */
  readonly jsonName: string;
  /** A {@link ScalarType}, or 11 (message) or 14 (enum). */
  readonly type: number;
  readonly repeated: boolean;
  readonly packed: boolean;
  readonly required: boolean;
  readonly message: DescMessage | undefined;
  readonly enum: DescEnum | undefined;
  /** A singular scalar's or enum's value when not set. */
  readonly defaultValue: unknown;
}

type FieldNames<T> = Exclude<keyof T, "$typeName" | "$unknown">;

/** A message type; `T` is the shape of its messages. */
export interface DescMessage<T extends Message = Message> {
  readonly kind: "message";
  readonly typeName: string;
  /** Its fields, in the order they are declared. */
  readonly fields: readonly DescField[];
  /** Its fields by property name, for {@link isFieldSet} and {@link clearField}. */
  readonly field: string extends T["$typeName"] ? Readonly<Record<string, DescField>>
    : { readonly [K in FieldNames<T>]: DescField };
  /** Never set: carries `T` for {@link MessageShape}. */
  readonly $shape?: T;
}

/** The messages of a message type. */
export type MessageShape<D extends DescMessage> = D extends DescMessage<infer T> ? T : never;

type InitValue<V> = V extends Message ? MessageInit<V> | V
  : V extends (infer E)[] ? (E extends Message ? (MessageInit<E> | E)[] : V)
  : V;

/** What {@link create} takes for a message of shape `T`: any of its fields (nested ones alike). */
export type MessageInit<T extends Message> =
  & { [K in FieldNames<T>]?: InitValue<T[K]> }
  & { $typeName?: T["$typeName"] };

/** What {@link create} takes for a message of type `D`. */
export type MessageInitShape<D extends DescMessage> = MessageInit<MessageShape<D>>;

/**
 * A field as the generated tables give it: number, proto name, property name, JSON name, type,
 * label, then the message type (as a function: it may be declared further down) or the enum
 * type, then the default when it is not the type's zero.
 */
export type FieldDef = readonly [
  no: number,
  name: string,
  localName: string,
  jsonName: string,
  type: number,
  label: Label,
  ref?: (() => DescMessage) | DescEnum | null,
  defaultValue?: unknown,
];

function zeroOf(type: number): unknown {
  switch (type) {
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
    case ScalarType.SINT64:
      return 0n;
    case ScalarType.BOOL:
      return false;
    case ScalarType.STRING:
      return "";
    case ScalarType.BYTES:
      return new Uint8Array(0);
    case MESSAGE:
      return undefined;
    default:
      return 0;
  }
}

/** A field as the codec uses it: with its wire type and tag worked out. */
interface Field extends DescField {
  /** The wire type of one value. */
  readonly wire: number;
  /** The tag it is written with (number and wire type: 2 for a packed list). */
  readonly tag: number;
}

function fieldOf(def: FieldDef): Field {
  const [number, name, localName, jsonName, type, label, ref, defaultValue] = def;
  const packed = label === Label.PACKED;
  const wire = wireTypeOf(type);
  return {
    number,
    name,
    localName,
    jsonName,
    type,
    repeated: label === Label.REPEATED || packed,
    packed,
    required: label === Label.REQUIRED,
    message: type === MESSAGE ? (ref as () => DescMessage)() : undefined,
    enum: type === ENUM ? ref as DescEnum : undefined,
    defaultValue: defaultValue !== undefined ? defaultValue : zeroOf(type),
    wire,
    tag: (number << 3 | (packed ? 2 : wire)) >>> 0,
  };
}

function wireTypeOf(type: number): number {
  switch (type) {
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 1;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return 5;
    case ScalarType.STRING:
    case ScalarType.BYTES:
    case MESSAGE:
      return 2;
    default:
      return 0;
  }
}

class MessageType<T extends Message> implements DescMessage<T> {
  readonly kind = "message";
  readonly typeName: string;
  #defs: (() => FieldDef[]) | undefined;
  #fields: Field[] | undefined;
  #field: DescMessage<T>["field"] | undefined;
  #byNumber: Map<number, Field> | undefined;
  #written: Field[] | undefined;
  #proto: object | undefined;
  #lists: string[] = [];

  constructor(typeName: string, defs: () => FieldDef[]) {
    this.typeName = typeName;
    this.#defs = defs;
  }

  get fields(): readonly Field[] {
    if (this.#fields === undefined) {
      this.#fields = this.#defs!().map(fieldOf);
      this.#defs = undefined;
      const proto: Record<string, unknown> = {};
      for (const f of this.#fields) {
        if (f.repeated) this.#lists.push(f.localName);
        else proto[f.localName] = f.defaultValue;
      }
      this.#proto = proto;
    }
    return this.#fields;
  }

  get field(): DescMessage<T>["field"] {
    return this.#field ??= Object.fromEntries(
      this.fields.map((f) => [f.localName, f]),
    ) as unknown as DescMessage<T>["field"];
  }

  /** Its fields in the order they are written: by number, as protobuf-c and protobuf-es do. */
  get written(): readonly Field[] {
    return this.#written ??= [...this.fields].sort((a, b) => a.number - b.number);
  }

  /** The field numbered `no`, or undefined. */
  byNumber(no: number): Field | undefined {
    this.#byNumber ??= new Map(this.fields.map((f) => [f.number, f]));
    return this.#byNumber.get(no);
  }

  /** A message with no field set. */
  empty(): T {
    this.fields;
    const m = Object.create(this.#proto!) as Record<string, unknown>;
    m.$typeName = this.typeName;
    for (const l of this.#lists) m[l] = [];
    return m as unknown as T;
  }
}

class EnumType implements DescEnum {
  readonly kind = "enum";
  readonly typeName: string;
  #names: Map<number, string>;

  constructor(typeName: string, values: readonly (readonly [number, string])[]) {
    this.typeName = typeName;
    this.#names = new Map(values);
  }

  nameOf(n: number): string | undefined {
    return this.#names.get(n);
  }
}

/** A message type from its generated table (proto/gen/). */
export function messageType<T extends Message>(
  typeName: string,
  fields: () => FieldDef[],
): DescMessage<T> {
  return new MessageType<T>(typeName, fields);
}

/** An enum type from its generated table: each value's number and name. */
export function enumType(
  typeName: string,
  values: readonly (readonly [number, string])[],
): DescEnum {
  return new EnumType(typeName, values);
}

function impl<T extends Message>(schema: DescMessage<T>): MessageType<T> {
  return schema as MessageType<T>;
}

function isMessageOf(value: unknown, schema: DescMessage): boolean {
  return typeof value === "object" && value !== null &&
    (value as Message).$typeName === schema.typeName;
}

/**
 * A message of type `schema` with the fields of `init` set (nested messages made likewise), or
 * `init` itself when it is one. As protobuf-es did: a list of scalars given is taken as it is,
 * not copied.
 */
export function create<D extends DescMessage>(
  schema: D,
  init?: MessageInitShape<D> | MessageShape<D>,
): MessageShape<D> {
  if (isMessageOf(init, schema)) return init as MessageShape<D>;
  const m = impl(schema).empty() as unknown as Record<string, unknown>;
  if (init === undefined) return m as unknown as MessageShape<D>;
  const from = init as Record<string, unknown>;
  for (const f of schema.fields) {
    const v = from[f.localName];
    if (v === undefined || v === null) continue;
    if (f.message !== undefined) {
      // create() takes a message of the type as it is.
      const sub = f.message;
      m[f.localName] = f.repeated
        ? (v as unknown[]).map((x) => create(sub, x as never))
        : create(sub, v as never);
    } else {
      m[f.localName] = v;
    }
  }
  return m as unknown as MessageShape<D>;
}

/** Whether `field` is set in `message`: a singular one present, a repeated one not empty. */
export function isFieldSet(message: Message, field: DescField): boolean {
  const v = (message as unknown as Record<string, unknown>)[field.localName];
  if (field.repeated) return (v as unknown[]).length > 0;
  return v !== undefined && Object.prototype.hasOwnProperty.call(message, field.localName);
}

/** Unsets `field` in `message`: a singular one reads its default again, a repeated one is empty. */
export function clearField(message: Message, field: DescField): void {
  const m = message as unknown as Record<string, unknown>;
  if (field.repeated) m[field.localName] = [];
  else delete m[field.localName];
}

function cloneValue(f: DescField, v: unknown): unknown {
  if (f.message !== undefined) return clone(f.message, v as Message);
  if (v instanceof Uint8Array) return v.slice();
  return v;
}

/** A deep copy of `message`. */
export function clone<D extends DescMessage>(schema: D, message: MessageShape<D>): MessageShape<D> {
  const m = impl(schema).empty() as unknown as Record<string, unknown>;
  const from = message as unknown as Record<string, unknown>;
  for (const f of schema.fields) {
    if (!isFieldSet(message, f)) continue;
    const v = from[f.localName];
    m[f.localName] = f.repeated ? (v as unknown[]).map((x) => cloneValue(f, x)) : cloneValue(f, v);
  }
  if (message.$unknown !== undefined) {
    m.$unknown = message.$unknown.map((u) => ({ ...u, data: u.data.slice() }));
  }
  return m as unknown as MessageShape<D>;
}

// ---------------------------------------------------------------------------------------------
// Encoding

const utf8 = new TextEncoder();
const MASK32 = 0xffffffffn;

class Writer {
  buf = new Uint8Array(256);
  view = new DataView(this.buf.buffer);
  pos = 0;

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const buf = new Uint8Array(size);
    buf.set(this.buf.subarray(0, this.pos));
    this.buf = buf;
    this.view = new DataView(buf.buffer);
  }

  /** Where `n` bytes for a fixed-size value go, past them. */
  fixed(n: number): number {
    this.ensure(n);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  /** An unsigned 32-bit varint. */
  u32(v: number): void {
    this.ensure(5);
    v >>>= 0;
    while (v > 0x7f) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.pos++] = v;
  }

  /** A 64-bit varint from its halves. */
  u64(lo: number, hi: number): void {
    this.ensure(10);
    while (hi > 0 || lo > 0x7f) {
      this.buf[this.pos++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    this.buf[this.pos++] = lo;
  }

  big(v: bigint): void {
    if (v >= 0n && v <= MASK32) return this.u32(Number(v));
    const u = BigInt.asUintN(64, v);
    this.u64(Number(u & MASK32), Number(u >> 32n));
  }

  i32(v: number): void {
    if (v >= 0) this.u32(v);
    else this.u64(v >>> 0, 0xffffffff);
  }

  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** Moves what was written since `start` up to make room for its length in front of it. */
  prefixLength(start: number): void {
    const len = this.pos - start;
    let n = 1;
    for (let v = len; v > 0x7f; v >>>= 7) n++;
    this.ensure(n);
    this.buf.copyWithin(start + n, start, this.pos);
    const end = this.pos + n;
    this.pos = start;
    this.u32(len);
    this.pos = end;
  }
}

function bigOf(v: unknown): bigint {
  return typeof v === "bigint" ? v : BigInt(v as number | string);
}

function writeValue(w: Writer, f: Field, v: unknown): void {
  switch (f.type) {
    case ScalarType.UINT64:
    case ScalarType.INT64:
      return w.big(bigOf(v));
    case ScalarType.SINT64: {
      const b = bigOf(v);
      return w.big(BigInt.asUintN(64, (b << 1n) ^ (b >> 63n)));
    }
    case ScalarType.UINT32:
      return w.u32(v as number);
    case ScalarType.INT32:
    case ENUM:
      return w.i32(v as number);
    case ScalarType.SINT32: {
      const n = v as number;
      return w.u32(((n << 1) ^ (n >> 31)) >>> 0);
    }
    case ScalarType.BOOL:
      return w.u32(v ? 1 : 0);
    case ScalarType.STRING:
      return w.bytes(utf8.encode(v as string));
    case ScalarType.BYTES:
      return w.bytes(v as Uint8Array);
    case ScalarType.FIXED32: {
      const at = w.fixed(4); // first: it may move w.view
      return w.view.setUint32(at, v as number, true);
    }
    case ScalarType.SFIXED32: {
      const at = w.fixed(4); // first: it may move w.view
      return w.view.setInt32(at, v as number, true);
    }
    case ScalarType.FLOAT: {
      const at = w.fixed(4); // first: it may move w.view
      return w.view.setFloat32(at, v as number, true);
    }
    case ScalarType.FIXED64: {
      const at = w.fixed(8); // first: it may move w.view
      return w.view.setBigUint64(at, BigInt.asUintN(64, bigOf(v)), true);
    }
    case ScalarType.SFIXED64: {
      const at = w.fixed(8); // first: it may move w.view
      return w.view.setBigInt64(at, BigInt.asIntN(64, bigOf(v)), true);
    }
    case ScalarType.DOUBLE: {
      const at = w.fixed(8); // first: it may move w.view
      return w.view.setFloat64(at, v as number, true);
    }
    case MESSAGE: {
      const start = w.pos;
      writeMessage(w, f.message as MessageType<Message>, v as Message);
      return w.prefixLength(start);
    }
  }
  throw new Error(`cannot encode field ${f.name}: type ${f.type}`);
}

function writeMessage(w: Writer, schema: MessageType<Message>, message: Message): void {
  const m = message as unknown as Record<string, unknown>;
  for (const f of schema.written) {
    const v = m[f.localName];
    if (f.repeated) {
      const list = v as unknown[];
      if (list.length === 0) continue;
      if (f.packed) {
        w.u32(f.tag);
        const start = w.pos;
        for (const x of list) writeValue(w, f, x);
        w.prefixLength(start);
      } else {
        for (const x of list) {
          w.u32(f.tag);
          writeValue(w, f, x);
        }
      }
    } else if (v !== undefined && Object.prototype.hasOwnProperty.call(m, f.localName)) {
      w.u32(f.tag);
      writeValue(w, f, v);
    } else if (f.required) {
      throw new Error(
        `cannot encode field ${f.name} of ${schema.typeName} to binary: required field not set`,
      );
    }
  }
  for (const u of message.$unknown ?? []) {
    w.u32((u.no << 3 | u.wireType) >>> 0);
    w.ensure(u.data.length);
    w.buf.set(u.data, w.pos);
    w.pos += u.data.length;
  }
}

/** `message` in the protobuf wire format. */
export function toBinary<D extends DescMessage>(schema: D, message: MessageShape<D>): Uint8Array {
  const w = new Writer();
  writeMessage(w, impl(schema) as MessageType<Message>, message);
  return w.buf.slice(0, w.pos);
}

// ---------------------------------------------------------------------------------------------
// Decoding

const utf8Decoder = new TextDecoder();

class Reader {
  readonly buf: Uint8Array;
  readonly view: DataView;
  pos: number;
  end: number;

  constructor(buf: Uint8Array) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = 0;
    this.end = buf.length;
  }

  #short(): never {
    throw new Error("premature end of protobuf message");
  }

  /** A varint's low 32 bits (a longer one is read whole). */
  u32(): number {
    let v = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (this.pos >= this.end) this.#short();
      const b = this.buf[this.pos++];
      v |= (b & 0x7f) << shift;
      if (b < 0x80) return v >>> 0;
    }
    for (let i = 0; i < 5; i++) {
      if (this.pos >= this.end) this.#short();
      if (this.buf[this.pos++] < 0x80) return v >>> 0;
    }
    throw new Error("invalid varint in protobuf message");
  }

  /** A varint as an unsigned 64-bit value. */
  u64(): bigint {
    let lo = 0, hi = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.#short();
      const b = this.buf[this.pos++];
      if (i < 4) lo |= (b & 0x7f) << (i * 7);
      else if (i === 4) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >>> 4;
      } else hi |= (b & 0x7f) << (i * 7 - 32);
      if (b < 0x80) {
        return hi === 0 ? BigInt(lo >>> 0) : (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
      }
    }
    throw new Error("invalid varint in protobuf message");
  }

  /** Reads a length; where the bytes it counts end (they must be there). */
  lengthEnd(): number {
    const len = this.u32(); // first: it moves pos
    const end = this.pos + len;
    if (end > this.end) this.#short();
    return end;
  }

  /** Where the next `n` bytes start (they must be there), past them. */
  fixed(n: number): number {
    if (n > this.end - this.pos) this.#short();
    const at = this.pos;
    this.pos += n;
    return at;
  }

  take(n: number): Uint8Array {
    const at = this.fixed(n);
    return this.buf.subarray(at, at + n);
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.u32();
        return;
      case 1:
        this.take(8);
        return;
      case 2:
        this.take(this.u32());
        return;
      case 5:
        this.take(4);
        return;
    }
    throw new Error(`cannot skip wire type ${wireType} in protobuf message`);
  }
}

function readValue(r: Reader, f: Field): unknown {
  switch (f.type) {
    case ScalarType.UINT64:
      return r.u64();
    case ScalarType.INT64:
      return BigInt.asIntN(64, r.u64());
    case ScalarType.SINT64: {
      const u = r.u64();
      return (u >> 1n) ^ -(u & 1n);
    }
    case ScalarType.UINT32:
      return r.u32();
    case ScalarType.INT32:
    case ENUM:
      return r.u32() | 0;
    case ScalarType.SINT32: {
      const n = r.u32();
      return (n >>> 1) ^ -(n & 1);
    }
    case ScalarType.BOOL:
      return r.u32() !== 0;
    case ScalarType.STRING:
      return utf8Decoder.decode(r.take(r.u32()));
    case ScalarType.BYTES:
      return r.take(r.u32()).slice();
    case ScalarType.FIXED32:
      return r.view.getUint32(r.fixed(4), true);
    case ScalarType.SFIXED32:
      return r.view.getInt32(r.fixed(4), true);
    case ScalarType.FLOAT:
      return r.view.getFloat32(r.fixed(4), true);
    case ScalarType.FIXED64:
      return r.view.getBigUint64(r.fixed(8), true);
    case ScalarType.SFIXED64:
      return r.view.getBigInt64(r.fixed(8), true);
    case ScalarType.DOUBLE:
      return r.view.getFloat64(r.fixed(8), true);
  }
  throw new Error(`cannot decode field ${f.name}: type ${f.type}`);
}

function readMessage(r: Reader, schema: MessageType<Message>, into: Message): void {
  const m = into as unknown as Record<string, unknown>;
  while (r.pos < r.end) {
    const tag = r.u32();
    const no = tag >>> 3, wireType = tag & 7;
    const f = schema.byNumber(no);
    if (f === undefined || (wireType !== f.wire && !(f.repeated && wireType === 2))) {
      // Kept as read (a length-delimited one with its length), written back after the known.
      const start = r.pos;
      r.skip(wireType);
      (into.$unknown ??= []).push({ no, wireType, data: r.buf.slice(start, r.pos) });
      continue;
    }
    if (f.message !== undefined) {
      const end = r.lengthEnd();
      const sub = f.message as MessageType<Message>;
      let target: Message;
      if (f.repeated) {
        target = sub.empty();
        (m[f.localName] as Message[]).push(target);
      } else if (Object.prototype.hasOwnProperty.call(m, f.localName) && m[f.localName]) {
        target = m[f.localName] as Message;
      } else {
        target = sub.empty();
        m[f.localName] = target;
      }
      const outer = r.end;
      r.end = end;
      readMessage(r, sub, target);
      r.end = outer;
      continue;
    }
    if (f.repeated) {
      const list = m[f.localName] as unknown[];
      if (wireType === 2 && f.wire !== 2) {
        const end = r.lengthEnd();
        while (r.pos < end) list.push(readValue(r, f));
      } else list.push(readValue(r, f));
      continue;
    }
    m[f.localName] = readValue(r, f);
  }
}

/** The message of type `schema` that `bytes` hold. */
export function fromBinary<D extends DescMessage>(schema: D, bytes: Uint8Array): MessageShape<D> {
  const s = impl(schema) as MessageType<Message>;
  const m = s.empty();
  readMessage(new Reader(bytes), s, m);
  return m as unknown as MessageShape<D>;
}

// ---------------------------------------------------------------------------------------------
// JSON

function base64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function jsonValue(f: DescField, v: unknown): unknown {
  switch (f.type) {
    case MESSAGE:
      return toJson(f.message!, v as Message);
    case ENUM:
      return f.enum!.nameOf(v as number) ?? v;
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return String(v);
    case ScalarType.BYTES:
      return base64(v as Uint8Array);
    case ScalarType.FLOAT:
    case ScalarType.DOUBLE: {
      const n = v as number;
      if (Number.isNaN(n)) return "NaN";
      if (n === Infinity) return "Infinity";
      if (n === -Infinity) return "-Infinity";
      return n;
    }
  }
  return v;
}

/**
 * `message` as protobuf's JSON: set fields only, by JSON name; 64-bit integers as strings,
 * bytes in base64, enum values by name.
 */
export function toJson<D extends DescMessage>(
  schema: D,
  message: MessageShape<D>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const m = message as unknown as Record<string, unknown>;
  for (const f of schema.fields) {
    if (!isFieldSet(message, f)) continue;
    const v = m[f.localName];
    out[f.jsonName] = f.repeated ? (v as unknown[]).map((x) => jsonValue(f, x)) : jsonValue(f, v);
  }
  return out;
}
