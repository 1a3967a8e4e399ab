/**
 * Handing descriptors to a task being restored: `installFiles` sends it, over an abstract unix
 * socket with SCM_RIGHTS, the open file descriptions it had (made once in the FileTable) and
 * puts them at the dumped numbers; then the restorer's own (pages-N.img, mapped files, shared
 * memory, the exe) above them. File locks and epoll registrations, which name descriptor
 * numbers, are made here too, by the task itself.
 *
 * @module
 */
import { Errno, NR, O, readRemote, remoteAdd, remotePtr, writeRemote } from "../syscalls/mod.ts";
import { close, F, fcntl, pidfdOpen, tryOpen, withTaskFd } from "../syscalls/mod.ts";
import {
  AF_UNIX,
  MSG_CMSG_CLOEXEC,
  parseRights,
  recvMsgBlock,
  SCM_MAX_FD,
  sendFds,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
} from "../syscalls/socket.ts";
import { VMA } from "../pagemap/vma.ts";
import { isFieldSet } from "../images/protobuf.ts";
import { vma_entrySchema } from "../../proto/gen/mm_pb.ts";
import {
  type eventpoll_file_entry,
  type eventpoll_tfd_entry,
  eventpoll_tfd_entrySchema,
  fd_types,
} from "../../proto/gen/files_pb.ts";
import { mapKey } from "./memory.ts";
import { taskBatch, type TaskCall, taskSyscall } from "./task_syscall.ts";
import { isRingFile, makeRing, ringMaker, ringsInMemory, takeRing } from "./io_uring.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { RemoteArena } from "./arena.ts";
import { pidNamespacesOf } from "./nested_pidns.ts";
import { type FileTable, isLateFile, onAnotherNestedNamespace, RestoreError } from "./files.ts";
import { TCP_STATE } from "../net/tcp_state.ts";
import { LEASE_BREAKING } from "../dump/locks.ts";
import { type DumpImages, hostPath, type TaskImages } from "./images.ts";

const F_SETFD = 2;
const F_DUPFD_CLOEXEC = 1030;

/** Descriptors the restorer uses inside the task, closed before it resumes. */
export interface ServiceFds {
  /** The pages files (TaskImages.pagesPaths). */
  pages: number[];
  /** Mapped files by {@link mapKey} (file id and access). */
  maps: Map<string, number>;
  /** io_uring instances the task holds, by file id (their rings are mapped through these). */
  rings: Map<number, number>;
  /** Instances it makes once its memory is back (set up on that memory), by file id. */
  ringsLater: number[];
  /** Where the restorer's own descriptors start (above the task's). */
  high: number;
  /** Shared anonymous memory objects made by an earlier task, by inode. */
  shmem: Map<bigint, number>;
  exe: number;
  /**
   * The working directory, opened by criu, in a user namespace of the tree's own: its path may
   * lie below a directory criu may enter and the namespace's root may not.
   */
  cwd?: number;
  /** The root it chose (chroot), opened by criu, with {@link cwd}. */
  root?: number;
  /** Every service descriptor, for closing. */
  all: number[];
}

/**
 * Gives the task its descriptors at their dumped numbers, and the restorer's own (pages-N.img,
 * mapped files, exe) above them.
 */
