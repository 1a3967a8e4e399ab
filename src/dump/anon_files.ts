/**
 * Files whose state lives in an anonymous inode: eventfd, signalfd, timerfd, epoll, inotify.
 * `anonKind` reads one from fdinfo, `anonEntry` makes its files.img entry.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  eventfd_file_entrySchema,
  eventpoll_file_entrySchema,
  eventpoll_tfd_entrySchema,
  fanotify_file_entrySchema,
  fanotify_inode_mark_entrySchema,
  fanotify_mark_entrySchema,
  fanotify_mount_mark_entrySchema,
  fd_types,
  fh_entrySchema,
  type file_entry,
  file_entrySchema,
  inotify_file_entrySchema,
  inotify_wd_entrySchema,
  mark_type,
  signalfd_entrySchema,
  timerfd_entrySchema,
} from "../../proto/gen/files_pb.ts";
import { inputQueued, O, withTaskFd } from "../syscalls/mod.ts";
import { ownNamespace, parseFdinfo, readProcText } from "../tree/proc.ts";
import { type FileKind, type OpenFile, UnsupportedError } from "./file_types.ts";
import { inotifyWatches } from "./inotify.ts";
import { fanotifyGroup } from "./fanotify.ts";

/**
 * The state of an eventfd, signalfd, timerfd or epoll descriptor, from its fdinfo; an inotify
 * watch's file not found in the mount namespace of task `pid` is looked for in those of the
 * tasks `elsewhere`.
 */
export function anonKind(
  name: string,
  pid: number,
  fd: number,
  elsewhere: readonly number[] = [],
): FileKind {
  const x = parseFdinfo(readProcText(pid, `fdinfo/${fd}`)).extra;
  const pair = (v: string | undefined): [bigint, bigint] => {
    const m = /\((\d+),\s*(\d+)\)/.exec(v ?? "");
    return m ? [BigInt(m[1]), BigInt(m[2])] : [0n, 0n];
  };
  switch (name) {
    case "eventfd":
      return {
        type: "eventfd",
        counter: BigInt("0x" + (x.get("eventfd-count") ?? "0").trim()),
        semaphore: x.get("eventfd-semaphore") === "1",
      };
    case "signalfd":
      return { type: "signalfd", sigmask: BigInt("0x" + (x.get("sigmask") ?? "0")) };
    case "timerfd":
      return {
        type: "timerfd",
        clockid: Number(x.get("clockid") ?? 0),
        ticks: BigInt(x.get("ticks") ?? "0"),
        settimeFlags: parseInt(x.get("settime flags") ?? "0", 8),
        value: pair(x.get("it_value")),
        interval: pair(x.get("it_interval")),
      };
    case "fanotify": {
      const what = `fd ${fd} of task ${pid} (fanotify)`;
      // Marks of a task in a mount namespace of its own are found through it.
      const nsPid = ownNamespace(pid, "mnt") ? pid : undefined;
      let group;
      try {
        group = fanotifyGroup(readProcText(pid, `fdinfo/${fd}`), what, nsPid);
      } catch (e) {
        throw new UnsupportedError((e as Error).message);
      }
      return { type: "fanotify", group };
    }
    case "inotify": {
      const nsPid = ownNamespace(pid, "mnt") ? pid : undefined;
      const watches = inotifyWatches(readProcText(pid, `fdinfo/${fd}`), nsPid, elsewhere);
      const queued = withTaskFd(pid, fd, (copy) => inputQueued(copy, `fd ${fd} of task ${pid}`));
      if (queued > 0) {
        throw new UnsupportedError(
          `Cannot dump fd ${fd} of task ${pid} (inotify): ${queued} bytes of events are ` +
            `waiting to be read, and a restore cannot queue them again`,
        );
      }
      const lost = watches.find((w) => !w.path && !w.deleted);
      if (lost) {
        throw new UnsupportedError(
          `Cannot dump fd ${fd} of task ${pid} (inotify): the file of watch ${lost.wd} ` +
            `(inode ${lost.ino}) cannot be found`,
        );
      }
      return { type: "inotify", watches };
    }
    default: {
      const text = readProcText(pid, `fdinfo/${fd}`);
      const tfds = [
        ...text.matchAll(
          /^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)(?:\s+pos:\s*(\d+)\s+ino:\s*([0-9a-f]+)\s+sdev:\s*([0-9a-f]+))?/gm,
        ),
      ]
        .map((m) => ({
          fd: Number(m[1]),
          events: parseInt(m[2], 16),
          data: BigInt("0x" + m[3]),
          // Which file it watches (criu writes them, to find dup'ed targets).
          target: m[4] === undefined
            ? undefined
            : { pos: BigInt(m[4]), inode: BigInt("0x" + m[5]), dev: parseInt(m[6], 16) },
        }));
      return { type: "eventpoll", tfds };
    }
  }
}

