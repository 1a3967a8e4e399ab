/**
 * The FFI layer: the only code that knows libc symbols, syscall numbers and struct offsets.
 *
 * @module
 */
export { Errno, errnoName, orErrno, unwrap } from "./errno.ts";
export * as errno from "./errno.ts";
export { addressOf, cString, lastErrno, libc, strerror } from "./ffi.ts";
export * from "./layout.ts";
export * from "./process.ts";
export * from "./ptrace.ts";
export { remoteAdd, type RemotePtr, remotePtr } from "./remote_ptr.ts";
export { NR } from "./syscall_numbers.ts";
export { cpuid, type XstateComponent, xstateLayout } from "./cpuid.ts";
export * from "./tty.ts";
export * from "./ipc.ts";
export * from "./mount.ts";
export * from "./tun.ts";
export { relatedNamespace } from "./nsfs.ts";
