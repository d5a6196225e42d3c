/**
 * A small WebAssembly assembler for the few SIMD kernels the hot path needs
 * (float16-kernel.ts, node/models/argmax-kernel.ts): instructions by name,
 * functions of four i32 parameters, one memory of fixed size, exports by
 * name. The kernels are written here in code, not shipped as a binary blob,
 * and checked by their tests against plain JavaScript.
 */

/** Unsigned LEB128. */
export function u (n: number): number[] {
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

/** Value types. */
export const I32 = 0x7f
export const F32 = 0x7d
export const V128 = 0x7b

// instructions: the core ones, then the 0xfd-prefixed SIMD ones
export const get = (l: number): number[] => [0x20, ...u(l)]
export const set = (l: number): number[] => [0x21, ...u(l)]
export const i32 = (n: number): number[] => [0x41, ...s(n)]
export const f32 = (x: number): number[] => [0x43, ...new Uint8Array(new Float32Array([x]).buffer)]
const simd = (code: number): number[] => [0xfd, ...u(code)]
/** i32x4.splat of a constant. */
export const splat = (n: number): number[] => [...i32(n), ...simd(0x11)]
const memarg = (offset: number): number[] => [0, ...u(offset)]
export const load = (offset = 0): number[] => [...simd(0x00), ...memarg(offset)]
export const store = (offset = 0): number[] => [...simd(0x0b), ...memarg(offset)]
export const f32Load = (offset = 0): number[] => [0x2a, ...memarg(offset)]
export const f32Store = (offset = 0): number[] => [0x38, ...memarg(offset)]
export const i32Store = (offset = 0): number[] => [0x36, ...memarg(offset)]
export const lane = (code: number, l: number): number[] => [...simd(code), l]

/** A block that `br 1` (from inside its loop) leaves, around a loop that `br 0` repeats. */
export const blockLoop = (body: number[]): number[] => [0x02, 0x40, 0x03, 0x40, ...body, 0x0b, 0x0b]
export const ifThen = (body: number[]): number[] => [0x04, 0x40, ...body, 0x0b]
export const ifElse = (then: number[], otherwise: number[]): number[] => [0x04, 0x40, ...then, 0x05, ...otherwise, 0x0b]
export const br = (depth: number): number[] => [0x0c, depth]
export const brIf = (depth: number): number[] => [0x0d, depth]

export const op = {
  i32Add: [0x6a],
  i32Sub: [0x6b],
  i32Mul: [0x6c],
  i32And: [0x71],
  i32Shl: [0x74],
  i32GeU: [0x4f],
  f32Eq: [0x5b],
  f32Gt: [0x5e],
  f32Max: [0x97],
  and: simd(0x4e),
  or: simd(0x50),
  bitselect: simd(0x52),
  anyTrue: simd(0x53),
  f32x4Splat: simd(0x13),
  i32x4Eq: simd(0x37),
  i32x4LtS: simd(0x39),
  i32x4GtS: simd(0x3b),
  i32x4GeS: simd(0x3f),
  f32x4Eq: simd(0x41),
  narrowU: simd(0x86),
  extendLowU: simd(0xa9),
  extendHighU: simd(0xaa),
  shl: simd(0xab),
  shrU: simd(0xad),
  add: simd(0xae),
  sub: simd(0xb1),
  f32x4Add: simd(0xe4),
  f32x4Sub: simd(0xe5),
  f32x4Pmax: simd(0xeb)
}
/** f32x4.extract_lane */
export const F32X4_EXTRACT = 0x1f

export interface WasmFunction {
  name: string
  /** Locals after the four i32 parameters: [count, type] runs. */
  locals: Array<[number, number]>
  code: number[]
}

/** A module of `functions`, each (i32, i32, i32, i32) -> (), and one exported memory of `pages` x 64 KiB. */
export function wasmModule (pages: number, functions: WasmFunction[]): Uint8Array {
  const body = (f: WasmFunction): number[] => {
    const b = [...vec(f.locals.map(([n, t]) => [...u(n), t])), ...f.code, 0x0b]
    return [...u(b.length), ...b]
  }
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([[0x60, ...vec([[I32], [I32], [I32], [I32]]), 0]])),
    ...section(3, vec(functions.map(() => [0]))),
    ...section(5, vec([[0x00, ...u(pages)]])),
    ...section(7, vec([[...name('memory'), 0x02, 0], ...functions.map((f, i) => [...name(f.name), 0x00, ...u(i)])])),
    ...section(10, vec(functions.map(body)))
  ])
}

// the part of the WebAssembly API used here (the project's types have no DOM or WebAssembly lib)
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => { exports: unknown }
}

/** Compiles and instantiates a module made by wasmModule; its exports. */
export function instantiate<T> (bytes: Uint8Array): T & { memory: { buffer: ArrayBuffer } } {
  return new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as T & { memory: { buffer: ArrayBuffer } }
}
