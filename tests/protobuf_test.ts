/**
 * Our proto2 codec (src/images/protobuf.ts) against protobuf-es, the library it replaced, on
 * every message type of proto/*.proto: random messages (seeded) must encode to the same bytes,
 * decode each other's bytes to the same values and print the same JSON. protobuf-es reads the
 * types from the descriptor set that `deno task proto` keeps (proto/gen/descriptors.binpb).
 */
import * as es from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { assert, assertEquals, assertThrows } from "./assert.ts";
import {
  clearField,
  clone,
  create,
  type DescField,
  type DescMessage,
  fromBinary,
  isFieldSet,
  type Message,
  messageType,
  ScalarType,
  toBinary,
  toJson,
} from "../src/images/protobuf.ts";
import * as core from "../proto/gen/core_pb.ts";
import * as files from "../proto/gen/files_pb.ts";
import * as misc from "../proto/gen/misc_pb.ts";
import * as mm from "../proto/gen/mm_pb.ts";
import * as rpc from "../proto/gen/rpc_pb.ts";
import * as tcp from "../proto/gen/tcp_stream_pb.ts";

const registry = es.createFileRegistry(
  es.fromBinary(
    FileDescriptorSetSchema,
    Deno.readFileSync(new URL("../proto/gen/descriptors.binpb", import.meta.url)),
  ),
);

const ours: DescMessage[] = [core, files, misc, mm, rpc, tcp].flatMap((m) =>
  Object.values(m).filter((v): v is DescMessage =>
    typeof v === "object" && v !== null && (v as DescMessage).kind === "message"
  )
);

/** A small seeded generator (xorshift32), so that a failure repeats. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  const big = (bits: number) => {
    let v = 0n;
    for (let i = 0; i < bits; i += 32) v = (v << 32n) | BigInt(next());
    return BigInt.asUintN(bits, v);
  };
  const pick = <T>(a: T[]) => a[next() % a.length];
  return { next, big, pick };
}

type Rng = ReturnType<typeof rng>;

function scalar(r: Rng, f: DescField): unknown {
  const edge = r.next() % 4 === 0;
  switch (f.type) {
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return edge ? r.pick([0, 1, 127, 128, 0xffffffff]) : r.next();
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return edge ? r.pick([0, -1, 2 ** 31 - 1, -(2 ** 31)]) : r.next() | 0;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return edge ? r.pick([0n, 1n, 2n ** 64n - 1n, 2n ** 32n]) : r.big(r.pick([8, 32, 40, 64]));
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return edge
        ? r.pick([0n, -1n, 2n ** 63n - 1n, -(2n ** 63n)])
        : BigInt.asIntN(64, r.big(r.pick([8, 33, 64])));
    case ScalarType.BOOL:
      return r.next() % 2 === 0;
    case ScalarType.STRING:
      return r.pick(["", "a", "/tmp/ü dir/ファイル", "x".repeat(200), "\0nul"]);
    case ScalarType.BYTES:
      return Uint8Array.from({ length: r.pick([0, 1, 7, 300]) }, () => r.next() & 0xff);
    case ScalarType.FLOAT:
      return Math.fround(r.pick([0, 1.5, -2.25, 1e10]));
    case ScalarType.DOUBLE:
      return r.pick([0, 1.5, -2.25, 1e300]);
  }
  throw new Error(`type ${f.type}`);
}

function value(r: Rng, f: DescField, depth: number): unknown {
  if (f.message) return random(r, f.message, depth + 1);
  if (f.enum) {
    const es = registry.getEnum(f.enum.typeName)!;
    return r.pick(es.values).number;
  }
  return scalar(r, f);
}

/** A message of `schema` with its required fields and some of the others set. */
function random(r: Rng, schema: DescMessage, depth = 0): Message {
  const init: Record<string, unknown> = {};
  for (const f of schema.fields) {
    if (!f.required && (depth > 3 || r.next() % 3 === 0)) continue;
    init[f.localName] = f.repeated
      ? Array.from({ length: r.next() % 4 }, () => value(r, f, depth))
      : value(r, f, depth);
  }
  return create(schema, init as never);
}

Deno.test("every message type encodes as protobuf-es does, and each reads the other's bytes to the same values and JSON", () => {
  assert(ours.length > 100, `only ${ours.length} message types found`);
  const r = rng(0x5eed);
  for (const schema of ours) {
    const theirs = registry.getMessage(schema.typeName);
    assert(theirs, `protobuf-es does not know ${schema.typeName}`);
    assertEquals(
      schema.fields.map((f) => [f.number, f.localName, f.jsonName, f.repeated]),
      theirs.fields.map((f) => [f.number, f.localName, f.jsonName, f.fieldKind === "list"]),
      schema.typeName,
    );
    for (let i = 0; i < 25; i++) {
      const m = random(r, schema);
      const bytes = toBinary(schema, m);
      const theirMessage = es.create(theirs, m as never);
      assertEquals(bytes, es.toBinary(theirs, theirMessage), `${schema.typeName} #${i}`);
      const back = fromBinary(schema, bytes);
      const theirBack = es.fromBinary(theirs, bytes);
      assertEquals<unknown>(
        toJson(schema, back),
        es.toJson(theirs, theirBack),
        `${schema.typeName} #${i}`,
      );
      assertEquals(toJson(schema, m), toJson(schema, back));
      assertEquals(toBinary(schema, back), bytes);
      assertEquals(toBinary(schema, clone(schema, back)), bytes);
    }
  }
});

Deno.test("proto2 presence: defaults read through, set only when given, cleared back to the default; a required field unset is refused", () => {
  const f = create(files.fown_entrySchema);
  const s = create(files.file_lock_entrySchema);
  assert(!isFieldSet(s, files.file_lock_entrySchema.field.pid));
  const reg = create(files.reg_file_entrySchema, { mntId: 5 });
  assert(isFieldSet(reg, files.reg_file_entrySchema.field.mntId));
  clearField(reg, files.reg_file_entrySchema.field.mntId);
  assertEquals(reg.mntId, -1, "[default = -1]");
  assert(!isFieldSet(reg, files.reg_file_entrySchema.field.mntId));
  assertThrows(() => toBinary(files.fown_entrySchema, f), /required field not set/);
});

Deno.test("a packed list is read as well as an unpacked one, and fields a type does not know are written back as read", () => {
  // creds_entry.cap_inh = 9, repeated uint32: packed, tag (9 << 3 | 2), 4 bytes: 1, 300, 5.
  const creds = random(rng(7), core.creds_entrySchema, 4) as core.creds_entry; // required only
  const base = toBinary(core.creds_entrySchema, creds);
  const packed = new Uint8Array([...base, 9 << 3 | 2, 4, 1, 0xac, 0x02, 5]);
  assertEquals(fromBinary(core.creds_entrySchema, packed).capInh, [1, 300, 5]);
  const blank = messageType<Message>("blank", () => []);
  const kept = fromBinary(blank, base);
  assertEquals(
    kept.$unknown?.length,
    core.creds_entrySchema.fields.filter((f) => f.required).length,
  );
  assertEquals(toBinary(blank, kept), base);
  assertThrows(
    () => fromBinary(core.creds_entrySchema, packed.subarray(0, packed.length - 1)),
    /premature end/,
  );
});
