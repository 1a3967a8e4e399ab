/**
 * Regenerates `proto/gen/*_pb.ts` from `proto/*.proto`.
 *
 * protoc (Debian `protobuf-compiler`) drives the protobuf-es plugin, which runs under Deno
 * through a two-line shim because it wants a newer Node than the machine has.
 *
 * Usage: `deno task proto`
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const PROTOC_GEN_ES = "npm:@bufbuild/protoc-gen-es@2.17.0";
const root = fileURLToPath(new URL("..", import.meta.url));
const protoDir = join(root, "proto");
const outDir = join(protoDir, "gen");

const shimDir = await Deno.makeTempDir({ prefix: "protoc-gen-es-" });
const shim = join(shimDir, "protoc-gen-es");
await Deno.writeTextFile(
  shim,
  `#!/bin/sh\nexec "${Deno.execPath()}" run --quiet --allow-read --allow-env ${PROTOC_GEN_ES} "$@"\n`,
  { mode: 0o755 },
);
try {
  const sources = [...Deno.readDirSync(protoDir)]
    .filter((e) => e.isFile && e.name.endsWith(".proto"))
    .map((e) => e.name)
    .sort();
  const out = await new Deno.Command("protoc", {
    args: [
      `--plugin=protoc-gen-es=${shim}`,
      `--es_out=${outDir}`,
      "--es_opt=target=ts,import_extension=ts",
      `-I${protoDir}`,
      ...sources,
    ],
    stdout: "inherit",
    stderr: "inherit",
  }).output().catch((e) => {
    throw new Error(`Cannot run protoc: ${e.message} (install Debian's protobuf-compiler)`);
  });
  if (!out.success) Deno.exit(out.code || 1);
  console.log(`generated ${sources.length} files in proto/gen/`);
} finally {
  await Deno.remove(shimDir, { recursive: true });
}
