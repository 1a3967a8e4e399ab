/**
 * The `criu` commands: parse, run, report. Every failure becomes one line on stderr (and in the
 * log) and exit code 1; a stack trace is printed only at verbosity 4.
 *
 * @module
 */
import { VERSION, versionText } from "../version.ts";
import type { RestoreStats } from "../restore/restore.ts";
import type { DumpStats } from "../dump/context.ts";
import { checkOptions, type CriuOpts, parseOptions, UsageError } from "./options.ts";
import { logOptionsError } from "./dirs.ts";
import { load } from "../util/load.ts";
import { USAGE } from "./usage.ts";
import { close } from "../syscalls/mod.ts";
import { reapInBackground } from "../tree/reaper.ts";

/** Version printed by `criu --version`. */
export { VERSION };

function out(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text.endsWith("\n") ? text : text + "\n"));
}

/** The dump statistics block `--display-stats` prints, as criu prints it. */
export function formatDumpStats(s: DumpStats): string {
  const n = (v: number) => `${v} (0x${v.toString(16)})`;
  return [
    "Displaying dump stats:",
    `Freezing time: ${Math.round(s.freezingUs)} us`,
    `Frozen time: ${Math.round(s.frozenUs)} us`,
    `Memory dump time: ${Math.round(s.memdumpUs)} us`,
    `Memory write time: ${Math.round(s.memwriteUs)} us`,
    `Memory pages scanned: ${n(s.pagesScanned)}`,
    `Memory pages skipped from parent: ${n(s.pagesSkippedParent)}`,
    `Memory pages written: ${n(s.pagesWritten)}`,
    `Lazy memory pages: ${n(s.pagesLazy)}`,
  ].join("\n");
}

/** The restore statistics block `--display-stats` prints, as criu prints it. */
export function formatRestoreStats(s: RestoreStats): string {
  const n = (v: number) => `${v} (0x${v.toString(16)})`;
  return [
    "Displaying restore stats:",
    `Pages compared: ${n(s.pagesCompared)}`,
    `Pages skipped COW: ${n(s.pagesSkippedCow)}`,
    `Pages restored: ${n(s.pagesRestored)}`,
    `Restore time: ${s.restoreUs} us`,
    `Forking time: ${s.forkingUs} us`,
  ].join("\n");
}

async function runCheck(o: CriuOpts): Promise<number> {
  const { checkFeatures, featureNamed, FEATURES } = await load<typeof import("../check.ts")>(
    "check.ts",
  );
  if (Deno.uid() !== 0) {
    throw new Error(
      "criu check needs root: dump and restore need CAP_SYS_ADMIN (ptrace, pagemap, map_files)",
    );
  }
  if (o.features.length) {
    // As criu: one feature (the last named) answers with its exit code.
    const feature = featureNamed(o.features.at(-1)!);
    const [r] = await checkFeatures([feature]);
    if (r.supported) {
      out(`${feature.name} is supported`);
      return 0;
    }
    throw new Error(
      `${feature.name} is not supported: ${feature.notOurs ?? `${feature.description} is missing`}`,
    );
  }
  const wanted = FEATURES.filter((f) =>
    f.category === "required" || f.category === "extra" && o.checkExtra ||
    f.category === "experimental" && o.checkExperimental
  );
  const results = await checkFeatures(wanted);
  let missing = false;
  for (const r of results) {
    if (r.supported) continue;
    if (r.feature.category === "required") {
      out(`Error: ${r.feature.name} is missing: ${r.feature.description}`);
      return 1;
    }
    // Features deno-criu does not use yet are named, not counted against the kernel.
    const why = r.feature.notOurs
      ? `not used by deno-criu: ${r.feature.notOurs}`
      : `missing: ${r.feature.description}`;
    Deno.stderr.writeSync(new TextEncoder().encode(`Warn: ${r.feature.name} is ${why}\n`));
    if (!r.feature.notOurs) missing = true;
  }
  if (missing) {
    out(
      "Looks good but some kernel features are missing\nwhich, depending on your process tree, " +
        "may cause\ndump or restore failure.",
    );
    return 1;
  }
  out("Looks good.");
  return 0;
}

