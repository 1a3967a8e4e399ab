/**
 * CPUID, run from a 40-byte machine-code stub mapped executable in this process.
 *
 * The XSAVE layout that ptrace hands out (the standard, uncompacted format) places each state
 * component at an offset the CPU reports in CPUID leaf 0xD; the offsets differ between vendors
 * (AMD puts the AVX-512 opmask right after AVX, Intel leaves room for MPX), so they are asked,
 * never assumed.
 *
 * ```
 * u32 out[4] = {eax, ebx, ecx, edx};  void cpuid(u32 leaf, u32 subleaf, u32 *out)
 *   53          push rbx            41 89 00     mov [r8], eax
 *   49 89 d0    mov r8, rdx         41 89 58 04  mov [r8+4], ebx
 *   89 f8       mov eax, edi        41 89 48 08  mov [r8+8], ecx
 *   89 f1       mov ecx, esi        41 89 50 0c  mov [r8+12], edx
 *   0f a2       cpuid               5b c3        pop rbx; ret
 * ```
 *
 * @module
 */
import { libc } from "./ffi.ts";

const CODE = new Uint8Array([
  0x53,
  0x49,
  0x89,
  0xd0,
  0x89,
  0xf8,
  0x89,
  0xf1,
  0x0f,
  0xa2,
  0x41,
  0x89,
  0x00,
  0x41,
  0x89,
  0x58,
  0x04,
  0x41,
  0x89,
  0x48,
  0x08,
  0x41,
  0x89,
  0x50,
  0x0c,
  0x5b,
  0xc3,
]);

const CPUID_FN = { parameters: ["u32", "u32", "buffer"], result: "void" } as const;
let stub: Deno.UnsafeFnPointer<typeof CPUID_FN> | null = null;

function getStub(): Deno.UnsafeFnPointer<typeof CPUID_FN> {
  if (stub) return stub;
  const PROT_RWX = 7, MAP_PRIVATE = 2, MAP_ANONYMOUS = 0x20;
  const addr = BigInt(libc.mmap(0n, 4096n, PROT_RWX, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n));
  if (addr === 0xffffffffffffffffn) throw new Error("Cannot map the cpuid stub");
  const ptr = Deno.UnsafePointer.create(addr)!;
  new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, CODE.length)).set(CODE);
  const fn = new Deno.UnsafeFnPointer(ptr as Deno.PointerObject<typeof CPUID_FN>, CPUID_FN);
  stub = fn;
  return fn;
}

/** CPUID(leaf, subleaf) as [eax, ebx, ecx, edx]. */
export function cpuid(leaf: number, subleaf = 0): [number, number, number, number] {
  const out = new Uint32Array(4);
  getStub().call(leaf, subleaf, new Uint8Array(out.buffer));
  return [out[0], out[1], out[2], out[3]];
}

/** Offset and size of one XSAVE state component in the standard format. */
export interface XstateComponent {
  /** Byte offset in the standard-format XSAVE area. */
  offset: number;
  /** Size in bytes. */
  size: number;
}

let layout: Map<number, XstateComponent> | null = null;

/**
 * The user XSAVE state components this CPU supports (bit number → offset and size), from CPUID
 * leaf 0xD. Components 0 and 1 (x87, SSE) live in the legacy region and are not listed.
 */
export function xstateLayout(): Map<number, XstateComponent> {
  if (layout) return layout;
  layout = new Map();
  const [supported] = cpuid(0xd, 0);
  for (let bit = 2; bit < 32; bit++) {
    if (!(supported & (1 << bit))) continue;
    const [size, offset] = cpuid(0xd, bit);
    if (size) layout.set(bit, { offset, size });
  }
  return layout;
}
