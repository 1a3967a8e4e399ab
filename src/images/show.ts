/**
 * The project's own image viewer (`criu show`): decodes CRIU images with our .proto definitions
 * into crit-like JSON, `{ "magic": "CORE", "entries": [...] }`.
 *
 * @module
 */
import { tcp_stream_entrySchema } from "../../proto/gen/tcp_stream_pb.ts";
import { type DescMessage, toJson } from "./protobuf.ts";
import { basename, join } from "../util/path.ts";
import { core_entrySchema, task_kobj_ids_entrySchema } from "../../proto/gen/core_pb.ts";
import {
  fdinfo_entrySchema,
  file_entrySchema,
  fs_entrySchema,
  pipe_data_entrySchema,
  sk_packet_entrySchema,
  tty_data_entrySchema,
  tty_info_entrySchema,
} from "../../proto/gen/files_pb.ts";
import {
  inventory_entrySchema,
  ipc_sem_entrySchema,
  ipc_shm_entrySchema,
  ipc_var_entrySchema,
  pstree_entrySchema,
  seccomp_entrySchema,
  stats_entrySchema,
  timens_entrySchema,
  userns_entrySchema,
  utsns_entrySchema,
} from "../../proto/gen/misc_pb.ts";
import { mm_entrySchema, pagemap_entrySchema, pagemap_headSchema } from "../../proto/gen/mm_pb.ts";
import {
  checkHeader,
  decodeEntries,
  ImageError,
  type MagicName,
  readHeadEntry,
  readImageBytes,
} from "./image.ts";

/** How to read one kind of image file. */
export interface ImageKind {
  type: MagicName;
  schema: DescMessage;
  /** Schema of the first entry when it differs (pagemap's head). */
  head?: DescMessage;
  /** Entries carry a raw payload of this many bytes. */
  payload?: (m: Record<string, unknown>) => number;
}

/** Image kinds by file-name pattern. */
export const IMAGE_KINDS: [RegExp, ImageKind][] = [
  [/^inventory\.img$/, { type: "INVENTORY", schema: inventory_entrySchema }],
  [/^pstree\.img$/, { type: "PSTREE", schema: pstree_entrySchema }],
  [/^core-\d+\.img$/, { type: "CORE", schema: core_entrySchema }],
  [/^ids-\d+\.img$/, { type: "IDS", schema: task_kobj_ids_entrySchema }],
  [/^mm-\d+\.img$/, { type: "MM", schema: mm_entrySchema }],
  [/^pagemap-\d+\.img$/, {
    type: "PAGEMAP",
    schema: pagemap_entrySchema,
    head: pagemap_headSchema,
  }],
  [/^fs-\d+\.img$/, { type: "FS", schema: fs_entrySchema }],
  [/^files\.img$/, { type: "FILES", schema: file_entrySchema }],
  [/^fdinfo-\d+\.img$/, { type: "FDINFO", schema: fdinfo_entrySchema }],
  [
    /^pipes-data\.img$/,
    { type: "PIPES_DATA", schema: pipe_data_entrySchema, payload: (m) => Number(m.bytes) },
  ],
  [/^tty-info\.img$/, { type: "TTY_INFO", schema: tty_info_entrySchema }],
  [/^tty-data\.img$/, { type: "TTY_DATA", schema: tty_data_entrySchema }],
  [
    /^sk-queues\.img$/,
    { type: "SK_QUEUES", schema: sk_packet_entrySchema, payload: (m) => Number(m.length) },
  ],
  [/^pagemap-shmem-\d+\.img$/, {
    type: "PAGEMAP",
    schema: pagemap_entrySchema,
    head: pagemap_headSchema,
  }],
  [/^seccomp\.img$/, { type: "SECCOMP", schema: seccomp_entrySchema }],
  [/^utsns-\d+\.img$/, { type: "UTSNS", schema: utsns_entrySchema }],
  [/^userns-\d+\.img$/, { type: "USERNS", schema: userns_entrySchema }],
  [
    /^ipcns-shm-\d+\.img$/,
    {
      type: "IPCNS_SHM",
      schema: ipc_shm_entrySchema,
      payload: (m) => Math.ceil(Number(m.size) / 4) * 4,
    },
  ],
  [/^ipcns-var-\d+\.img$/, { type: "IPC_VAR", schema: ipc_var_entrySchema }],
  [
    /^ipcns-sem-\d+\.img$/,
    {
      type: "IPCNS_SEM",
      schema: ipc_sem_entrySchema,
      payload: (m) => Math.ceil(Number(m.nsems) * 2 / 8) * 8,
    },
  ],
  [/^timens-\d+\.img$/, { type: "TIMENS", schema: timens_entrySchema }],
  [
    /^tcp-stream-[0-9a-f]+\.img$/,
    {
      type: "TCP_STREAM",
      schema: tcp_stream_entrySchema,
      payload: (m) => Number(m.inqLen) + Number(m.outqLen),
    },
  ],
  [/^stats-(dump|restore)$/, { type: "STATS", schema: stats_entrySchema }],
];

/** The kind of an image file by its name, or undefined for raw/unknown files. */
export function imageKind(file: string): ImageKind | undefined {
  return IMAGE_KINDS.find(([re]) => re.test(basename(file)))?.[1];
}

/** Decodes one image file to crit-like JSON. */
export function showImage(path: string): { magic: string; entries: unknown[] } {
  const kind = imageKind(path);
  if (!kind) throw new ImageError(`Unknown image file ${path}`);
  const bytes = readImageBytes(path);
  let off = checkHeader(path, bytes, kind.type);
  const entries: unknown[] = [];
  if (kind.head) {
    const head = readHeadEntry(path, bytes, off, kind.head);
    entries.push(toJson(kind.head, head.message));
    off = head.next;
  }
  for (
    const e of decodeEntries(path, bytes, off, kind.schema, {
      payloadSize: kind.payload as ((m: unknown) => number) | undefined,
    })
  ) {
    const json = toJson(kind.schema, e.message) as Record<string, unknown>;
    if (e.payload) json.payloadBytes = e.payload.length;
    entries.push(json);
  }
  return { magic: kind.type, entries };
}

/** Decodes every known image in a directory, by file name. */
export function showDir(dir: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  for (const name of names) {
    if (imageKind(name)) out[name] = showImage(join(dir, name));
    else if (/^pages-\d+\.img$/.test(name)) {
      out[name] = { raw: true, bytes: Deno.statSync(join(dir, name)).size };
    }
  }
  return out;
}
