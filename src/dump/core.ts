/**
 * Maps a collected {@link TaskState} onto CRIU's core_entry (core-PID.img).
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import {
  type core_entry,
  core_entry_march,
  core_entrySchema,
  creds_entrySchema,
  itimer_entrySchema,
  posix_timer_entrySchema,
  rlimit_entrySchema,
  rseq_entrySchema,
  sa_entrySchema,
  seccomp_mode,
  siginfo_entrySchema,
  signal_queue_entrySchema,
  task_core_entrySchema,
  task_rlimits_entrySchema,
  task_timers_entrySchema,
  thread_core_entrySchema,
  thread_info_x86Schema,
  thread_sas_entrySchema,
} from "../../proto/gen/core_pb.ts";
import { fpregsEntry, gpregsEntry } from "../images/x86.ts";
import { NR, REG } from "../syscalls/mod.ts";
import { TASK_STATE } from "../tree/seize.ts";
import type { TaskState, ThreadState } from "./task.ts";

const ERESTARTSYS = 512n, ERESTARTNOINTR = 513n, ERESTARTNOHAND = 514n;
const ERESTART_RESTARTBLOCK = 516n;

/**
 * The registers a restored task must resume with. A task frozen inside a syscall that the
 * kernel would restart (ax = -ERESTART*) is rewound to the `syscall` instruction with the
 * syscall number back in ax, as the kernel itself does when no handler runs.
 */
export function restartableRegs(regs: BigUint64Array): BigUint64Array {
  const out = new BigUint64Array(regs);
  const origAx = BigInt.asIntN(64, regs[REG.orig_ax]);
  if (origAx < 0n) return out;
  const ax = -BigInt.asIntN(64, regs[REG.ax]);
  if (ax === ERESTARTSYS || ax === ERESTARTNOINTR || ax === ERESTARTNOHAND) {
    out[REG.ax] = regs[REG.orig_ax];
    out[REG.ip] -= 2n;
  } else if (ax === ERESTART_RESTARTBLOCK) {
    out[REG.ax] = BigInt(NR.restart_syscall);
    out[REG.ip] -= 2n;
  }
  return out;
}

function capWords(caps: bigint): number[] {
  return [Number(caps & 0xffffffffn), Number(caps >> 32n)];
}

const sigQueue = (infos: Uint8Array[]) =>
  create(signal_queue_entrySchema, {
    signals: infos.map((siginfo) => create(siginfo_entrySchema, { siginfo })),
  });

function seccompMode(mode: number): seccomp_mode {
  return [seccomp_mode.disabled, seccomp_mode.strict, seccomp_mode.filter][mode] ??
    seccomp_mode.disabled;
}

/**
 * Ids as the tree sees them: criu's own (from /proc) turned into those of the tree's user
 * namespace (the identity without one of its own); `what` names whose ids they are.
 */
export interface TreeIds {
  uid(id: number, what: string): number;
  gid(id: number, what: string): number;
}

/** thread_info and thread_core of one thread. */
function threadParts(th: ThreadState, ids: TreeIds) {
  // Credentials are each thread's own (a raw setresuid() changes one thread), carried as the
  // thread sees them (criu's parasite reads them inside).
  const s = th.status;
  const who = `thread ${th.tid}`;
  const uid = (i: number) => ids.uid(s.uids[i], who);
  const gid = (i: number) => ids.gid(s.gids[i], who);
  return {
    threadInfo: create(thread_info_x86Schema, {
      clearTidAddr: th.clearTidAddr,
      gpregs: gpregsEntry(restartableRegs(th.regs)),
      fpregs: fpregsEntry(th.xsave),
    }),
    threadCore: create(thread_core_entrySchema, {
      futexRla: th.robustList.head,
      futexRlaLen: th.robustList.len,
      schedNice: th.stat.nice,
      schedPolicy: th.schedPolicy,
      schedPrio: th.stat.rtPriority,
      blkSigset: th.sigmask,
      sas: create(thread_sas_entrySchema, {
        ssSp: th.altstack.sp,
        ssSize: th.altstack.size,
        ssFlags: th.altstack.flags >>> 0,
      }),
      pdeathSig: th.pdeathSig,
      signalsP: sigQueue(th.pendingThread),
      creds: create(creds_entrySchema, {
        uid: uid(0),
        euid: uid(1),
        suid: uid(2),
        fsuid: uid(3),
        gid: gid(0),
        egid: gid(1),
        sgid: gid(2),
        fsgid: gid(3),
        capInh: capWords(s.capInh),
        capPrm: capWords(s.capPrm),
        capEff: capWords(s.capEff),
        capBnd: capWords(s.capBnd),
        capAmb: capWords(s.capAmb),
        secbits: th.secureBits,
        groups: s.groups.map((g) => ids.gid(g, who)),
        noNewPrivs: s.noNewPrivs,
      }),
      // As criu writes them: only a mode of its own (a thread given its leader's filters at
      // restore has none), with its oldest filter in filter mode (where the chain starts).
      seccompMode: th.seccomp?.mode ? seccompMode(th.seccomp.mode) : undefined,
      seccompFilter: th.seccomp?.filter,
      cgSet: th.cgSet,
      comm: th.stat.comm,
      rseqEntry: th.rseq.pointer
        ? create(rseq_entrySchema, {
          rseqAbiPointer: th.rseq.pointer,
          rseqAbiSize: th.rseq.size,
          signature: th.rseq.signature,
        })
        : undefined,
    }),
  };
}

