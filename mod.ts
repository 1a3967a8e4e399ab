/**
 * deno-criu: checkpoint/restore of Linux processes, with CRIU-compatible images.
 *
 * ```ts
 * import { dump, restore } from "./mod.ts";
 * await dump({ pid: 1234, imagesDir: "/tmp/ckpt" });
 * const { pid } = await restore({ imagesDir: "/tmp/ckpt", detach: true });
 * ```
 *
 * @module
 */
export { dump, type DumpResult, IMAGES_VERSION } from "./src/dump/dump.ts";
export type { DumpOptions, DumpStats } from "./src/dump/context.ts";
export { UnsupportedError } from "./src/dump/files.ts";
export {
  restore,
  type RestoreOptions,
  type RestoreResult,
  type RestoreStats,
} from "./src/restore/restore.ts";
export { RestoreError } from "./src/restore/files.ts";
export { PidTakenError } from "./src/restore/helper.ts";
export { VdsoMismatchError } from "./src/restore/memory.ts";
export { type DumpImages, readDump, type TaskImages } from "./src/restore/images.ts";
export {
  checkFeatures,
  type CheckResult,
  type Feature,
  featureNamed,
  FEATURES,
} from "./src/check.ts";
export {
  headerOf,
  type ImageEntry,
  ImageError,
  ImageWriter,
  MAGIC,
  type MagicName,
  readImage,
  type ReadOptions,
} from "./src/images/image.ts";
export { type ImageKind, imageKind, showDir, showImage } from "./src/images/show.ts";
export { LOG, Logger } from "./src/log.ts";
export {
  DEFAULT_LOCK_METHOD,
  LOCK_METHODS,
  type LockMethod,
  NetworkLockError,
} from "./src/net/netlock.ts";
export { readTcpStream, tcpStreamImageName } from "./src/images/tcp_stream.ts";
export type { TcpStream } from "./src/net/tcp_repair.ts";
export { Errno } from "./src/syscalls/errno.ts";
export { NoSuchTaskError } from "./src/tree/proc.ts";
export { SeizeError } from "./src/tree/seize.ts";
export { main } from "./src/cli/commands.ts";
export {
  CriuClient,
  type CriuClientOptions,
  CriuRpcError,
  type CriuVersion,
  type NotifyHandler,
  type RpcOptions,
} from "./src/rpc/client.ts";