export function installFiles(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  table: FileTable,
  dump: DumpImages,
  task: TaskImages,
  shmemHere: Map<bigint, number>,
  sharedTable = false,
  realPid: (virt: number) => number = (v) => v,
): ServiceFds {
  const pid = rs.task.pid;
  const high = Math.max(64, ...task.fds.map((f) => f.fd + 1));
  const sys = taskSyscall(rs);
  const batch = taskBatch(rs);

  // What to send: each file entry once, then the restorer's own files. A table shared with an
  // earlier process (CLONE_FILES) has its descriptors already: only the restorer's go in.
  // pidfds of the tree's tasks wait until every task exists (restorePidfds).
  const held = sharedTable ? [] : [...new Set(task.fds.map((f) => f.id))];
  // io_uring instances are made in the task (none passes over a unix socket): below.
  const rings = held.filter((id) => isRingFile(dump.files.get(id)));
  const ids = held.filter((id) =>
    !isLateFile(dump.files.get(id), dump, task) && !isRingFile(dump.files.get(id))
  );
  const ours = ids.map((id) => table.file(id, task.fds.find((f) => f.id === id)!.fd, pid));
  const service: { key: string; fd: number }[] = [
    // The pages files: these images', and the parents' that hold some of its pages.
    ...task.pagesPaths.map((path, i) => ({
      key: `pages:${i}`,
      fd: table.service(path, O.RDONLY, "image"),
    })),
  ];
  for (const v of task.mm.vmas) {
    if (!(v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED | VMA.AREA_SOCKET))) continue;
    const id = Number(v.shmid);
    const key = `map:${mapKey(v)}`;
    if (service.some((s) => s.key === key)) continue;
    const f = dump.files.get(id);
    if (v.status & VMA.AREA_SOCKET) {
      // A packet socket's rings: mapped through the socket the task holds (made above).
      if (f?.type !== fd_types.PACKETSK || !task.fds.some((x) => x.id === id)) {
        throw new RestoreError(
          `Cannot restore the mapping at ${v.start.toString(16)} of task ${pid}: file ${id} ` +
            `is not a packet socket the task holds`,
        );
      }
      service.push({ key, fd: table.file(id, -1, pid) });
      continue;
    }
    const access = isFieldSet(v, vma_entrySchema.field.fdflags) ? v.fdflags & 3 : undefined;
    if (f?.memfd) {
      service.push({ key, fd: table.mappedMemfd(id, access) });
      continue;
    }
    const reg = f?.reg;
    if (!reg) throw new RestoreError(`File ${id} of a mapping is missing from files.img`);
    const flags = access === undefined ? reg.flags : (reg.flags & ~3) | access;
    service.push({ key, fd: table.mappedFile(id, flags) });
  }
  for (const v of task.mm.vmas) {
    if (!(v.status & VMA.ANON_SHARED) || v.status & VMA.AREA_SYSVIPC) continue;
    if (!shmemHere.has(v.shmid)) continue;
    if (service.some((s) => s.key === `shm:${v.shmid}`)) continue;
    service.push({ key: `shm:${v.shmid}`, fd: shmemHere.get(v.shmid)! });
  }
  const exe = dump.files.get(task.mm.exeFileId)?.reg;
  if (!exe) throw new RestoreError(`The executable of task ${pid} is missing from files.img`);
  service.push({ key: "exe", fd: table.service(hostPath(dump, exe.name), O.RDONLY, "executable") });
  if (dump.userns && !dump.deadProcs.has(task.fs.cwdId) && dump.files.get(task.fs.cwdId)?.reg) {
    service.push({ key: "cwd", fd: table.file(task.fs.cwdId, -1, pid) });
    // So is a root it chose (chroot), entered the same way.
    const root = dump.files.get(task.fs.rootId)?.reg?.name;
    if (root && root !== "/" && !dump.deadProcs.has(task.fs.rootId)) {
      service.push({ key: "root", fd: table.file(task.fs.rootId, -1, pid) });
    }
  }

  // A clean table: the helper's stdio is not the task's.
  if (!sharedTable) sys(NR.close_range, "close_range", 0, 0xffffffff, 0);
  // An io_uring instance another process makes (inherited through fork): taken from there,
  // through a pidfd of it sent in.
  const criuPidfds: number[] = [];
  let received: number[];
  try {
    for (const id of rings) {
      const maker = ringMaker(dump.files.get(id)!);
      if (maker === undefined || maker === task.pstree.pid) continue;
      let real: number;
      try {
        real = realPid(maker);
      } catch {
        throw new RestoreError(
          `Cannot restore io_uring instance ${id} of task ${task.pstree.pid}: its maker ` +
            `${maker} is not made yet`,
        );
      }
      criuPidfds.push(pidfdOpen(real));
      service.push({ key: `ring:${id}`, fd: criuPidfds.at(-1)! });
    }
    received = transfer(rs, arena, [...ours, ...service.map((s) => s.fd)], high);
  } finally {
    for (const fd of criuPidfds) close(fd);
  }

  batch(ids.flatMap((id, i) => [
    ...task.fds.filter((f) => f.id === id).flatMap((fdi): TaskCall[] => {
      const cloexec = (fdi.flags & 1) !== 0;
      const dup: TaskCall = {
        nr: NR.dup3,
        name: "dup3",
        args: [received[i], fdi.fd, cloexec ? O.CLOEXEC : 0],
      };
      return cloexec
        ? [dup]
        : [dup, { nr: NR.fcntl, name: "fcntl(F_SETFD)", args: [fdi.fd, F_SETFD, 0] }];
    }),
    { nr: NR.close, name: "close", args: [received[i]] },
  ]));
  const ringFds = new Map<number, number>();
  const receivedAs = (key: string) =>
    received[ids.length + service.findIndex((s) => s.key === key)];
  const ringsLater: number[] = [];
  for (const id of rings) {
    const f = dump.files.get(id)!;
    const maker = ringMaker(f);
    // One set up on the task's own memory is made once that is back (makeRingsInMemory).
    if ((maker === undefined || maker === task.pstree.pid) && ringsInMemory(f)) {
      ringsLater.push(id);
      continue;
    }
    ringFds.set(
      id,
      maker === undefined || maker === task.pstree.pid
        ? makeRing(sys, arena, pid, task, f, high)
        : takeRing(sys, dump, task, f, receivedAs(`ring:${id}`), high),
    );
  }
  // File locks taken through this task's descriptors, as it held them.
  for (const l of dump.locks) {
    if (l.pid !== task.pstree.pid) continue;
    arena.reset();
    if (l.flag === 8) {
      // A lease: taken by the task (it is its holder); one breaking is taken as it was before
      // the break, then broken again, which starts the break time anew.
      const F_SETLEASE = 1024, F_RDLCK = 0, F_WRLCK = 1;
      const breaking = (l.type & LEASE_BREAKING) !== 0;
      const reg = dump.files.get(task.fds.find((f) => f.fd === l.fd)?.id ?? -1)?.reg;
      const type = breaking ? ((reg?.flags ?? 0) & 3) === O.RDONLY ? F_RDLCK : F_WRLCK : l.type;
      // In a user namespace of its own the task lacks CAP_LEASE (it is criu's namespace's):
      // it takes the lease as the file's owner, its file-system uid for the call.
      const owner = dump.userns?.uid.inside(Deno.statSync(`/proc/${pid}/fd/${l.fd}`).uid!);
      if (owner !== undefined) sys(NR.setfsuid, "setfsuid", owner);
      try {
        sys(NR.fcntl, `lease on fd ${l.fd}`, l.fd, F_SETLEASE, type);
      } finally {
        if (owner !== undefined) rs.call(NR.setfsuid, 0);
      }
      // Broken before the task's signals are set: the break's own signal is not one of them.
      if (breaking) breakLease(pid, l.fd, l.type & ~LEASE_BREAKING);
    } else if (l.flag === 2) {
      const LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4;
      sys(NR.flock, `flock(fd ${l.fd})`, l.fd, (l.type === 1 ? LOCK_EX : LOCK_SH) | LOCK_NB);
    } else {
      const fl = new Uint8Array(32); // struct flock: type, whence (i16), start, len (i64), pid
      const v = new DataView(fl.buffer);
      v.setInt16(0, l.type, true);
      v.setBigInt64(8, l.start, true);
      v.setBigInt64(16, l.len, true);
      const F_SETLK = 6, F_OFD_SETLK = 37;
      sys(
        NR.fcntl,
        `lock fd ${l.fd}`,
        l.fd,
        l.flag & 4 || l.flag === 1024 ? F_OFD_SETLK : F_SETLK, // 1024: how deno-criu 0.1.0 wrote OFD
        arena.put(fl),
      );
    }
  }
  // epoll sets are keyed by (file, descriptor number): register the task's own numbers, once
  // per set (a set inherited by children is one set).
  const addTargets = (epfd: number, ep: eventpoll_file_entry) => {
    for (const t of ep.tfd) {
      // A target made late (a /proc file, a pidfd of the tree) is added once it is there.
      if (isLateTarget(dump, task, t)) continue;
      arena.reset();
      const ev = epollEvent(t);
      // Added under a number that is closed now or holds another file (deno-criu's key_fd):
      // the file `tfd` holds goes under that number for the time of the call.
      const key = isFieldSet(t, eventpoll_tfd_entrySchema.field.keyFd) ? t.keyFd : t.tfd;
      const there = task.fds.find((f) => f.fd === key);
      let saved = -1;
      if (key !== t.tfd) {
        if (there) saved = sys(NR.fcntl, "fcntl(F_DUPFD)", key, F_DUPFD_CLOEXEC, high);
        sys(NR.dup3, "dup3", t.tfd, key, 0);
      }
      sys(NR.epoll_ctl, `epoll_ctl(fd ${key})`, epfd, 1, /* EPOLL_CTL_ADD */ key, arena.put(ev));
      if (key !== t.tfd) {
        if (saved >= 0) {
          sys(NR.dup3, "dup3", saved, key, there!.flags & 1 ? O.CLOEXEC : 0);
          sys(NR.close, "close", saved);
        } else {
          sys(NR.close, "close", key);
        }
      }
    }
  };
  for (const fdi of task.fds) {
    const ep = dump.files.get(fdi.id)?.epfd;
    if (!ep || task.fds.find((f) => f.id === fdi.id) !== fdi || !table.firstUse(fdi.id)) continue;
    addTargets(fdi.fd, ep);
  }
  // epoll sets in flight in the queues of unix sockets this task was the first to hold: their
  // targets are this task's files (the dump found them here); added through a copy sent in.
  const inFlight = inFlightEpolls(dump, task).filter((id) => table.firstUse(id));
  if (inFlight.length) {
    const copies = transfer(rs, arena, inFlight.map((id) => table.file(id, -1, pid)), high);
    inFlight.forEach((id, i) => {
      addTargets(copies[i], dump.files.get(id)!.epfd!);
      sys(NR.close, "close", copies[i]);
    });
  }
  // A unix listener (made by criu) listens again in its task: the credentials a connection to
  // it reports (SO_PEERCRED: systemd's clients ask) are those of who called listen().
  for (const fdi of sharedTable ? [] : task.fds) {
    const u = dump.files.get(fdi.id)?.usk;
    if (u?.state !== TCP_STATE.LISTEN) continue;
    if (task.fds.find((f) => f.id === fdi.id) !== fdi) continue;
    sys(NR.listen, `listen(fd ${fdi.fd})`, fdi.fd, u.backlog);
  }
  // (The pidfds of io_uring makers are closed already.)
  const svc = new Map(
    service.map((s, i) => [s.key, received[ids.length + i]] as const).filter(([key]) =>
      !key.startsWith("ring:")
    ),
  );
  const maps = new Map<string, number>();
  const shmem = new Map<bigint, number>();
  for (const [key, fd] of svc) {
    if (key.startsWith("map:")) maps.set(key.slice(4), fd);
    if (key.startsWith("shm:")) shmem.set(BigInt(key.slice(4)), fd);
  }
  return {
    pages: task.pagesPaths.map((_, i) => svc.get(`pages:${i}`)!),
    maps,
    shmem,
    exe: svc.get("exe")!,
    cwd: svc.get("cwd"),
    root: svc.get("root"),
    rings: ringFds,
    ringsLater,
    high,
    all: [...svc.values(), ...ringFds.values()],
  };
}

