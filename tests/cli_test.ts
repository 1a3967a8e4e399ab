/**
 * The command line as criu's: getopt_long parsing, configuration files, the work directory,
 * action scripts, `--version`, `restore -s`, and the errors criu gives for bad command lines.
 */
import { assert, assertEquals, assertMatch, assertThrows } from "./assert.ts";
import { parseOptions } from "../src/cli/options.ts";
import { configWords } from "../src/cli/config_file.ts";
import { BUNDLE, freshBundle } from "../src/cli/bundle_fresh.ts";
import { join } from "node:path";
import {
  buildVictim,
  criu,
  criuArgv,
  killAll,
  procState,
  ROOT,
  safeRead,
  settledState,
  startVictim,
  stopVictim,
  tmpDir,
  waitGone,
  waitLine,
} from "./helpers.ts";

/** Parses with no configuration file in the way. */
const parse = (...argv: string[]) =>
  parseOptions(["--no-default-config", ...argv], () => undefined);

Deno.test("options parse as criu's getopt_long parses them", () => {
  // -v counts up from the default level 2, as criu's does; a value sets it.
  assertEquals(parse("check", "-verbosity=0").logLevel, 0);
  assertEquals(parse("dump", "-v").logLevel, 3);
  assertEquals(parse("dump", "-vv").logLevel, 4);
  assertEquals(parse("dump", "-v", "-v").logLevel, 4);
  assertEquals(parse("dump", "-v3").logLevel, 3);
  assertEquals(parse("dump", "--verbosity=1").logLevel, 1);
  assertEquals(parse("dump").logLevel, 2);
  const o = parse(
    "-t42",
    "dump",
    "-D",
    "imgs",
    "-o",
    "d.log",
    "-Rj",
    "--pidfile=p",
    "--timeout",
    "10",
  );
  assertEquals(
    [o.command, o.tree, o.imagesDir, o.logFile, o.finalState, o.shellJob, o.pidfile, o.timeout],
    ["dump", 42, "imgs", "d.log", "alive", true, "p", 10],
  );
  // Unambiguous prefixes; --no- forms; the last of -R and -s wins.
  assertEquals(parse("dump", "--tcp-est").tcpEstablished, true);
  assertEquals(parse("dump", "--tcp-established", "--no-tcp-established").tcpEstablished, false);
  assertEquals(parse("dump", "-R", "-s").finalState, "stopped");
  assertEquals(parse("dump", "-s", "--leave-running").finalState, "alive");
  // --external mnt[] is --ext-mount-map auto; :m and :s add masters and sharing.
  const auto = (v: string) => {
    const p = parse("dump", "--external", v);
    return [p.extMountAuto, p.externalMasters, p.externalSharing, p.external.length];
  };
  assertEquals(auto("mnt[]"), [true, false, false, 0]);
  assertEquals(auto("mnt[]:m"), [true, true, false, 0]);
  assertEquals(auto("mnt[]:s"), [true, false, true, 0]);
  assertThrows(() => parse("dump", "--external", "mnt[]:x"), /invalid argument/);
  assertThrows(() => parse("dump", "--t", "1"), /option '--t' is ambiguous/);
  assertThrows(() => parse("dump", "--bogus"), /unrecognized option '--bogus'/);
  assertThrows(() => parse("dump", "-q"), /invalid option -- 'q'/);
  assertThrows(() => parse("dump", "--tree"), /option '--tree' requires an argument/);
  assertThrows(() => parse("dump", "--shell-job=1"), /doesn't allow an argument/);
  assertThrows(() => parse("dump", "-t", "x"), /invalid argument for -t: x/);
  // Values as criu reads them.
  assertEquals(parse("dump", "--ghost-limit", "4M").ghostLimit, 4 << 20);
  assertEquals(parse("dump", "--ghost-lim=512k").ghostLimit, 512 << 10);
  assertEquals(parse("dump", "--pre-dump-mode", "splice").preDumpMode, "splice");
  assertEquals(parse("dump", "--network-lock", "none").networkLock, "skip");
  assertThrows(() => parse("dump", "--pre-dump-mode", "x"), /invalid argument/);
  // Operands anywhere; "--" ends the options.
  assertEquals(parse("-D", "d", "show", "-v", "--", "-x").args, ["-x"]);
  // Action scripts run last-given first, as criu's list does.
  assertEquals(parse("dump", "--action-script", "a", "--action-script=b").actionScripts, [
    "b",
    "a",
  ]);
});

Deno.test("configuration files: criu's syntax, its order of files, the command line last", () => {
  assertEquals(
    configWords(
      [
        "# a comment",
        "  tcp-established",
        "verbosity 4 # trailing comment",
        'lsm-profile "apparmor:a \\"b\\""',
        "",
        "images-dir\t/tmp/x",
      ].join("\n"),
      "f",
    ),
    ["--tcp-established", "--verbosity=4", '--lsm-profile=apparmor:a "b"', "--images-dir=/tmp/x"],
  );
  assertThrows(() => configWords("verbosity 4 5", "f"), /Unsupported configuration file format/);

  const dir = tmpDir("config-");
  const home = `${dir}/home`;
  Deno.mkdirSync(`${home}/.criu`, { recursive: true });
  Deno.writeTextFileSync(`${home}/.criu/default.conf`, "verbosity 3\ntcp-established\n");
  Deno.writeTextFileSync(`${dir}/env.conf`, "verbosity 1\nshell-job\n");
  Deno.writeTextFileSync(`${dir}/cmd.conf`, "file-locks\n");
  const env = (extra: Record<string, string> = {}) => (n: string) =>
    ({ HOME: home, ...extra } as Record<string, string>)[n];
  // The user's file applies, and the command line overrides it.
  assertEquals(parseOptions(["dump"], env()).logLevel, 3);
  assertEquals(parseOptions(["dump"], env()).tcpEstablished, true);
  assertEquals(parseOptions(["dump", "-v0"], env()).logLevel, 0);
  assertEquals(parseOptions(["dump", "--no-tcp-established"], env()).tcpEstablished, false);
  // --no-default-config skips it; $CRIU_CONFIG_FILE still applies, after the default files.
  assertEquals(parseOptions(["dump", "--no-default-config"], env()).tcpEstablished, false);
  const e = parseOptions(["dump"], env({ CRIU_CONFIG_FILE: `${dir}/env.conf` }));
  assertEquals([e.logLevel, e.shellJob, e.tcpEstablished], [1, true, true]);
  // --config replaces the default files.
  const c = parseOptions(["dump", "--config", `${dir}/cmd.conf`], env());
  assertEquals([c.fileLocks, c.tcpEstablished, c.logLevel], [true, false, 2]);
  assertThrows(
    () => parseOptions(["dump", "--config", `${dir}/missing.conf`], env()),
    /Cannot read configuration file/,
  );
  // Errors in a file name the file; --help wins over them.
  Deno.writeTextFileSync(`${dir}/bad.conf`, "no-such-option\n");
  assertThrows(
    () => parseOptions(["dump", "--config", `${dir}/bad.conf`], env()),
    /unrecognized option '--no-such-option' \(in configuration file .*bad.conf\)/,
  );
  assertEquals(parseOptions(["--config", `${dir}/bad.conf`, "-h"], env()).help, true);
});

Deno.test("criu --version names CRIU's release first and deno-criu second", async () => {
  const run = await criu(["--version"]);
  assertEquals(run.code, 0);
  const [first, second] = run.stdout.split("\n");
  assertEquals(first, "Version: 4.2");
  assertMatch(second, /^GitID: deno-criu-\d+\.\d+\.\d+$/);
});

Deno.test("bin/criu runs the command line, called by its path or as criu on PATH through links", async () => {
  const dir = tmpDir("criu-path-");
  Deno.symlinkSync(join(ROOT, "bin", "criu"), join(dir, "link"));
  Deno.mkdirSync(join(dir, "bin"));
  Deno.symlinkSync("../link", join(dir, "bin", "criu"));
  for (
    const [cmd, env] of [
      [join(ROOT, "bin", "criu"), {}],
      ["criu", { PATH: `${join(dir, "bin")}:${Deno.env.get("PATH")}` }],
    ] as const
  ) {
    const out = await new Deno.Command(cmd, { args: ["--version"], env }).output();
    assertEquals(new TextDecoder().decode(out.stdout).split("\n")[0], "Version: 4.2", cmd);
  }
});

Deno.test("bad command lines get criu's one-line errors and exit 1", async () => {
  const cases: [string[], RegExp][] = [
    [["check", "x"], /excessive parameter for command check/],
    [["dump", "a", "b"], /excessive parameters for command dump/],
    [["chec"], /unknown command: chec/],
    [["-v4"], /command is required/],
    [["dump", "--t", "1"], /option '--t' is ambiguous/],
    [
      ["dump", "--external", "dev[x]:y"],
      /--external dev\[x\]:y is not supported by deno-criu: namespaces/,
    ],
    [["dump", "--external", "mnt[]:q"], /invalid argument for --external: mnt\[\]:q/],
    [["dump", "--external", "bogus"], /invalid argument for --external: bogus/],
    [["restore", "--lsm-profile", "apparmor:x"], /--lsm-profile apparmor:x is not supported/],
    // Accepted, as criu and LXC's restore have it (the error is the missing directory).
    [
      [
        "restore",
        "--lsm-profile",
        "apparmor:unconfined",
        "--external",
        "apparmor:unconfined",
        "-D",
        "/nonexistent",
      ],
      /\/nonexistent does not exist/,
    ],
    [["restore", "-S"], /--restore-sibling only makes sense with --restore-detached/],
    [["restore", "--manage-cgroups=bogus"], /Unknown cgroups mode --manage-cgroups=bogus/],
    // Accepted (the error is the missing directory).
    [["restore", "--manage-cgroups=ignore", "-D", "/nonexistent"], /\/nonexistent does not exist/],
    [["dump", "--inherit-fd", "fd[3]:x"], /--inherit-fd is not supported|restore-only/],
  ];
  for (const [args, re] of cases) {
    const run = await criu(["--no-default-config", ...args]);
    assertEquals(run.code, 1, `${args.join(" ")}: ${run.stdout}${run.stderr}`);
    const last = run.stderr.trim().split("\n").at(-1)!;
    assertMatch(last, re, args.join(" "));
    assert(!/\bat .*\.ts:\d+/.test(run.stderr), `no stack trace: ${run.stderr}`);
  }
  // A refused option is written to the log file too (zdtm reads the log, not stderr).
  const dir = tmpDir();
  const run = await criu(["restore", "--skip-mnt", "/x", "-D", dir, "-o", "r.log"]);
  assertEquals(run.code, 1);
  assertMatch(Deno.readTextFileSync(`${dir}/r.log`), /--skip-mnt is not supported/);
});

/** A script that appends its action and criu's environment to `log`. */
function recorder(dir: string, log: string, failOn = ""): string {
  const path = `${dir}/script.sh`;
  Deno.writeTextFileSync(
    path,
    `#!/bin/sh
echo "$CRTOOLS_SCRIPT_ACTION pid=$CRTOOLS_INIT_PID dir=$CRTOOLS_IMAGE_DIR cwd=$(pwd)" >> ${log}
[ "$CRTOOLS_SCRIPT_ACTION" = "${failOn}" ] && exit 3
exit 0
`,
  );
  Deno.chmodSync(path, 0o755);
  return path;
}

Deno.test("config file, work dir and action scripts drive a dump and a restore -s", async () => {
  const bin = await buildVictim("counter");
  const v = startVictim(["setsid", bin, "{out}"]);
  const dir = tmpDir("cli-");
  const imgs = `${dir}/imgs`, work = `${dir}/work`;
  Deno.mkdirSync(imgs);
  Deno.mkdirSync(work);
  const actions = `${dir}/actions.log`;
  let restored = 0;
  try {
    await waitLine(v.out, /^count 2 /);
    // A post-dump script that fails: the dump fails and the process goes on counting.
    const failing = recorder(dir, actions, "post-dump");
    let run = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "--action-script", failing]);
    assertEquals(run.code, 1, run.stderr);
    assertMatch(run.stderr, /post-dump action script failed: .* exited with 3/);
    const counted = Deno.readTextFileSync(v.out).trim().split("\n").length;
    await waitLine(v.out, new RegExp(`^count ${counted + 2} `));
    assertEquals(await settledState(v.pid, "S"), "S", "still running after the failed post-dump");

    // The options from a configuration file; logs and pidfile in the work directory.
    Deno.writeTextFileSync(actions, "");
    const script = recorder(dir, actions);
    Deno.writeTextFileSync(
      `${dir}/criu.conf`,
      `images-dir ${imgs}\nwork-dir ${work}\nlog-file criu.log\nverbosity 4\naction-script ${script}\n`,
    );
    const env = { CRIU_CONFIG_FILE: `${dir}/criu.conf` };
    run = await criu(["dump", "-t", `${v.pid}`], env);
    assertEquals(run.code, 0, run.stderr + safeRead(`${work}/criu.log`));
    await v.child.status;
    assert(await waitGone(v.pid));
    assertMatch(safeRead(`${work}/criu.log`), /^\(00\.\d{6}\) Version: 4\.2/);
    assert(!safeRead(`${imgs}/criu.log`), "the log goes to the work dir");

    run = await criu(["restore", "-d", "-s", "--pidfile", "r.pid"], env);
    assertEquals(run.code, 0, run.stderr + safeRead(`${work}/criu.log`));
    restored = Number(Deno.readTextFileSync(`${work}/r.pid`));
    assertEquals(restored, v.pid);
    assertEquals(procState(restored), "T", "restore -s leaves the task stopped");
    const before = Deno.readTextFileSync(v.out).trim().split("\n").length;
    Deno.kill(restored, "SIGCONT");
    await waitLine(v.out, new RegExp(`^count ${before + 2} `));

    const seen = Deno.readTextFileSync(actions).trim().split("\n");
    const want = [
      "pre-dump",
      "post-dump",
      "pre-restore",
      "post-restore",
      "pre-resume",
      "post-resume",
    ];
    assertEquals(seen.map((l) => l.split(" ")[0]), want);
    for (const line of seen) {
      assertMatch(line, new RegExp(`dir=${imgs} cwd=${work}$`), line);
      if (!line.startsWith("pre-restore")) assertMatch(line, new RegExp(`pid=${v.pid} `), line);
    }
  } finally {
    await stopVictim(v);
    killAll(restored);
  }
});

