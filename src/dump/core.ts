/**
 * Maps a collected {@link TaskState} onto CRIU's core_entry (core-PID.img).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  type core_entry,
  core_entry_march,
  core_entrySchema,
  creds_entrySchema,
  itimer_entrySchema,
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
import type { TaskState } from "./task.ts";

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

/** The core_entry of a task. */
export function coreEntry(t: TaskState): core_entry {
  const [real, virt, prof] = t.itimers.map(([isec, iusec, vsec, vusec]) =>
    create(itimer_entrySchema, { isec, iusec, vsec, vusec })
  );
  const s = t.status;
  const seccomp = [seccomp_mode.disabled, seccomp_mode.strict, seccomp_mode.filter][s.seccomp] ??
    seccomp_mode.disabled;
  return create(core_entrySchema, {
    mtype: core_entry_march.X86_64,
    threadInfo: create(thread_info_x86Schema, {
      clearTidAddr: t.clearTidAddr,
      gpregs: gpregsEntry(restartableRegs(t.regs)),
      fpregs: fpregsEntry(t.xsave),
    }),
    tc: create(task_core_entrySchema, {
      taskState: t.wasStopped ? TASK_STATE.STOPPED : TASK_STATE.ALIVE,
      exitCode: 0,
      personality: t.personality,
      flags: t.stat.flags,
      blkSigset: t.sigmask,
      comm: t.stat.comm,
      timers: create(task_timers_entrySchema, { real, virt, prof }),
      rlimits: create(task_rlimits_entrySchema, {
        rlimits: t.rlimits.map(([cur, max]) => create(rlimit_entrySchema, { cur, max })),
      }),
      signalsS: sigQueue(t.pendingShared),
      oldSeccompMode: seccomp,
      loginuid: t.loginuid >>> 0,
      oomScoreAdj: t.oomScoreAdj,
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
    threadCore: create(thread_core_entrySchema, {
      futexRla: t.robustList.head,
      futexRlaLen: t.robustList.len,
      schedNice: t.stat.nice,
      schedPolicy: t.stat.policy,
      schedPrio: t.stat.rtPriority,
      blkSigset: t.sigmask,
      sas: create(thread_sas_entrySchema, {
        ssSp: t.altstack.sp,
        ssSize: t.altstack.size,
        ssFlags: t.altstack.flags >>> 0,
      }),
      pdeathSig: t.pdeathSig,
      signalsP: sigQueue(t.pendingThread),
      creds: create(creds_entrySchema, {
        uid: s.uids[0],
        euid: s.uids[1],
        suid: s.uids[2],
        fsuid: s.uids[3],
        gid: s.gids[0],
        egid: s.gids[1],
        sgid: s.gids[2],
        fsgid: s.gids[3],
        capInh: capWords(s.capInh),
        capPrm: capWords(s.capPrm),
        capEff: capWords(s.capEff),
        capBnd: capWords(s.capBnd),
        secbits: t.secureBits,
        groups: s.groups,
      }),
      seccompMode: seccomp,
      comm: t.stat.comm,
      rseqEntry: t.rseq.pointer
        ? create(rseq_entrySchema, {
          rseqAbiPointer: t.rseq.pointer,
          rseqAbiSize: t.rseq.size,
          signature: t.rseq.signature,
        })
        : undefined,
    }),
  });
}
