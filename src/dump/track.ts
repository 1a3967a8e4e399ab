/**
 * Memory tracking between dumps (`--track-mem`, pre-dumps): which pages a process wrote since
 * its last dump, without soft-dirty.
 *
 * Each tracked process holds a userfaultfd of its own (made inside it, kept at a high number,
 * close-on-exec) with its private mappings registered for asynchronous write-protection
 * (syscalls/uffd.ts). After each dump its pages are write-protected again; a write lifts the
 * protection of that page alone, which /proc/PID/pagemap shows. A page may be left to the
 * parent images (PE_PARENT) only if it is still protected and still the same frame the parent
 * recorded for that address: a mapping moved, replaced or swapped since shows another frame
 * (or none) and is dumped again. A mapping made since is not registered: its pages all show as
 * written.
 *
 * What a dump leaves for the next (in its images directory, beside criu's images):
 * `deno-criu-track.json` (per process, by the id the images name it: its PID, start time,
 * tracking descriptor and that descriptor's inode), `deno-criu-frames-ID.bin` (the pagemap
 * words of the pages it walked: their frames).
 *
 * @module
 */
import { basename } from "../util/path.ts";
import type { ImagesDir } from "../images/images_dir.ts";
import { close, F, O, open, writeRemote } from "../syscalls/mod.ts";
import { NR } from "../syscalls/syscall_numbers.ts";
import {
  protectWritten,
  UFFD_FEATURES_TRACK,
  UFFD_USER_MODE_ONLY,
  UFFDIO,
  uffdioApi,
  uffdioRegisterWp,
} from "../syscalls/uffd.ts";
import { writeFileSynced } from "../images/image.ts";
import { FrameTable } from "../pagemap/pagemap.ts";
import { listFds, parseStat, readProcText } from "../tree/proc.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { VMA, type Vma, vmaHasPrivatePages } from "../pagemap/vma.ts";

/** The file of tracking descriptors in an images directory. */
export const TRACK_FILE = "deno-criu-track.json";

/** A process's tracking, as the file keeps it. */
export interface Tracker {
  pid: number;
  /** Its start time (/proc/PID/stat): a PID used again is another process. */
  start: string;
  /** Its userfaultfd's number in it, and inode. */
  fd: number;
  ino: number;
}

/** The lowest number a tracking descriptor takes in its task. */
const TRACK_FD_FLOOR = 900;

function startTime(pid: number): string {
  return `${parseStat(readProcText(pid, "stat")).startTime}`;
}

/** The trackers of images directory `dir` (none: empty). */
export function readTrackers(dir: ImagesDir): Record<string, Tracker> {
  try {
    return JSON.parse(Deno.readTextFileSync(dir.file(TRACK_FILE))).tasks ?? {};
  } catch {
    return {};
  }
}

/**
 * The tracker the parent images left for process `pid` (named `vpid` in the images), among
 * their `trackers` (readTrackers), if it is still the same (same process, its descriptor still
 * there).
 */
export function parentTracker(
  trackers: Record<string, Tracker>,
  pid: number,
  vpid: number,
): Tracker | undefined {
  const t = trackers[`${vpid}`];
  if (!t || t.pid !== pid || t.start !== startTime(pid) || !trackerAlive(t)) return undefined;
  return t;
}

/** The file of the frames a dump in `dir` recorded of process `vpid`. */
export function framesFile(dir: ImagesDir, vpid: number): string {
  return dir.file(`deno-criu-frames-${vpid}.bin`);
}

/** The frames a dump in `dir` recorded of process `vpid` (none: undefined). */
export function readFrames(dir: ImagesDir, vpid: number): FrameTable | undefined {
  try {
    return new FrameTable(Deno.readFileSync(framesFile(dir, vpid)));
  } catch {
    return undefined;
  }
}

/**
 * Whether descriptor `fd` of task `pid` is a tracker of criu's (a pre-dump's): a userfaultfd at
 * a tracker's number with exactly the tracking features (fdinfo's "API: api:features:ioctls",
 * less the kernel's own UFFD_FEATURE_INITIALIZED bit).
 */