/**
 * The epoll sets in flight in the queues of the unix sockets of `task` that no task before it
 * (in the images' order) holds.
 */
function inFlightEpolls(dump: DumpImages, task: TaskImages): number[] {
  const out = new Set<number>();
  for (const f of task.fds) {
    if (dump.files.get(f.id)?.type !== fd_types.UNIXSK) continue;
    if (dump.tasks.find((t) => t.fds.some((x) => x.id === f.id)) !== task) continue;
    for (const m of dump.skQueues.get(f.id) ?? []) {
      for (const r of m.rights) if (dump.files.get(r)?.epfd) out.add(r);
    }
  }
  return [...out];
}

/** Sends `fds` into the task; returns their numbers there, each moved to `high` or above. */
function transfer(
  rs: RemoteSyscalls,
  arena: RemoteArena,
  fds: number[],
  high: number,
  context = `in restored task ${rs.task.pid}`,
): number[] {
  const pid = rs.task.pid;
  const sys = taskSyscall(rs, context);
  const batch = taskBatch(rs, context);
  // A socket pair made in the task, one end taken here: it needs no name, which a task in
  // another network namespace could not share with criu.
  arena.reset();
  const pairAt = arena.put(new Uint8Array(8));
  sys(NR.socketpair, "socketpair(AF_UNIX)", AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pairAt);
  const pair = new Int32Array(2);
  readRemote(pid, pairAt, new Uint8Array(pair.buffer));
  const sock = pair[0];
  const out: number[] = [];
  let sender = -1, peer = pair[1], open = true;
  try {
    sender = withTaskFd(pid, peer, (copy) => fcntl(copy, F.DUPFD_CLOEXEC, 3));
    for (let i = 0; i < fds.length; i += SCM_MAX_FD) {
      arena.reset();
      const sending = fds.slice(i, i + SCM_MAX_FD);
      sendFds(sender, sending);
      const base = arena.reserve(0);
      const block = recvMsgBlock(base, sending.length);
      const at = arena.put(block.bytes);
      // The task's copy of our end closed (once) with the first receipt, in one batch.
      const closing = peer >= 0 ? [{ nr: NR.close, name: "close", args: [peer] }] : [];
      peer = -1;
      batch([...closing, {
        nr: NR.recvmsg,
        name: "recvmsg(SCM_RIGHTS)",
        args: [sock, BigInt(at), MSG_CMSG_CLOEXEC],
      }]);
      const control = new Uint8Array(block.bytes.length - block.controlOffset);
      readRemote(pid, remoteAdd(at, block.controlOffset), control);
      const got = parseRights(control);
      if (got.length !== sending.length) {
        throw new RestoreError(
          `Task ${pid} received ${got.length} of ${sending.length} descriptors`,
        );
      }
      // Each moved up (the numbers below are the task's), the received one closed; with the
      // last, the task's end of the pair.
      const last = i + SCM_MAX_FD >= fds.length;
      if (last) open = false; // closed by the batch, whatever else in it fails
      const moved = batch([
        ...got.flatMap((fd) => [
          { nr: NR.fcntl, name: "fcntl(F_DUPFD_CLOEXEC)", args: [fd, F_DUPFD_CLOEXEC, high] },
          { nr: NR.close, name: "close", args: [fd] },
        ]),
        ...(last ? [{ nr: NR.close, name: "close", args: [sock] }] : []),
      ]);
      got.forEach((_, k) => out.push(moved[2 * k]));
    }
  } finally {
    if (sender >= 0) close(sender);
    if (open) rs.call(NR.close, sock);
    if (peer >= 0) rs.call(NR.close, peer);
  }
  return out;
}