/** The core_entry of a process's leader thread (with the process-wide task core). */
export function coreEntry(t: TaskState, ids: TreeIds): core_entry {
  const [real, virt, prof] = t.itimers.map(([isec, iusec, vsec, vusec]) =>
    create(itimer_entrySchema, { isec, iusec, vsec, vusec })
  );
  return create(core_entrySchema, {
    mtype: core_entry_march.X86_64,
    ...threadParts({ ...t, tid: t.pid }, ids),
    tc: create(task_core_entrySchema, {
      taskState: t.wasStopped ? TASK_STATE.STOPPED : TASK_STATE.ALIVE,
      stopSigno: t.stopSigno || undefined,
      exitCode: 0,
      personality: t.personality,
      flags: t.stat.flags,
      blkSigset: t.sigmask,
      comm: t.stat.comm,
      timers: create(task_timers_entrySchema, {
        real,
        virt,
        prof,
        posix: t.posixTimers.map((p) =>
          create(posix_timer_entrySchema, {
            itId: p.id,
            clockId: p.clockId,
            siSigno: p.signo,
            itSigevNotify: p.notify,
            sivalPtr: p.sival,
            overrun: p.overrun,
            isec: p.interval[0],
            insec: p.interval[1],
            vsec: p.value[0],
            vnsec: p.value[1],
            notifyThreadId: p.notify === 4 ? p.notifyTid : undefined,
          })
        ),
      }),
      rlimits: create(task_rlimits_entrySchema, {
        rlimits: t.rlimits.map(([cur, max]) => create(rlimit_entrySchema, { cur, max })),
      }),
      signalsS: sigQueue(t.pendingShared),
      oldSeccompMode: seccompMode(t.status.seccomp),
      loginuid: ids.uid(t.loginuid >>> 0, `the login uid of task ${t.pid}`),
      oomScoreAdj: t.oomScoreAdj,
      membarrierRegistrationMask: t.membarrier || undefined,
      sigactions: [...t.sigactions.values()].map((a) =>
        create(sa_entrySchema, {
          sigaction: a.handler,
          flags: a.flags,
          restorer: a.restorer,
          mask: a.mask,
          compatSigaction: false,
        })
      ),
      childSubreaper: t.childSubreaper,
    }),
  });
}

/** The core_entry of a thread other than the leader. */
export function threadCoreEntry(th: ThreadState, ids: TreeIds): core_entry {
  return create(core_entrySchema, {
    mtype: core_entry_march.X86_64,
    ...threadParts(th, ids),
  });
}

/** The core_entry of a zombie: its exit status, nothing else. */
export function zombieCoreEntry(comm: string, exitCode: number): core_entry {
  return create(core_entrySchema, {
    mtype: core_entry_march.X86_64,
    tc: create(task_core_entrySchema, {
      taskState: TASK_STATE.DEAD,
      exitCode,
      personality: 0,
      flags: 0,
      blkSigset: 0n,
      comm,
    }),
  });
}
