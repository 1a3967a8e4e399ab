/**
 * getopt_long as glibc implements it, the parser criu's command line and config files go
 * through: options and operands mixed (operands are collected in order), `--` ends options,
 * long options match by unambiguous prefix, short options group (`-Rj`) and take their values
 * attached or from the next word, optional values only attached.
 *
 * @module
 */

/** Whether an option takes a value: never, always, or only attached (`-v4`, `--verbosity=4`). */
export type ArgKind = "none" | "required" | "optional";

/** One long option (with its short letter, if it has one). */
export interface LongOption {
  name: string;
  short?: string;
  arg: ArgKind;
}

/** One option found in argv. */
export interface ParsedOption {
  /** The option as declared. */
  option: LongOption;
  /** Its value; undefined when none was given. */
  value?: string;
  /** How it was written (`--tcp-est`, `-t`), for messages. */
  as: string;
}

/** A malformed command line, worded as glibc's getopt words it. */
export class GetoptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GetoptError";
  }
}

/** Options and operands of `argv` (without the program name). */
export function getoptLong(
  argv: readonly string[],
  options: readonly LongOption[],
): { options: ParsedOption[]; operands: string[] } {
  const byShort = new Map(options.filter((o) => o.short).map((o) => [o.short!, o]));
  const found: ParsedOption[] = [];
  const operands: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const inline = eq < 0 ? undefined : a.slice(eq + 1);
      const option = matchLong(name, options);
      const as = `--${option.name}`;
      if (option.arg === "none") {
        if (inline !== undefined) {
          throw new GetoptError(`option '${as}' doesn't allow an argument`);
        }
        found.push({ option, as });
      } else if (option.arg === "required") {
        const value = inline ?? argv[++i];
        if (value === undefined) throw new GetoptError(`option '${as}' requires an argument`);
        found.push({ option, value, as });
      } else {
        found.push({ option, value: inline, as });
      }
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const c = a[j];
        const option = byShort.get(c);
        if (!option) throw new GetoptError(`invalid option -- '${c}'`);
        const as = `-${c}`;
        if (option.arg === "none") {
          found.push({ option, as });
          continue;
        }
        const rest = a.slice(j + 1);
        if (option.arg === "required") {
          const value = rest || argv[++i];
          if (value === undefined) {
            throw new GetoptError(`option requires an argument -- '${c}'`);
          }
          found.push({ option, value, as });
        } else {
          found.push({ option, value: rest || undefined, as });
        }
        break;
      }
      continue;
    }
    operands.push(a);
  }
  return { options: found, operands };
}

/** The option `name` stands for: itself, or the one option it is a prefix of. */
function matchLong(name: string, options: readonly LongOption[]): LongOption {
  const exact = options.find((o) => o.name === name);
  if (exact) return exact;
  const candidates = name ? options.filter((o) => o.name.startsWith(name)) : [];
  if (candidates.length === 1) return candidates[0];
  if (candidates.length === 0) throw new GetoptError(`unrecognized option '--${name}'`);
  throw new GetoptError(
    `option '--${name}' is ambiguous; possibilities: ${
      candidates.map((o) => `'--${o.name}'`).join(" ")
    }`,
  );
}