/** The file entry of an eventfd, signalfd, timerfd or epoll description. */
export function anonEntry(file: OpenFile): file_entry {
  const base = { id: file.id, fown: file.fown };
  const k = file.kind;
  switch (k.type) {
    case "eventfd":
      return create(file_entrySchema, {
        type: fd_types.EVENTFD,
        id: file.id,
        // Bit 0 (O_WRONLY) is never set on an eventfd: it carries EFD_SEMAPHORE.
        efd: create(eventfd_file_entrySchema, {
          ...base,
          flags: (file.flags & ~O.ACCMODE) | O.RDWR | (k.semaphore ? 1 : 0),
          counter: k.counter,
        }),
      });
    case "signalfd":
      return create(file_entrySchema, {
        type: fd_types.SIGNALFD,
        id: file.id,
        sgfd: create(signalfd_entrySchema, { ...base, flags: file.flags, sigmask: k.sigmask }),
      });
    case "timerfd":
      return create(file_entrySchema, {
        type: fd_types.TIMERFD,
        id: file.id,
        tfd: create(timerfd_entrySchema, {
          ...base,
          flags: file.flags,
          clockid: k.clockid,
          ticks: k.ticks,
          settimeFlags: k.settimeFlags,
          vsec: k.value[0],
          vnsec: k.value[1],
          isec: k.interval[0],
          insec: k.interval[1],
        }),
      });
    case "fanotify":
      return create(file_entrySchema, {
        type: fd_types.FANOTIFY,
        id: file.id,
        ffy: create(fanotify_file_entrySchema, {
          id: file.id,
          flags: file.flags,
          fown: file.fown,
          faflags: k.group.faflags,
          evflags: k.group.evflags,
          mark: k.group.marks.map((m) =>
            create(fanotify_mark_entrySchema, {
              id: file.id,
              type: m.kind === "inode" ? mark_type.INODE : mark_type.MOUNT,
              mflags: m.mflags,
              mask: m.mask,
              ignoredMask: m.ignoredMask,
              sDev: m.sdev,
              ie: m.kind === "inode"
                ? create(fanotify_inode_mark_entrySchema, {
                  iIno: m.ino,
                  fHandle: fhEntry(m.handle, m.handleType, m.path),
                })
                : undefined,
              me: m.kind === "mount"
                ? create(fanotify_mount_mark_entrySchema, { mntId: m.mntId, path: m.path })
                : undefined,
            })
          ),
        }),
      });
    case "inotify":
      return create(file_entrySchema, {
        type: fd_types.INOTIFY,
        id: file.id,
        ify: create(inotify_file_entrySchema, {
          id: file.id,
          flags: file.flags,
          fown: file.fown,
          wd: k.watches.map((w) => {
            return create(inotify_wd_entrySchema, {
              id: file.id,
              iIno: w.ino,
              mask: w.mask,
              ignoredMask: w.ignoredMask,
              sDev: w.sdev,
              wd: w.wd,
              fHandle: fhEntry(w.handle, w.handleType, w.path, w.mntId),
            });
          }),
        }),
      });
    case "eventpoll":
      return create(file_entrySchema, {
        type: fd_types.EVENTPOLL,
        id: file.id,
        epfd: create(eventpoll_file_entrySchema, {
          ...base,
          flags: file.flags,
          tfd: k.tfds.map((t) =>
            create(eventpoll_tfd_entrySchema, {
              id: 0, // as criu writes it (the field named the epoll file in old images)
              // As criu: a descriptor holding the target; the number it was added under too.
              tfd: t.holder ?? t.fd,
              keyFd: t.holder === undefined ? undefined : t.fd,
              events: t.events,
              data: t.data,
              ...t.target,
            })
          ),
        }),
      });
    default:
      throw new Error(`Not an anonymous-inode file: ${k.type}`);
  }
}

/**
 * A file handle as criu keeps it: its bytes in 16 words, with the path beside, and the mount
 * whose namespace the path is in when it is not the holder's (`mntId`).
 */
function fhEntry(handle: Uint8Array, type: number, path: string, mntId?: number) {
  const words = new BigUint64Array(16);
  new Uint8Array(words.buffer).set(handle.subarray(0, 128));
  return create(fh_entrySchema, {
    bytes: handle.length,
    type,
    handle: [...words],
    path: path || undefined,
    mntId,
  });
}
