/**
 * `--action-script`: programs criu runs at fixed points of a dump or restore, each told the
 * point in $CRTOOLS_SCRIPT_ACTION, the images directory in $CRTOOLS_IMAGE_DIR and the root task
 * in $CRTOOLS_INIT_PID, with the work directory as cwd. A script that fails fails the dump or
 * restore where criu's does (pre-dump, post-dump, pre-restore, post-restore, setup-namespaces);
 * after the tasks run again (pre-resume, post-resume) its failure is only reported.
 *
 * @module
 */

/** The points at which criu runs action scripts (criu's action names). */
export type ScriptAction =
  | "pre-dump"
  | "post-dump"
  | "pre-restore"
  | "post-restore"
  | "network-lock"
  | "network-unlock"
  | "setup-namespaces"
  | "post-setup-namespaces"
  | "pre-resume"
  | "post-resume"
  | "orphan-pts-master"
  | "status-ready";

/** Runs the action scripts of a dump or restore; `rootPid` is set once the root task exists. */
export type ActionHook = (action: ScriptAction, rootPid?: number) => Promise<void>;

/** A script exited with a failure; the message names it and its status. */
export class ActionScriptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ActionScriptError";
  }
}

/**
 * The hook that runs `scripts` (in order) with criu's environment. `imagesDir` is absolute;
 * `workDir` is the scripts' cwd.
 */
export function actionScripts(
  scripts: readonly string[],
  imagesDir: string,
  workDir: string,
  log?: (line: string) => void,
): ActionHook | undefined {
  if (!scripts.length) return undefined;
  return async (action, rootPid) => {
    log?.(`Running ${action} scripts`);
    const env: Record<string, string> = {
      CRTOOLS_SCRIPT_ACTION: action,
      CRTOOLS_IMAGE_DIR: imagesDir,
    };
    if (rootPid !== undefined) env.CRTOOLS_INIT_PID = `${rootPid}`;
    const failed: string[] = [];
    for (const path of scripts) {
      let code: number;
      try {
        const st = await new Deno.Command(path, {
          cwd: workDir,
          env,
          stdin: "null",
          stdout: "inherit",
          stderr: "inherit",
        }).spawn().status;
        code = st.signal ? 128 + signalNumber(st.signal) : st.code;
      } catch (e) {
        failed.push(`${path} could not be run: ${(e as Error).message}`);
        continue;
      }
      if (code !== 0) failed.push(`${path} exited with ${code}`);
    }
    if (failed.length) {
      throw new ActionScriptError(`The ${action} action script failed: ${failed.join("; ")}`);
    }
  };
}

function signalNumber(sig: Deno.Signal): number {
  const n: Partial<Record<Deno.Signal, number>> = {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGABRT: 6,
    SIGKILL: 9,
    SIGSEGV: 11,
    SIGPIPE: 13,
    SIGTERM: 15,
  };
  return n[sig] ?? 0;
}