Deno.test("restore --inherit-fd fd[N]:pipe:[INO] gives the task the caller's pipe in place of its own", async () => {
  const bin = await buildVictim("counter");
  // The victim counts into a pipe whose reader (this test) is outside the dumped tree.
  const victim = new Deno.Command("setsid", {
    args: [bin],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const pid = await (async () => {
    const r = victim.stdout.getReader();
    const { value } = await r.read();
    r.releaseLock();
    return Number(/pid (\d+)/.exec(new TextDecoder().decode(value))![1]);
  })();
  const pipe = Deno.readLinkSync(`/proc/${pid}/fd/1`);
  assertMatch(pipe, /^pipe:\[\d+\]$/);
  const imgs = tmpDir();
  try {
    const d = await criu(["dump", "-t", `${pid}`, "-D", imgs]);
    assertEquals(d.code, 0, d.stderr);
    await victim.status;
    await waitGone(pid);
    // criu's own stdout stands for the pipe: the restored task writes into it.
    const [cmd, ...argv] = criuArgv(["restore", "-d", "-D", imgs, "--inherit-fd", `fd[1]:${pipe}`]);
    const restorer = new Deno.Command(cmd, {
      args: argv,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = restorer.stdout.getReader();
    let text = "";
    const end = Date.now() + 10_000;
    while (!/count \d+ \(pid \d+\)\n.*count/s.test(text) && Date.now() < end) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    assertEquals(
      (await restorer.status).code,
      0,
      new TextDecoder().decode((await restorer.stderr.getReader().read()).value),
    );
    assertMatch(
      text,
      new RegExp(`count \\d+ \\(pid ${pid}\\)`),
      "the restored task writes into the given pipe",
    );
    assertEquals(
      Deno.readLinkSync(`/proc/${pid}/fd/1`) === pipe,
      false,
      "a pipe of the caller's, not the old one",
    );
    killAll(pid);
    reader.cancel();
  } finally {
    killAll(pid);
  }
});

Deno.test("the bundled build runs only while every source it was built from is as it was", () => {
  const root = tmpDir("criu bundle-"); // a space, percent-encoded in its URL
  const rootUrl = new URL(`file://${root}/`);
  Deno.mkdirSync(`${root}/src/.bundle`, { recursive: true });
  Deno.writeTextFileSync(`${root}/${BUNDLE.code}`, "export const main = () => 0;\n");
  Deno.writeTextFileSync(`${root}/a.ts`, "export const a = 1;\n");
  const manifest = (deno = Deno.version.deno) => {
    const st = Deno.statSync(`${root}/a.ts`);
    Deno.writeTextFileSync(
      `${root}/${BUNDLE.manifest}`,
      JSON.stringify({ deno, files: [["a.ts", st.mtime!.getTime(), st.size]] }),
    );
  };
  manifest();
  assertEquals(freshBundle(rootUrl), new URL(BUNDLE.code, rootUrl).href);
  // Edited since (another size, then only another time), built by another Deno, gone.
  Deno.writeTextFileSync(`${root}/a.ts`, "export const a = 22;\n");
  assertEquals(freshBundle(rootUrl), undefined, "a source of another size");
  manifest();
  const later = new Date(Deno.statSync(`${root}/a.ts`).mtime!.getTime() + 5000);
  Deno.utimeSync(`${root}/a.ts`, later, later);
  assertEquals(freshBundle(rootUrl), undefined, "a source touched since");
  manifest("0.0.1");
  assertEquals(freshBundle(rootUrl), undefined, "built by another Deno");
  manifest();
  assert(freshBundle(rootUrl) !== undefined);
  // A command with a bundle of its own gets it when it comes first, only then.
  assertEquals(freshBundle(rootUrl, "dump"), new URL(BUNDLE.commands.dump, rootUrl).href);
  assertEquals(freshBundle(rootUrl, "pre-dump"), new URL(BUNDLE.commands.dump, rootUrl).href);
  assertEquals(freshBundle(rootUrl, "restore"), new URL(BUNDLE.commands.restore, rootUrl).href);
  for (const first of ["-v4", "check", "swrk", "toString", undefined]) {
    assertEquals(freshBundle(rootUrl, first), new URL(BUNDLE.code, rootUrl).href, `${first}`);
  }
  Deno.removeSync(`${root}/a.ts`);
  assertEquals(freshBundle(rootUrl), undefined, "a source gone");
  Deno.removeSync(root, { recursive: true });
});

Deno.test("the command line runs the same from the bundled build and from the sources", async () => {
  // With the bundle current (scripts/setup.sh makes it) main.ts runs it; DENO_CRIU_SOURCES
  // makes it run the sources.
  // Dump and restore have bundles of their own, used when the command comes first: each of
  // them, as the first word and after an option, gets as far as its own check of the input.
  for (const env of [{}, { DENO_CRIU_SOURCES: "1" }] as Record<string, string>[]) {
    const v = await criu(["--version"], env);
    assertEquals(v.code, 0, v.stderr);
    assertMatch(v.stdout, /^Version: 4\.2\nGitID: deno-criu-/);
    for (const cmd of ["dump", "pre-dump"]) {
      for (const argv of [[cmd, "-v1"], ["-v1", cmd]]) {
        const bad = await criu([...argv, "-t", "999999999", "-D", tmpDir()], env);
        assertEquals(bad.code, 1);
        assertMatch(bad.stderr, /^Error: .*999999999/, `${argv}`);
        assertEquals(bad.stderr.trim().split("\n").length, 1, bad.stderr);
      }
    }
    for (const argv of [["restore", "-v1"], ["-v1", "restore"]]) {
      const bad = await criu([...argv, "-D", tmpDir()], env);
      assertEquals(bad.code, 1);
      assertMatch(bad.stderr, /^Error: .*(inventory|images)/i, `${argv}`);
      assertEquals(bad.stderr.trim().split("\n").length, 1, bad.stderr);
    }
  }
});