/**
 * Descriptor `fd` of criu's sent into the task of `rs`: its number there (close-on-exec, 64 or
 * above), for `what`.
 */
export function sendFd(rs: RemoteSyscalls, fd: number, what: string): number {
  const arena = new RemoteArena(rs.task.pid, rs.scratch(4096), 4096);
  const [got] = transfer(rs, arena, [fd], 64, `${what}, in task ${rs.task.pid}`);
  return got;
}

/**
 * The descriptors of `task` that refer to tasks of the tree, made inside it once every task
 * exists: pidfds (pidfd_open there) and /proc files of the tree's tasks (opened there, so that
 * they name the restored tasks), moved to their numbers; one description per file entry. Files
 * on mounts of another nested mount namespace are opened by criu (`table`) and handed over.
 */
export function restoreLateFiles(
  rs: RemoteSyscalls,
  dump: DumpImages,
  task: TaskImages,
  table: FileTable,
): void {
  const pid = rs.task.pid;
  const made = new Map<number, number>();
  let page = 0n;
  try {
    let target = "";
    const sys = (nr: number, name: string, ...args: (bigint | number)[]) => {
      const ret = rs.call(nr, ...args);
      if (ret < 0n) throw new Errno(name, Number(-ret), target);
      return ret;
    };
    // A page of the task's for the calls' arguments, mapped on first need.
    const room = () =>
      page ||= sys(NR.mmap, "mmap", 0, 4096, 3, /* RW */ 0x22, /* PRIVATE|ANON */ -1, 0);
    for (const fdi of task.fds) {
      const f = dump.files.get(fdi.id);
      if (!isLateFile(f, dump, task)) continue;
      target = `for fd ${fdi.fd} of restored task ${pid}`;
      const cloexec = (fdi.flags & 1) !== 0 ? O.CLOEXEC : 0;
      const have = made.get(fdi.id);
      if (have !== undefined) {
        sys(NR.dup3, "dup3", have, fdi.fd, cloexec);
        continue;
      }
      let tmp: number;
      if (f!.reg && onAnotherNestedNamespace(f!.reg, dump, task)) {
        const arena = new RemoteArena(pid, rs.scratch(4096), 4096);
        [tmp] = transfer(rs, arena, [table.file(fdi.id, fdi.fd, pid)], 64, target);
      } else if (f!.pidfd) {
        const e = f!.pidfd;
        const PIDFD_THREAD = O.EXCL;
        tmp = Number(
          sys(
            NR.pidfd_open,
            `pidfd_open(${e.nspid})`,
            e.nspid > 0 ? pidNamespacesOf(dump).seenBy(task, e.nspid, `pidfd ${fdi.fd}`) : e.nspid,
            e.flags & (O.NONBLOCK | PIDFD_THREAD),
          ),
        );
      } else {
        // /dev/tty names the task's controlling terminal, there by now.
        const reg = f!.reg ??
          { name: "/dev/tty", flags: f!.tty!.flags & ~(O.CREAT | O.EXCL | O.TRUNC), pos: 0n };
        // Its name goes into a page of the task's for the call.
        const name = new TextEncoder().encode(reg.name + "\0");
        if (name.length > 4096) throw new RestoreError(`Path too long: ${reg.name}`);
        writeRemote(pid, remotePtr(room()), name);
        tmp = Number(
          sys(NR.openat, `open ${reg.name}`, -100, page, (reg.flags & ~O.CLOEXEC) | O.CLOEXEC, 0),
        );
        if (reg.pos > 0n) sys(NR.lseek, "lseek", tmp, reg.pos, 0);
      }
      if (tmp !== fdi.fd) {
        sys(NR.dup3, "dup3", tmp, fdi.fd, cloexec);
        sys(NR.close, "close", tmp);
      } else if (!cloexec) {
        sys(NR.fcntl, "fcntl(F_SETFD)", fdi.fd, F_SETFD, 0);
      }
      made.set(fdi.id, fdi.fd);
    }
    // The epoll sets this task holds first get their targets made here now.
    for (const fdi of task.fds) {
      const ep = dump.files.get(fdi.id)?.epfd;
      if (!ep || dump.tasks.find((t) => t.fds.some((x) => x.id === fdi.id)) !== task) continue;
      if (task.fds.find((f) => f.id === fdi.id) !== fdi) continue;
      for (const t of ep.tfd) {
        if (!isLateTarget(dump, task, t)) continue;
        target = `epoll target fd ${t.tfd} of restored task ${pid}`;
        writeRemote(pid, remotePtr(room()), epollEvent(t));
        sys(NR.epoll_ctl, "epoll_ctl", fdi.fd, 1, /* EPOLL_CTL_ADD */ t.tfd, page);
      }
    }
  } finally {
    if (page) rs.call(NR.munmap, page, 4096);
  }
}

