/**
 * The float16 conversions as a WebAssembly SIMD module, four lanes at a time
 * and without a data-dependent branch (F. Giesen's float_to_half_fast3_rtne
 * and half_to_float_fast, as his SSE versions do them). Scalar JavaScript
 * (his bit tricks, a branchless variant, a lookup table for decoding) took
 * 1.7-2.8 ms to round a 0.9 MB hand-off and 0.8-1.9 ms to decode it
 * (bench/kernels.ts); JavaScript has no vector instructions.
 *
 * The module is assembled from named instructions (wasm.ts; no binary blob
 * to trust); its three functions work on its own memory, which float16.ts
 * fills and empties a chunk at a time:
 *
 * - round(src, n, half, out): float32 bits at src -> half bits at half and the
 *   float32 bits of those halves at out;
 * - encode(src, n, half): the half bits only;
 * - decode(half, n, out): half bits -> float32 bits, exactly.
 *
 * n is a multiple of 8 (the caller pads); addresses are byte offsets.
 */
import { blockLoop, br, brIf, get, i32, instantiate, load, op, set, splat, store, V128, I32, wasmModule } from './wasm.ts'

/** Adding it as a float lines a subnormal half's mantissa up at bit 0. */
const DENORM_MAGIC = ((127 - 15) + (23 - 10) + 1) << 23
/** 2^-14: subtracting it as a float normalises a subnormal half. */
const SUBNORMAL_MAGIC = 113 << 23

// locals of every function: 0-3 the parameters, 4 the element index, then vectors
const I = 4
const [BITS, X, H, H0, O, E] = [5, 6, 7, 8, 9, 10]

/** Half bits of the float32 bits in local BITS, left on the stack (uses X). */
function halfOf (): number[] {
  return [
    ...get(BITS), ...splat(0x7fffffff), ...op.and, ...set(X),
    // 2^16 and up: infinity, or a quiet NaN for NaN
    ...splat(0x7e00), ...splat(0x7c00), ...get(X), ...splat(0x7f800000), ...op.i32x4GtS, ...op.bitselect,
    // subnormal halves and zero: a float add rounds them
    ...get(X), ...splat(DENORM_MAGIC), ...op.f32x4Add, ...splat(DENORM_MAGIC), ...op.sub,
    // normal halves: rebias, add just under half an ulp and the even bit, shift
    ...get(X), ...splat(((15 - 127) << 23) + 0xfff), ...op.add,
    ...get(X), ...i32(13), ...op.shrU, ...splat(1), ...op.and, ...op.add,
    ...i32(13), ...op.shrU,
    // (subnormal, normal, below 2^-14) -> the finite half
    ...get(X), ...splat(113 << 23), ...op.i32x4LtS, ...op.bitselect,
    // (infinity or NaN, finite, 2^16 and up) -> the half
    ...get(X), ...splat((127 + 16) << 23), ...op.i32x4GeS, ...op.bitselect,
    // the sign
    ...get(BITS), ...i32(16), ...op.shrU, ...splat(0x8000), ...op.and, ...op.or
  ]
}

/** float32 bits of the half bits in local H, left on the stack (uses O and E). */
function floatOf (): number[] {
  return [
    ...get(H), ...splat(0x7fff), ...op.and, ...i32(13), ...op.shl, ...set(O),
    ...get(O), ...splat(0x0f800000), ...op.and, ...set(E),
    ...get(O), ...splat((127 - 15) << 23), ...op.add, ...set(O),
    // infinity and NaN: the largest exponent
    ...get(O), ...get(E), ...splat(0x0f800000), ...op.i32x4Eq, ...splat((128 - 16) << 23), ...op.and, ...op.add, ...set(O),
    // zero and subnormals: normalised by a float subtraction
    ...get(O), ...splat(1 << 23), ...op.add, ...splat(SUBNORMAL_MAGIC), ...op.f32x4Sub,
    ...get(O), ...get(E), ...splat(0), ...op.i32x4Eq, ...op.bitselect,
    ...get(H), ...splat(0x8000), ...op.and, ...i32(16), ...op.shl, ...op.or
  ]
}

/** Address param `p` + element index x `size` bytes. */
const at = (p: number, size: number): number[] => [...get(p), ...get(I), ...i32(Math.log2(size)), ...op.i32Shl, ...op.i32Add]

/** A loop over the elements, eight per turn, until the index reaches param 1. */
function loop (body: number[]): number[] {
  return blockLoop([...get(I), ...get(1), ...op.i32GeU, ...brIf(1), ...body, ...get(I), ...i32(8), ...op.i32Add, ...set(I), ...br(0)])
}

/** round (out !== undefined) or encode: params src, n, half[, out]. */
function fromFloats (round: boolean): number[] {
  const half = (offset: number, keep: number): number[] => [
    ...at(0, 4), ...load(offset), ...set(BITS), ...halfOf(), ...set(keep),
    ...(round ? [...at(3, 4), ...get(keep), ...set(H), ...floatOf(), ...store(offset)] : [])
  ]
  return loop([
    ...half(0, H0), ...half(16, H),
    ...at(2, 2), ...get(H0), ...get(H), ...op.narrowU, ...store()
  ])
}

/** decode: params half, n, out. */
function toFloats (): number[] {
  const float = (extend: number[], offset: number): number[] => [
    ...at(2, 4), ...get(BITS), ...extend, ...set(H), ...floatOf(), ...store(offset)
  ]
  return loop([...at(0, 2), ...load(), ...set(BITS), ...float(op.extendLowU, 0), ...float(op.extendHighU, 16)])
}

/** The module's bytes: 16 pages (1 MiB) of memory, of which float16.ts uses 320 KiB a chunk. */
export function float16Module (): Uint8Array {
  // one i32 local (the index), six v128 locals
  const locals: Array<[number, number]> = [[1, I32], [6, V128]]
  return wasmModule(16, [
    { name: 'round', locals, code: fromFloats(true) },
    { name: 'encode', locals, code: fromFloats(false) },
    { name: 'decode', locals, code: toFloats() }
  ])
}

export interface Float16Kernel {
  memory: { buffer: ArrayBuffer }
  round: (src: number, n: number, half: number, out: number) => void
  encode: (src: number, n: number, half: number, out: number) => void
  decode: (half: number, n: number, out: number, unused: number) => void
}

let kernel: Float16Kernel | undefined
/** The compiled module's exports (compiled once, on first use). */
export function float16Kernel (): Float16Kernel {
  kernel ??= instantiate<Float16Kernel>(float16Module())
  return kernel
}
