/**
 * Regenerates `proto/gen/*_pb.ts` from `proto/*.proto`: for each message a TypeScript type and
 * a schema table for src/images/protobuf.ts, for each enum a TypeScript enum and its names.
 *
 * protoc (Debian `protobuf-compiler`) parses the .proto files into a FileDescriptorSet; the
 * protobuf-es package reads that here, at generation time only, for the names it gives fields
 * and enum values (the properties the code uses). The set is kept as
 * `proto/gen/descriptors.binpb`, for the unit test that checks our codec against protobuf-es.
 *
 * Usage: `deno task proto [--check]` (`--check` compares instead of writing, and fails when the
 * committed files do not match the .proto files)
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  createFileRegistry,
  type DescEnum,
  type DescField,
  type DescFile,
  type DescMessage,
  fromBinary,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorSetSchema, type SourceCodeInfo_Location } from "@bufbuild/protobuf/wkt";

const root = fileURLToPath(new URL("..", import.meta.url));
const protoDir = join(root, "proto");
const outDir = join(protoDir, "gen");

const check = Deno.args.includes("--check");
const stale: string[] = [];
/** Writes `path`, or with --check notes it when what it holds differs. */
function put(path: string, data: Uint8Array): void {
  if (!check) return Deno.writeFileSync(path, data);
  let now: Uint8Array | undefined;
  try {
    now = Deno.readFileSync(path);
  } catch {
    // missing: stale
  }
  if (!now || now.length !== data.length || now.some((b, i) => b !== data[i])) stale.push(path);
}

const sources = [...Deno.readDirSync(protoDir)]
  .filter((e) => e.isFile && e.name.endsWith(".proto"))
  .map((e) => e.name)
  .sort();
const tmp = await Deno.makeTempFile({ suffix: ".binpb" });
try {
  const out = await new Deno.Command("protoc", {
    args: ["--include_source_info", `--descriptor_set_out=${tmp}`, `-I${protoDir}`, ...sources],
    stdout: "inherit",
    stderr: "inherit",
  }).output().catch((e) => {
    throw new Error(`Cannot run protoc: ${e.message} (install Debian's protobuf-compiler)`);
  });
  if (!out.success) Deno.exit(out.code || 1);
  const set = fromBinary(FileDescriptorSetSchema, Deno.readFileSync(tmp));
  const registry = createFileRegistry(set);
  for (const f of set.file) {
    const text = emit(registry.getFile(f.name)!);
    put(join(outDir, tsName(f.name)), new TextEncoder().encode(text));
  }
  for (const f of set.file) f.sourceCodeInfo = undefined;
  // (Not compared: another protoc may encode the same descriptors otherwise.)
  if (!check) put(join(outDir, "descriptors.binpb"), toBinary(FileDescriptorSetSchema, set));
  if (check && stale.length) {
    console.error(`proto/gen/ is not what deno task proto makes: ${stale.join(", ")}`);
    Deno.exitCode = 1;
  } else if (check) console.log("proto/gen/ matches the .proto files");
  else console.log(`generated ${sources.length} files in proto/gen/`);
} finally {
  Deno.removeSync(tmp);
}

function tsName(protoFile: string): string {
  return protoFile.replace(/\.proto$/, "_pb.ts");
}

/** The name a type has in TypeScript: its full name, nesting joined by "_" (core_entry_march). */
function nameOf(d: DescMessage | DescEnum): string {
  return d.typeName.replaceAll(".", "_");
}

/** The leading comment protoc kept for the element at `path`, as TSDoc lines. */
function docAt(file: DescFile, path: number[], indent: string, extra: string[] = []): string {
  const loc = file.proto.sourceCodeInfo?.location.find((l: SourceCodeInfo_Location) =>
    l.path.length === path.length && l.path.every((p, i) => p === path[i])
  );
  const text = (loc?.leadingComments ?? "").replace(/\n$/, "").split("\n").map((l) =>
    l.replace(/^ /, "")
  ).filter((l, i, a) => l !== "" || (i > 0 && i < a.length - 1));
  const lines = [...text, ...(text.length && extra.length ? [""] : []), ...extra];
  if (lines.length === 0) return "";
  return `${indent}/**\n${
    lines.map((l) => `${indent} *${l ? " " + l.replaceAll("*/", "*\\/") : ""}\n`).join("")
  }${indent} */\n`;
}

function tsType(f: DescField, file: DescFile, imports: Map<string, Set<string>>): string {
  const named = (d: DescMessage | DescEnum) => {
    if (d.file !== file) {
      const from = `./${tsName(d.file.proto.name)}`;
      if (!imports.has(from)) imports.set(from, new Set());
      imports.get(from)!.add(d.kind === "message" ? `type ${nameOf(d)}` : nameOf(d));
      if (d.kind === "message") imports.get(from)!.add(`${nameOf(d)}Schema`);
    }
    return nameOf(d);
  };
  const scalar = (t: number) => {
    switch (t) {
      case 3:
      case 4:
      case 6:
      case 16:
      case 18:
        return "bigint";
      case 8:
        return "boolean";
      case 9:
        return "string";
      case 12:
        return "Uint8Array";
      default:
        return "number";
    }
  };
  const one = f.message ? named(f.message) : f.enum ? named(f.enum) : scalar(f.proto.type);
  if (f.fieldKind === "list") return `${one}[]`;
  if (f.fieldKind === "message") return `${one} | undefined`;
  return one;
}

