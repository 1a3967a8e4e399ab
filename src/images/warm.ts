/**
 * The image encoders made before they are needed. protobuf-es builds each message type's
 * encoder the first time it meets the type (a core entry: about 4 ms here); a dump after
 * pre-dumps writes every image inside its frozen time, so it has them built before the freeze,
 * while it waits for its worker. Each type is encoded once, filled with zero values in every
 * field it has (nested types one of each), which builds them all.
 *
 * @module
 */
import { create, type DescMessage, type Message, ScalarType, toBinary } from "@bufbuild/protobuf";
import { core_entrySchema, task_kobj_ids_entrySchema } from "../../proto/gen/core_pb.ts";
import { mm_entrySchema, pagemap_entrySchema, pagemap_headSchema } from "../../proto/gen/mm_pb.ts";
import {
  fdinfo_entrySchema,
  file_entrySchema,
  fs_entrySchema,
  pipe_data_entrySchema,
} from "../../proto/gen/files_pb.ts";
import {
  inventory_entrySchema,
  pstree_entrySchema,
  seccomp_entrySchema,
  stats_entrySchema,
  timens_entrySchema,
} from "../../proto/gen/misc_pb.ts";

/** The types every dump writes. */
const DUMP_TYPES: DescMessage[] = [
  core_entrySchema,
  task_kobj_ids_entrySchema,
  mm_entrySchema,
  pagemap_headSchema,
  pagemap_entrySchema,
  file_entrySchema,
  fdinfo_entrySchema,
  fs_entrySchema,
  pipe_data_entrySchema,
  pstree_entrySchema,
  inventory_entrySchema,
  seccomp_entrySchema,
  timens_entrySchema,
  stats_entrySchema,
];

/** Builds the encoders of the types a dump writes (see the module's doc). */
export function warmDumpEncoders(): void {
  for (const type of DUMP_TYPES) toBinary(type, filled(type, 0));
}

function zero(t: ScalarType): unknown {
  switch (t) {
    case ScalarType.STRING:
      return "";
    case ScalarType.BYTES:
      return new Uint8Array(0);
    case ScalarType.BOOL:
      return false;
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 0n;
    default:
      return 0;
  }
}

/** A message of `type` with every field set (oneofs left out), nested ones `depth` deep. */
function filled(type: DescMessage, depth: number): Message {
  const message = create(type);
  const m = message as unknown as Record<string, unknown>;
  for (const f of type.fields) {
    if (f.oneof) continue;
    if (f.fieldKind === "scalar") m[f.localName] = zero(f.scalar);
    else if (f.fieldKind === "enum") m[f.localName] = f.enum.values[0].number;
    else if (depth >= 6) continue;
    else if (f.fieldKind === "message") m[f.localName] = filled(f.message, depth + 1);
    else if (f.fieldKind === "list" && f.listKind === "message") {
      m[f.localName] = [filled(f.message, depth + 1)];
    } else if (f.fieldKind === "list" && f.listKind === "scalar") {
      m[f.localName] = [zero(f.scalar)];
    }
  }
  return message;
}
