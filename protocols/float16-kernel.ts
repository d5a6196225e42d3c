/**
 * The float16 conversions as a WebAssembly SIMD module, four lanes at a time
 * and without a data-dependent branch (F. Giesen's float_to_half_fast3_rtne
 * and half_to_float_fast, as his SSE versions do them). Scalar JavaScript
 * took 2.3 ms to round a 0.9 MB hand-off and 0.8 ms to decode it
 * (bench/float16.ts): a branch per element mispredicted on activations that
 * mix zeros and normal values, and JavaScript has no vector instructions.
 *
 * The module is assembled here from named instructions (no binary blob to
 * trust); its three functions work on its own memory, which float16.ts fills
 * and empties a chunk at a time:
 *
 * - round(src, n, half, out): float32 bits at src -> half bits at half and the
 *   float32 bits of those halves at out;
 * - encode(src, n, half): the half bits only;
 * - decode(half, n, out): half bits -> float32 bits, exactly.
 *
 * n is a multiple of 8 (the caller pads); addresses are byte offsets.
 */

/** Unsigned LEB128. */
function u (n: number): number[] {
  const out: number[] = []
  do {
    let b = n & 0x7f
    n >>>= 7
    if (n !== 0) b |= 0x80
    out.push(b)
  } while (n !== 0)
  return out
}

/** Signed LEB128 of an int32. */
function s (n: number): number[] {
  const out: number[] = []
  for (;;) {
    const b = n & 0x7f
    n >>= 7
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) { out.push(b); return out }
    out.push(b | 0x80)
  }
}

const vec = (items: number[][]): number[] => [...u(items.length), ...items.flat()]
const section = (id: number, body: number[]): number[] => [id, ...u(body.length), ...body]
const name = (t: string): number[] => vec([...Buffer.from(t)].map(b => [b]))

// instructions (the core and the 0xfd-prefixed SIMD ones this module uses)
const get = (l: number): number[] => [0x20, ...u(l)]
const set = (l: number): number[] => [0x21, ...u(l)]
const i32 = (n: number): number[] => [0x41, ...s(n)]
const simd = (op: number): number[] => [0xfd, ...u(op)]
/** i32x4.splat of a constant. */
const splat = (n: number): number[] => [...i32(n), ...simd(0x11)]
const memarg = (offset: number): number[] => [0, ...u(offset)]
const load = (offset = 0): number[] => [...simd(0x00), ...memarg(offset)]
const store = (offset = 0): number[] => [...simd(0x0b), ...memarg(offset)]
const op = {
  i32Add: [0x6a],
  i32Shl: [0x74],
  i32GeU: [0x4f],
  and: simd(0x4e),
  or: simd(0x50),
  bitselect: simd(0x52),
  i32x4Eq: simd(0x37),
  i32x4LtS: simd(0x39),
  i32x4GtS: simd(0x3b),
  i32x4GeS: simd(0x3f),
  narrowU: simd(0x86),
  extendLowU: simd(0xa9),
  extendHighU: simd(0xaa),
  shl: simd(0xab),
  shrU: simd(0xad),
  add: simd(0xae),
  sub: simd(0xb1),
  f32x4Add: simd(0xe4),
  f32x4Sub: simd(0xe5)
}

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
  return [
    0x02, 0x40, 0x03, 0x40,
    ...get(I), ...get(1), ...op.i32GeU, 0x0d, 1,
    ...body,
    ...get(I), ...i32(8), ...op.i32Add, ...set(I),
    0x0c, 0, 0x0b, 0x0b
  ]
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

function body (code: number[]): number[] {
  // one i32 local (the index), six v128 locals
  const locals = vec([[1, 0x7f], [6, 0x7b]])
  const b = [...locals, ...code, 0x0b]
  return [...u(b.length), ...b]
}

/** The module's bytes. */
export function float16Module (): Uint8Array {
  const i32t = 0x7f
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    // one type: (i32, i32, i32, i32) -> ()
    ...section(1, vec([[0x60, ...vec([[i32t], [i32t], [i32t], [i32t]]), 0]])),
    ...section(3, vec([[0], [0], [0]])),
    // memory: 16 pages (1 MiB) to start; the caller grows it
    ...section(5, vec([[0x00, ...u(16)]])),
    ...section(7, vec([
      [...name('memory'), 0x02, 0],
      [...name('round'), 0x00, 0],
      [...name('encode'), 0x00, 1],
      [...name('decode'), 0x00, 2]
    ])),
    ...section(10, vec([body(fromFloats(true)), body(fromFloats(false)), body(toFloats())]))
  ])
}

// the part of the WebAssembly API used here (the project's types have no DOM or WebAssembly lib)
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => { exports: unknown }
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
  kernel ??= new WebAssembly.Instance(new WebAssembly.Module(float16Module())).exports as unknown as Float16Kernel
  return kernel
}