export function isTracker(pid: number, fd: number): boolean {
  if (fd < TRACK_FD_FLOOR) return false;
  try {
    if (Deno.readLinkSync(`/proc/${pid}/fd/${fd}`) !== "anon_inode:[userfaultfd]") return false;
    const api = /^API:\s*[0-9a-f]+:([0-9a-f]+):/m.exec(
      Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`),
    );
    return api !== null && (parseInt(api[1], 16) & 0x7fffffff) === UFFD_FEATURES_TRACK;
  } catch {
    return false;
  }
}

/** Whether tracker `t`'s descriptor is still its userfaultfd in the task. */
function trackerAlive(t: Tracker): boolean {
  const link = `/proc/${t.pid}/fd/${t.fd}`;
  try {
    return Deno.readLinkSync(link) === "anon_inode:[userfaultfd]" &&
      Deno.statSync(link).ino === t.ino;
  } catch {
    return false;
  }
}

/** The mappings tracking covers: those whose private pages are dumped. */
function tracked(vmas: Vma[]): Vma[] {
  return vmas.filter((v) =>
    vmaHasPrivatePages(v) && !(v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR | VMA.AREA_AIORING))
  );
}

/**
 * Tracks the task `rs` runs syscalls in from now on: its mappings registered with its
 * userfaultfd (`prior`'s, or one made now). Mappings the kernel will not register for it are
 * left out (their pages always show as written). Returns its tracker.
 */
export function startTracking(rs: RemoteSyscalls, vmas: Vma[], prior?: Tracker): Tracker {
  const pid = rs.task.pid;
  const sys = (nr: number, what: string, ...args: (bigint | number)[]) => {
    const ret = rs.call(nr, ...args);
    if (ret < 0n) {
      throw new Error(`Cannot track the memory of task ${pid}: ${what} failed (${-ret})`);
    }
    return Number(ret);
  };
  // A tracker of an earlier pre-dump's whose images are not the parent: taken on.
  let fd = prior?.fd ?? listFds(pid).find((n) => isTracker(pid, n));
  if (fd === undefined) {
    const uffd = sys(NR.userfaultfd, "userfaultfd", O.CLOEXEC | UFFD_USER_MODE_ONLY);
    try {
      const api = rs.scratch(64);
      writeRemote(pid, api, uffdioApi(UFFD_FEATURES_TRACK));
      sys(NR.ioctl, "UFFDIO_API (asynchronous write-protection)", uffd, UFFDIO.API, api);
      fd = sys(NR.fcntl, "fcntl(F_DUPFD_CLOEXEC)", uffd, F.DUPFD_CLOEXEC, TRACK_FD_FLOOR);
    } finally {
      rs.call(NR.close, uffd);
    }
  }
  const reg = rs.scratch(64);
  for (const v of tracked(vmas)) {
    writeRemote(pid, reg, uffdioRegisterWp(v.start, v.end));
    // EBUSY (the task's own userfaultfd has it) or EINVAL (a kind it cannot track): left out.
    rs.call(NR.ioctl, fd, UFFDIO.REGISTER, reg);
  }
  const ino = Deno.statSync(`/proc/${pid}/fd/${fd}`).ino ?? 0;
  return { pid, start: startTime(pid), fd, ino };
}

/**
 * Write-protects the tracked mappings of `pid` again, through its /proc/PID/pagemap, once their
 * pages are read. A mapping the tracking does not cover is left as it is (its pages show as
 * written).
 */
export function protectAgain(pid: number, vmas: Vma[]): void {
  const fd = open(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
  try {
    for (const v of tracked(vmas)) protectWritten(fd, v.start, v.end);
  } finally {
    close(fd);
  }
}

/** Writes the trackers and frames of a dump into `dir`. */
export function writeTracking(
  dir: ImagesDir,
  trackers: Map<number, Tracker>,
  frames: Map<number, Uint8Array>,
): string[] {
  const written: string[] = [];
  for (const [vpid, f] of frames) {
    const path = framesFile(dir, vpid);
    writeFileSynced(path, f);
    written.push(basename(path));
  }
  const tasks = Object.fromEntries([...trackers].map(([vpid, t]) => [`${vpid}`, t]));
  writeFileSynced(dir.file(TRACK_FILE), new TextEncoder().encode(JSON.stringify({ tasks })));
  written.push(TRACK_FILE);
  return written;
}