async function runShow(o: CriuOpts): Promise<number> {
  const { showDir, showImage } = await load<typeof import("../images/show.ts")>(
    "images/show.ts",
  );
  const target = o.args[0] ?? o.imagesDir;
  const st = Deno.statSync(target);
  const json = st.isDirectory ? showDir(target) : showImage(target);
  out(JSON.stringify(json, null, 2));
  return 0;
}

/** Commands and how many operands each takes after it. */
const COMMANDS: Record<string, number> = {
  dump: 0,
  restore: 0,
  check: 0,
  show: 1,
  "pre-dump": 0,
  "page-server": 0,
  "lazy-pages": 0,
  swrk: 1,
  service: 0,
  dedup: 0,
  cpuinfo: 1,
};

/** Runs `criu ARGS`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let o: CriuOpts | undefined;
  try {
    o = parseOptions(argv);
    if (o.version) {
      out(versionText());
      return 0;
    }
    if (o.help) {
      out(USAGE);
      return 0;
    }
    if (!o.command) throw new UsageError("command is required");
    const operands = COMMANDS[o.command];
    if (operands === undefined) throw new UsageError(`unknown command: ${o.command}`);
    if (o.args.length > operands) {
      const extra = o.args.length - operands;
      throw new UsageError(
        `excessive parameter${extra > 1 ? "s" : ""} for command ${o.command}`,
      );
    }
    checkOptions(o);
    for (const fd of o.closeFds) close(fd);
    // Each command loads what it needs only: `criu swrk` answering a VERSION, or `--version`,
    // starts quickly.
    switch (o.command) {
      case "dump":
      case "pre-dump": {
        const { runDump } = await load<typeof import("./run_dump.ts")>(
          "cli/run_dump.ts",
        );
        // criu exits once the dump is done, but for a lazy one, which serves its pages first:
        // the killed tree's ids must be free for their restore meanwhile.
        if (!o.lazyPages) reapInBackground(false);
        return await runDump(o, {}, (r) => {
          if (o!.displayStats) out(formatDumpStats(r.stats));
          return 0;
        });
      }
      case "check":
        return await runCheck(o);
      case "show":
        return await runShow(o);
      case "restore": {
        const { runRestore } = await load<typeof import("./run_restore.ts")>(
          "cli/run_restore.ts",
        );
        return await runRestore(o, {}, async (r) => {
          if (o!.displayStats) out(formatRestoreStats(r.stats));
          return r.exit ? await r.exit : 0;
        });
      }
      case "dedup": {
        const { dedup } = await load<typeof import("../images/dedup.ts")>(
          "images/dedup.ts",
        );
        dedup(o.imagesDir);
        return 0;
      }
      case "page-server":
        return await (await load<typeof import("./page_server.ts")>(
          "cli/page_server.ts",
        )).runPageServer(o, argv);
      case "lazy-pages":
        return await (await load<typeof import("./lazy_pages.ts")>(
          "cli/lazy_pages.ts",
        )).runLazyPages(o, argv);
      case "swrk":
        return await (await load<typeof import("../rpc/swrk.ts")>(
          "rpc/swrk.ts",
        )).serveSwrk(o);
      case "service":
        return await (await load<typeof import("../rpc/service.ts")>(
          "rpc/service.ts",
        ))
          .serveService(o, argv);
      default:
        throw new Error(`The ${o.command} command is not supported by deno-criu yet`);
    }
  } catch (e) {
    const err = e as Error;
    const msg = err instanceof Error ? err.message : String(e);
    const enc = new TextEncoder();
    // The stack (debug level only, and never for an expected error) first: the last line of
    // stderr names the failure.
    if ((o?.logLevel ?? 0) >= 4 && isBug(err) && err.stack) {
      Deno.stderr.writeSync(enc.encode(`${err.stack}\n`));
    }
    if (e instanceof UsageError) {
      Deno.stderr.writeSync(enc.encode("Try 'criu --help'\n"));
      // Harnesses read the log file for the reason (zdtm does): it gets the line too.
      if (o) logOptionsError(o, msg, "main.ts");
    }
    Deno.stderr.writeSync(enc.encode(`Error: ${msg}\n`));
    return 1;
  }
}

/** Whether an error is a bug in deno-criu (its stack helps) rather than an expected refusal. */
function isBug(e: Error): boolean {
  return e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError ||
    e instanceof SyntaxError;
}
