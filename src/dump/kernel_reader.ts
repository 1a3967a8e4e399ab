/**
 * The kernel's state read once per dump with BPF (syscalls/bpf.ts): its BTF and each CPU's
 * per-CPU offset, for the readers of state the kernel shows nowhere else (io_uring instances,
 * AIO contexts).
 *
 * @module
 */
import { KernelBtf } from "../syscalls/btf.ts";
import { perCpuOffsets } from "../syscalls/bpf.ts";
import type { DumpContext } from "./context.ts";
import { UnsupportedError } from "./file_types.ts";

/** The kernel's BTF and per-CPU offsets. */
export interface KernelReader {
  btf: KernelBtf;
  /** Each online CPU's per-CPU offset. */
  perCpu: Map<number, bigint>;
}

const readers = new WeakMap<DumpContext, KernelReader>();

/**
 * The dump's reader of the kernel, made at the first need: `what` (a resource of a task) is
 * refused by name when the kernel cannot be read, `kind` saying what was to be read of it.
 */
export function kernelReader(ctx: DumpContext, what: string, kind: string): KernelReader {
  let reader = readers.get(ctx);
  if (!reader) {
    try {
      const btf = KernelBtf.load();
      reader = { btf, perCpu: perCpuOffsets(btf) };
    } catch (e) {
      throw new UnsupportedError(
        `Cannot dump ${what}: its ${kind} cannot be read (${(e as Error).message}); ` +
          `it needs the kernel's BTF and BPF iterators`,
      );
    }
    readers.set(ctx, reader);
  }
  return reader;
}
