/**
 * Open files, mappings and sockets come back exactly: file owners and I/O signals, pipe sizes,
 * deleted files (holes, owner, mode, times, one inode for all their descriptions), memfd mode
 * and execveat, VMA flags and advice (victims/filestate.c); socket options, filters,
 * shutdowns, unix socket files and names, peers gone or deleted (victims/sockstate.c).
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  buildVictim,
  checkAcrossRoundTrip,
  critDecodeAll,
  criu,
  freePort,
  killAll,
  procState,
  ROOT,
  roundTrip,
  settledState,
  startVictim,
  stopVictim,
  tmpDir,
  treePids,
  verdict,
  waitGone,
  waitReport,
} from "./helpers.ts";

for (
  const [victim, extra] of [["filestate", []], ["sockstate", [() => `${freePort()}`]]] as const
) {
  Deno.test(`${victim}: dump, restore, and the victim finds all of it as it was`, async () => {
    const bin = await buildVictim(victim);
    const v = startVictim(["setsid", bin, "{out}", "{dir}", ...extra.map((f) => f())]);
    try {
      await waitReport(v);
      await roundTrip(v);
      assertMatch(await verdict(v), /\nPASS\n$/);
    } finally {
      killAll(v.pid);
      await stopVictim(v);
    }
  });
}

Deno.test("a deleted file still linked elsewhere: refused without --link-remap, the same inode with it, in a removed directory too", async () => {
  const bin = await buildVictim("linked");
  const v = startVictim(["setsid", bin, "{out}", "{dir}"]);
  try {
    await waitReport(v);
    const refused = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()]);
    assertEquals(refused.code, 1);
    assertMatch(refused.stderr, /lives on under another name; dump with --link-remap/);
    const imgs = tmpDir();
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", imgs, "--link-remap"]);
    assertEquals(d.code, 0, d.stderr);
    await v.child.status;
    await waitGone(v.pid);
    assertEquals(
      [...Deno.readDirSync(v.dir)].map((e) => e.name).filter((n) => n.startsWith("link_remap"))
        .length,
      2,
      "a link made for the restore for each, one in the directory of the removed one's",
    );
    const r = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(
      [...Deno.readDirSync(v.dir)].map((e) => e.name).sort(),
      ["other.txt", "other2.txt", "out.log"],
      "the links are gone again, the removed directory too",
    );
    assertMatch(await verdict(v), /PASS linked/);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("deleted FIFOs, directories (cwd too, parent gone), symlinks and devices come back", async () => {
  const bin = await buildVictim("ghostkinds");
  const v = startVictim(["setsid", bin, "{out}", "{dir}"]);
  try {
    await waitReport(v);
    await roundTrip(v);
    // What was made again for the restore is gone again.
    assertEquals([...Deno.readDirSync(v.dir)].map((e) => e.name), ["out.log"]);
    assertMatch(await verdict(v), /PASS ghostkinds/);
  } finally {
    killAll(v.pid);
    await stopVictim(v);
  }
});

Deno.test("pidfds of the task itself, of a child and of a process gone come back, and one outside is refused", async () => {
  const bin = await buildVictim("pidfds");
  const v = startVictim(["setsid", bin, "{out}"]);
  let pids: number[] = [];
  try {
    const r = await waitReport(v);
    pids = [v.pid, Number(r.child)];
    await roundTrip(v);
    assertMatch(await verdict(v), /PASS pidfds/);
  } finally {
    killAll(...pids);
    await stopVictim(v);
  }
  // A pidfd of a process outside the tree: another process could hold its PID after a restore.
  const py = startVictim([
    "python3",
    "-c",
    "import os,time; fd=os.pidfd_open(os.getppid()); open('{out}','w').write('ready\\n'); time.sleep(60)",
  ]);
  try {
    await waitReport(py);
    const d = await criu(["dump", "-t", `${py.pid}`, "-D", tmpDir()]);
    assertEquals(d.code, 1);
    assertMatch(d.stderr, /a pidfd of process \d+, which is not in the dumped tree/);
  } finally {
    await stopVictim(py);
  }
});

Deno.test("an epoll set keeps targets added under numbers that now hold other files or none", async () => {
  const bin = await buildVictim("epollkeys");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS epollkeys/);
});

Deno.test("python multiprocessing: a semaphore (deleted /dev/shm file, mapped) and a shared value stay shared with the child", async () => {
  const v = startVictim(["setsid", "python3", `${ROOT}/tests/victims/mpsem.py`, "{out}"]);
  let pids: number[] = [];
  try {
    const r = await waitReport(v);
    assertEquals(r.deleted, "1", "the semaphore is a mapped deleted file");
    pids = treePids(v.pid);
    await roundTrip(v);
    assertMatch(await verdict(v, v.pid, "SIGTERM", 8000), /PASS mpsem/);
  } finally {
    killAll(...pids);
    await stopVictim(v);
  }
});

Deno.test("descriptors of the task's own namespaces name them again", async () => {
  const bin = await buildVictim("nsfds");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}"]), /PASS nsfds/);
});

Deno.test("a descriptor of a namespace other than criu's is refused by name", async () => {
  const name = `criu-test-${Deno.pid}`;
  const ip = (...args: string[]) => new Deno.Command("ip", { args: ["netns", ...args] }).output();
  assertEquals((await ip("add", name)).code, 0);
  const v = startVictim([
    "setsid",
    "sh",
    "-c",
    `exec 3</run/netns/${name}; echo ready pid=$$ >> {out}; exec sleep 100`,
  ]);
  try {
    await waitReport(v);
    const d = await criu(["dump", "-t", `${v.pid}`, "-D", tmpDir()]);
    assertEquals(d.code, 1, d.stderr);
    assertMatch(
      d.stderr,
      /^Error: Cannot dump fd 3 of task \d+ \(\/run\/netns\/criu-test-\d+\): a namespace other than criu's/m,
    );
    assertEquals(await settledState(v.pid, "S"), "S");
  } finally {
    await stopVictim(v);
    await ip("del", name);
  }
});

Deno.test("a fanotify group keeps its flags and its inode and mount marks, and delivers events", async () => {
  const bin = await buildVictim("fanotify");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}", "{dir}"]), /PASS fanotify/);
});

Deno.test("--external: a unix socket whose peer is outside comes back disconnected, an external file is refused until --inherit-fd gives it", async () => {
  const dir = tmpDir();
  const file = `${dir}/given`, other = `${dir}/other`;
  Deno.writeTextFileSync(file, "");
  Deno.writeTextFileSync(other, "");
  const v = startVictim(["python3", `${ROOT}/tests/victims/extpeer.py`, "{out}", file]);
  let child = 0;
  try {
    const r = await waitReport(v);
    child = Number(r.pid);
    const ino = Deno.readLinkSync(`/proc/${child}/fd/${r.sock}`).match(/\d+/)![0];
    const mnt = Number(
      /mnt_id:\s*(\d+)/.exec(Deno.readTextFileSync(`/proc/${child}/fdinfo/${r.file}`))![1],
    );
    const fileKey = `file[${mnt.toString(16)}:${Deno.statSync(file).ino!.toString(16)}]`;
    const imgs = tmpDir();
    let run = await criu(["dump", "-t", `${child}`, "-D", imgs]);
    assertEquals(run.code, 1);
    assertMatch(
      run.stderr,
      new RegExp(`with --external unix\\[${ino}\\] to restore it disconnected`),
    );
    assertEquals(await settledState(child, "S"), "S");
    run = await criu([
      "dump",
      "-t",
      `${child}`,
      "-D",
      imgs,
      "--external",
      `unix[${ino}]`,
      "--external",
      fileKey,
    ]);
    assertEquals(run.code, 0, run.stderr);
    assert(await waitGone(child));
    const files = (await critDecodeAll(imgs)).get("files.img")!.entries;
    assert(files.some((f) => f.reg?.name === fileKey && f.reg?.ext), JSON.stringify(files));
    run = await criu(["restore", "-d", "-D", imgs]);
    assertEquals(run.code, 1);
    assertMatch(
      run.stderr,
      new RegExp(`give it with --inherit-fd fd\\[N\\]:${fileKey.replace(/[[\]]/g, "\\$&")}`),
    );
    assertEquals(procState(child), undefined, "nothing left of a refused restore");
    // criu's stdout (the other file) takes the external file's place.
    const sh = await new Deno.Command("sh", {
      args: [
        "-c",
        `exec "${Deno.execPath()}" run -A --quiet "${ROOT}/main.ts" restore -d -D "${imgs}" ` +
        `--inherit-fd 'fd[1]:${fileKey}' >> "${other}"`,
      ],
      stderr: "piped",
    }).output();
    assertEquals(sh.code, 0, new TextDecoder().decode(sh.stderr));
    assertMatch(await verdict(v, child, "SIGTERM", 3000), /PASS extpeer/);
    assertEquals(Deno.readTextFileSync(other), "written\n");
    assertEquals(Deno.readTextFileSync(file), "");
  } finally {
    await stopVictim(v);
    if (child) killAll(child);
  }
});

Deno.test("a file made with O_TMPFILE comes back nameless, with its contents, position, mode and status flags", async () => {
  const bin = await buildVictim("tmpfile");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}", "{dir}"]), /PASS tmpfile/);
});

Deno.test("file leases come back with -l: read, write, and one still breaking to read, held by the task", async () => {
  const bin = await buildVictim("leases");
  await checkAcrossRoundTrip(startVictim(["setsid", bin, "{out}", "{dir}"]), /PASS leases/, {
    dump: ["-l"],
  });
});
