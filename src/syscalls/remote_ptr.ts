/**
 * Addresses in another task's address space: a distinct type, never a bare bigint.
 *
 * @module
 */

declare const REMOTE: unique symbol;

/** An address in a traced task's address space. */
export type RemotePtr = bigint & { readonly [REMOTE]: true };

/** Marks a value as an address in another task. */
export function remotePtr(addr: bigint | number): RemotePtr {
  return BigInt(addr) as RemotePtr;
}

/** `ptr + bytes`, still remote. */
export function remoteAdd(ptr: RemotePtr, bytes: bigint | number): RemotePtr {
  return (ptr + BigInt(bytes)) as RemotePtr;
}