function literal(v: unknown): string {
  if (typeof v === "bigint") return `${v}n`;
  if (v instanceof Uint8Array) return `new Uint8Array([${[...v].join(", ")}])`;
  return JSON.stringify(v);
}

/** The default a generated table gives a field: undefined when it is the type's zero. */
function defaultOf(f: DescField): string | undefined {
  if (f.fieldKind !== "scalar" && f.fieldKind !== "enum") return undefined;
  const v = f.getDefaultValue() ?? (f.fieldKind === "enum" ? f.enum.values[0].number : undefined);
  if (v === undefined || v === 0 || v === 0n || v === false || v === "") return undefined;
  if (v instanceof Uint8Array && v.length === 0) return undefined;
  return literal(v);
}

function emit(file: DescFile): string {
  const imports = new Map<string, Set<string>>();
  const body: string[] = [];
  const walkEnum = (e: DescEnum, path: number[]) => {
    const name = nameOf(e);
    const values = e.values.map((v, i) =>
      `${docAt(file, [...path, 2, i], "  ")}  ${v.localName} = ${v.number},\n`
    ).join("");
    body.push(
      `${
        docAt(file, path, "", [`From enum ${e.typeName}.`])
      }export enum ${name} {\n${values}}\n\n` +
        `/** The enum ${e.typeName}, for JSON. */\n` +
        `export const ${name}Schema: DescEnum = /*@__PURE__*/\n  enumType(${
          JSON.stringify(e.typeName)
        }, [${e.values.map((v) => `[${v.number}, ${JSON.stringify(v.name)}]`).join(", ")}]);\n`,
    );
  };
  const walkMessage = (m: DescMessage, path: number[]) => {
    const name = nameOf(m);
    const fields = m.fields.map((f, i) => {
      const label = f.proto.label === 3 ? "" : f.proto.label === 2 ? "required " : "optional ";
      const type = f.message ? f.message.typeName : f.enum ? f.enum.typeName : "";
      const proto = `${label}${type || protoScalar(f.proto.type)} ${f.name} = ${f.number}`;
      const doc = docAt(file, [...path, 2, i], "  ", [`Field: \`${proto}\`.`]);
      const opt = f.fieldKind === "message" ? "?" : "";
      return `${doc}  ${f.localName}${opt}: ${tsType(f, file, imports)};\n`;
    }).join("\n");
    const rows = m.fields.map((f) => {
      const labelCode = f.proto.label === 3
        ? (f.fieldKind === "list" && f.packed ? 4 : 3)
        : f.proto.label;
      const ref = f.message
        ? `() => ${nameOf(f.message)}Schema`
        : f.enum
        ? `${nameOf(f.enum)}Schema`
        : undefined;
      const def = defaultOf(f);
      const cells = [
        f.number,
        JSON.stringify(f.name),
        JSON.stringify(f.localName),
        JSON.stringify(f.jsonName),
        f.proto.type,
        labelCode,
        ...(ref || def ? [ref ?? "null"] : []),
        ...(def ? [def] : []),
      ];
      return `    [${cells.join(", ")}],\n`;
    }).join("");
    body.push(
      `${docAt(file, path, "", [`From message ${m.typeName}.`])}export type ${name} = Message<${
        JSON.stringify(m.typeName)
      }> & {\n${fields}};\n\n` +
        `/** The message ${m.typeName}: \`create(${name}Schema)\` makes one. */\n` +
        `export const ${name}Schema: DescMessage<${name}> = /*@__PURE__*/\n  messageType<${name}>(${
          JSON.stringify(m.typeName)
        }, () => [\n${rows}  ]);\n`,
    );
    m.nestedMessages.forEach((n, i) => walkMessage(n, [...path, 3, i]));
    m.nestedEnums.forEach((e, i) => walkEnum(e, [...path, 4, i]));
  };
  file.messages.forEach((m, i) => walkMessage(m, [4, i]));
  file.enums.forEach((e, i) => walkEnum(e, [5, i]));
  const syntax = file.proto.sourceCodeInfo?.location.find((l) =>
    l.path.length === 1 && l.path[0] === 12
  );
  const header = [...(syntax?.leadingDetachedComments ?? []), syntax?.leadingComments ?? ""]
    .join("").split("\n").filter((l) => l.trim() !== "").map((l) => `//${l}\n`).join("");
  const runtime = ["type DescEnum", "type DescMessage", "enumType", "type Message", "messageType"]
    .filter((n) => body.some((b) => b.includes(n.replace("type ", ""))));
  const lines = [
    `// Generated by scripts/proto.ts from ${file.proto.name} (syntax ${
      file.proto.syntax || "proto2"
    }): do not edit.\n`,
    header,
    `import { ${runtime.join(", ")} } from "../../src/images/protobuf.ts";\n`,
    ...[...imports].map(([from, names]) =>
      `import { ${[...names].sort().join(", ")} } from "${from}";\n`
    ),
    "\n",
    body.join("\n"),
  ];
  return lines.join("");
}

function protoScalar(t: number): string {
  return [
    "",
    "double",
    "float",
    "int64",
    "uint64",
    "int32",
    "fixed64",
    "fixed32",
    "bool",
    "string",
    "group",
    "message",
    "bytes",
    "uint32",
    "enum",
    "sfixed32",
    "sfixed64",
    "sint32",
    "sint64",
  ][t];
}
