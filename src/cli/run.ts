/**
 * What the commands that run on parsed options share: the log a command opens, who asked for
 * it (the command line, or an RPC caller with its notifications), and the action hook made of
 * both. The commands themselves are in modules of their own (run_dump.ts, run_restore.ts), so
 * that each is loaded, and bundled, without the other.
 *
 * @module
 */
import { CRIU_VERSION, VERSION } from "../version.ts";
import { type Dirs, inWorkDir } from "./dirs.ts";
import { Logger } from "../log.ts";
import { type ActionHook, actionScripts } from "../action_scripts.ts";
import type { CriuOpts } from "./options.ts";

/** The log of a command, as `-o`/`--log-file` and `-v` say, headed with the version. */
export function openLog(o: CriuOpts, dirs: Dirs): Logger {
  const level = Math.min(o.logLevel, 4);
  let log: Logger;
  if (!o.logFile || o.logFile === "-") {
    log = new Logger(level);
  } else {
    const path = inWorkDir(dirs, o.logFile);
    try {
      log = new Logger(level, path);
    } catch (e) {
      throw new Error(`Cannot open log file ${path}: ${(e as Error).message}`);
    }
  }
  log.header(`${CRIU_VERSION} (deno-criu ${VERSION})`);
  return log;
}

/** Who asked for a command, when it is not the command line. */
export interface Caller {
  /**
   * Tells the caller of each action point, before the action scripts run (criu's RPC notify);
   * throws when the caller answers that its action failed.
   */
  notify?: ActionHook;
  /**
   * Hands the caller the new master of a pty whose master was outside the tree (criu's
   * orphan-pts-master notification, with the descriptor).
   */
  ptyMaster?: (fd: number) => Promise<void>;
  /** Asks the caller for more external resources during a dump (criu's query-ext-files). */
  queryExternal?: () => Promise<string[]>;
}

/** The action hook of a command: the caller's notifications, then the action scripts. */
export function actionsOf(
  o: CriuOpts,
  dirs: Dirs,
  log: Logger,
  caller: Caller,
): ActionHook | undefined {
  const scripts = actionScripts(o.actionScripts, dirs.images, dirs.work, (l) => log.debug(l));
  const notify = caller.notify;
  if (!notify) return scripts;
  return async (action, pid) => {
    await notify(action, pid);
    await scripts?.(action, pid);
  };
}
