/**
 * seccomp: each thread's mode (from its /proc status) and, in filter mode, its chain of BPF
 * filters (PTRACE_SECCOMP_GET_FILTER, newest first; their flags from
 * PTRACE_SECCOMP_GET_METADATA), written as criu writes them:
 *
 * ```
 * seccomp.img   seccomp_entry { seccomp_filters: [{ filter (BPF bytes), prev, flags }...] }
 * core-TID.img  thread_core { seccomp_mode, seccomp_filter (index of its oldest filter) }
 * ```
 * As criu writes a chain: newest first, each older filter naming the one written before it
 * (`prev`, so the newer one), and the thread naming its oldest; the restore installs from there,
 * following `prev`. Threads of a
 * process whose chains are all the same are written as criu does: the chain on the leader with
 * SECCOMP_FILTER_FLAG_TSYNC (the restore gives it to every thread at once, sharing it as
 * SECCOMP_FILTER_FLAG_TSYNC had), the other threads without a mode of their own.
 *
 * Refused: a filter that hands syscalls to a user-space supervisor (SECCOMP_RET_USER_NOTIF):
 * the supervisor's descriptor would not come back with it.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { type seccomp_filter, seccomp_filterSchema } from "../../proto/gen/misc_pb.ts";
import { ptraceSeccompFilter, ptraceSeccompFlags } from "../syscalls/ptrace.ts";
import { UnsupportedError } from "./file_types.ts";

/** SECCOMP_MODE_*, as /proc status shows them. */
export const SECCOMP_MODE = { DISABLED: 0, STRICT: 1, FILTER: 2 } as const;
/** SECCOMP_FILTER_FLAG_TSYNC. */
const FLAG_TSYNC = 1;
/** BPF_RET | BPF_K, and the return value that hands a syscall to a supervisor. */
const BPF_RET_K = 0x06, SECCOMP_RET_USER_NOTIF = 0x7fc00000;

/** A thread's seccomp state as its core image carries it. */
export interface ThreadSeccomp {
  mode: number;
  /** Index in seccomp.img of its oldest filter (filter mode), where the restore starts. */
  filter?: number;
}

/** The filters of the whole tree (seccomp.img), in the order they are written. */
export class SeccompImage {
  readonly filters: seccomp_filter[] = [];

  /**
   * The seccomp state of every thread of a process (leader first), with `modes` from each
   * thread's status; the threads are seized.
   */
  collect(tids: number[], modes: number[]): ThreadSeccomp[] {
    const chains = tids.map((tid, i) =>
      modes[i] === SECCOMP_MODE.FILTER ? readChain(tid) : undefined
    );
    const same = tids.length > 1 &&
      chains.every((c) => c !== undefined && sameChain(c, chains[0]!));
    return tids.map((_, i) => {
      if (same && i > 0) return { mode: SECCOMP_MODE.DISABLED }; // the leader's TSYNC gives it
      const chain = chains[i];
      if (!chain) return { mode: modes[i] };
      let prev: number | undefined;
      for (const f of [...chain].reverse()) {
        this.filters.push(
          create(seccomp_filterSchema, {
            filter: f.prog,
            prev,
            flags: f.flags | (same ? FLAG_TSYNC : 0),
          }),
        );
        prev = this.filters.length - 1;
      }
      return { mode: SECCOMP_MODE.FILTER, filter: prev };
    });
  }
}

interface Filter {
  prog: Uint8Array;
  flags: number;
}

/** Thread `tid`'s filters, oldest first (as the kernel numbers them). */
function readChain(tid: number): Filter[] {
  const out: Filter[] = [];
  for (let i = 0;; i++) {
    const prog = ptraceSeccompFilter(tid, i);
    if (!prog) break;
    checkFilter(tid, i, prog);
    out.push({ prog, flags: ptraceSeccompFlags(tid, i) });
  }
  return out;
}

function checkFilter(tid: number, index: number, prog: Uint8Array): void {
  const v = new DataView(prog.buffer, prog.byteOffset, prog.byteLength);
  for (let off = 0; off + 8 <= prog.length; off += 8) {
    // struct sock_filter: code u16, jt u8, jf u8, k u32.
    if (
      v.getUint16(off, true) === BPF_RET_K && v.getUint32(off + 4, true) === SECCOMP_RET_USER_NOTIF
    ) {
      throw new UnsupportedError(
        `Cannot dump thread ${tid}: its seccomp filter ${index} hands syscalls to a supervisor ` +
          `(SECCOMP_RET_USER_NOTIF), whose descriptor a restore cannot give back`,
      );
    }
  }
}

function sameChain(a: Filter[], b: Filter[]): boolean {
  return a.length === b.length &&
    a.every((f, i) =>
      f.flags === b[i].flags && f.prog.length === b[i].prog.length &&
      f.prog.every((x, j) => x === b[i].prog[j])
    );
}
