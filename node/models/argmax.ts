/**
 * The largest entry of each row of a float32 matrix, and its index: what
 * greedy CTC decoding (ocr.ts) needs of every time step. A last hop asked
 * for text (`--output text`) decodes 40 x 6,625 probabilities per job on
 * the path of the job; a WebAssembly SIMD module (assembled with
 * protocols/wasm.ts) scans four lanes at a time, where JavaScript compares
 * one by one (`npm run bench:kernels` prints both).
 *
 * The same answer as a plain loop with `>`: the first index of the largest
 * value, NaN never chosen, index 0 when no value is above -Infinity.
 */
import { blockLoop, br, brIf, f32, f32Load, f32Store, F32, F32X4_EXTRACT, get, i32, i32Store, ifThen, instantiate, lane, load, op, set, I32, V128, wasmModule } from '../../protocols/wasm.ts'

// params: 0 src, 1 rows, 2 columns, 3 out (rows x [i32 index, f32 value]); then the locals
const [R, P, I, N4, M, ACC, MV] = [4, 5, 6, 7, 8, 9, 10]

/** Byte address of element `I` of the row at P. */
const elem = [...get(P), ...get(I), ...i32(2), ...op.i32Shl, ...op.i32Add]
const step = (n: number): number[] => [...get(I), ...i32(n), ...op.i32Add, ...set(I)]

const code = [
  ...blockLoop([
    ...get(R), ...get(1), ...op.i32GeU, ...brIf(1),
    ...get(0), ...get(R), ...get(2), ...op.i32Mul, ...i32(2), ...op.i32Shl, ...op.i32Add, ...set(P),
    ...get(2), ...i32(~3), ...op.i32And, ...set(N4),
    // the largest, four lanes at a time (pmax keeps the accumulator where the value is NaN), then the tail
    ...f32(-Infinity), ...op.f32x4Splat, ...set(ACC),
    ...i32(0), ...set(I),
    ...blockLoop([...get(I), ...get(N4), ...op.i32GeU, ...brIf(1), ...get(ACC), ...elem, ...load(), ...op.f32x4Pmax, ...set(ACC), ...step(4), ...br(0)]),
    ...get(ACC), ...lane(F32X4_EXTRACT, 0), ...get(ACC), ...lane(F32X4_EXTRACT, 1), ...op.f32Max,
    ...get(ACC), ...lane(F32X4_EXTRACT, 2), ...get(ACC), ...lane(F32X4_EXTRACT, 3), ...op.f32Max, ...op.f32Max, ...set(M),
    ...blockLoop([
      ...get(I), ...get(2), ...op.i32GeU, ...brIf(1),
      ...elem, ...f32Load(), ...get(M), ...op.f32Gt, ...ifThen([...elem, ...f32Load(), ...set(M)]),
      ...step(1), ...br(0)
    ]),
    // its first index: the first group of four that holds it, then the lane (index 0 when nothing beat -Infinity)
    ...i32(0), ...set(I),
    ...get(M), ...f32(-Infinity), ...op.f32Gt,
    ...ifThen([
      ...get(M), ...op.f32x4Splat, ...set(MV),
      ...blockLoop([...get(I), ...get(N4), ...op.i32GeU, ...brIf(1), ...elem, ...load(), ...get(MV), ...op.f32x4Eq, ...op.anyTrue, ...brIf(1), ...step(4), ...br(0)]),
      ...blockLoop([...get(I), ...get(2), ...op.i32GeU, ...brIf(1), ...elem, ...f32Load(), ...get(M), ...op.f32Eq, ...brIf(1), ...step(1), ...br(0)]),
      // the value as it is there (-0 where the first of 0 and -0 is -0)
      ...elem, ...f32Load(), ...set(M)
    ]),
    ...get(3), ...get(R), ...i32(3), ...op.i32Shl, ...op.i32Add, ...get(I), ...i32Store(0),
    ...get(3), ...get(R), ...i32(3), ...op.i32Shl, ...op.i32Add, ...get(M), ...f32Store(4),
    ...get(R), ...i32(1), ...op.i32Add, ...set(R),
    ...br(0)
  ])
]

/** Memory: 32 pages (2 MiB): rows of input up to 1.5 MiB a call, their results after. */
const PAGES = 32
const IN_BYTES = 1.5 * 1024 * 1024

interface ArgmaxKernel { argmax: (src: number, rows: number, columns: number, out: number) => void }
let kernel: (ArgmaxKernel & { memory: { buffer: ArrayBuffer } }) | undefined

/** The module's bytes. */
export function argmaxModule (): Uint8Array {
  return wasmModule(PAGES, [{ name: 'argmax', locals: [[4, I32], [1, F32], [2, V128]], code }])
}

/** Index and value of the largest entry of each of `rows` rows of `columns` float32 values (little-endian bytes at `data`). */
export function rowMaxima (data: Uint8Array, rows: number, columns: number): { index: Int32Array, value: Float32Array } {
  const index = new Int32Array(rows)
  const value = new Float32Array(rows)
  const perCall = Math.floor(IN_BYTES / (columns * 4))
  if (perCall === 0) {
    // rows too long for the module's memory: one by one here
    const x = new Float32Array(data.buffer, data.byteOffset, rows * columns)
    for (let r = 0; r < rows; r++) {
      let best = 0; let bv = -Infinity
      for (let c = 0, o = r * columns; c < columns; c++) if (x[o + c] > bv) { bv = x[o + c]; best = c }
      index[r] = best; value[r] = bv
    }
    return { index, value }
  }
  kernel ??= instantiate<ArgmaxKernel>(argmaxModule())
  const mem = new Uint8Array(kernel.memory.buffer)
  const view = new DataView(kernel.memory.buffer)
  for (let r = 0; r < rows; r += perCall) {
    const n = Math.min(perCall, rows - r)
    mem.set(data.subarray(r * columns * 4, (r + n) * columns * 4), 0)
    kernel.argmax(0, n, columns, IN_BYTES)
    for (let k = 0; k < n; k++) { index[r + k] = view.getInt32(IN_BYTES + 8 * k, true); value[r + k] = view.getFloat32(IN_BYTES + 8 * k + 4, true) }
  }
  return { index, value }
}