/** The struct epoll_event of target `t` (packed: u32 events, u64 data). */
function epollEvent(t: eventpoll_tfd_entry): Uint8Array {
  const ev = new Uint8Array(12);
  const v = new DataView(ev.buffer);
  v.setUint32(0, t.events, true);
  v.setBigUint64(4, t.data, true);
  return ev;
}

/** Whether epoll target `t` of a set of `task` is a file made late (restoreLateFiles). */
function isLateTarget(dump: DumpImages, task: TaskImages, t: eventpoll_tfd_entry): boolean {
  if (isFieldSet(t, eventpoll_tfd_entrySchema.field.keyFd) && t.keyFd !== t.tfd) return false;
  const fdi = task.fds.find((f) => f.fd === t.tfd);
  return fdi !== undefined && isLateFile(dump.files.get(fdi.id), dump, task);
}

/**
 * Breaks a lease again: an open of its file that conflicts with it (read-only for a break to a
 * read lease, write-only for one to none), non-blocking, from here; it fails with EWOULDBLOCK
 * and leaves the lease breaking to type `target`.
 */
function breakLease(pid: number, fd: number, target: number): void {
  const opened = tryOpen(
    `/proc/${pid}/fd/${fd}`,
    (target === 0 ? O.RDONLY : O.WRONLY) | O.NONBLOCK | O.CLOEXEC,
  );
  if (opened >= 0) {
    close(opened);
    throw new RestoreError(`Cannot break the lease on fd ${fd} of task ${pid} again`);
  }
}
