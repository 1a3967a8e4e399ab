/**
 * `--network-lock` methods, apart from the locking code (the options parser needs only these).
 *
 * @module
 */

/** How the network is locked (`--network-lock`). */
export type LockMethod = "iptables" | "nftables" | "skip";

/** The methods by their number in inventory.img (CRIU's NETWORK_LOCK_* order). */
export const LOCK_METHODS: readonly LockMethod[] = ["iptables", "nftables", "skip"];

/** The default method. */
export const DEFAULT_LOCK_METHOD: LockMethod = "nftables";
