/**
 * Minimal assertions (JSR's @std/assert is unreachable here); node:assert underneath.
 *
 * @module
 */
import nodeAssert from "node:assert/strict";

/** Asserts `cond` is truthy. */
export function assert(cond: unknown, msg?: string): asserts cond {
  nodeAssert.ok(cond, msg);
}

/** Asserts deep equality. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  nodeAssert.deepStrictEqual(actual, expected, msg);
}

/** Asserts `text` matches `re`. */
export function assertMatch(text: string, re: RegExp, msg?: string): void {
  nodeAssert.match(text, re, msg);
}

/** Asserts `fn` throws an error whose message matches `re`. */
export function assertThrows(fn: () => unknown, re: RegExp): void {
  nodeAssert.throws(fn, (e: unknown) => re.test((e as Error).message));
}

/** Asserts `fn` rejects with an error of class `cls` whose message matches `re`. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  cls: new (...args: never[]) => Error,
  re: RegExp,
): Promise<void> {
  await nodeAssert.rejects(fn, (e: unknown) => e instanceof cls && re.test((e as Error).message));
}
