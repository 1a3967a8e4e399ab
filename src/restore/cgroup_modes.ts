/**
 * `--manage-cgroups` modes, apart from the cgroup code (the options parser needs only these).
 *
 * @module
 */

/** `--manage-cgroups` modes. */
export type CgroupMode = "none" | "props" | "soft" | "full" | "strict" | "ignore";

/** The modes, as the option takes them. */
export const CGROUP_MODES: readonly CgroupMode[] = [
  "none",
  "props",
  "soft",
  "full",
  "strict",
  "ignore",
];
