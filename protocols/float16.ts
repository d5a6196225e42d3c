/**
 * IEEE 754 binary16 for float32 activations (TensorEncoding FLOAT16): float32
 * to half with round-to-nearest-even (overflow to infinity, subnormals kept,
 * NaN stays NaN), half to float32 exactly. Node 22 has no Float16Array; the
 * conversions run in a small WebAssembly SIMD module (float16-kernel.ts), a
 * chunk at a time through its memory. A 0.9 MB hand-off is rounded by the
 * hop that sends it and decoded by the one that runs it, on the path of
 * every job: bench/kernels.ts times both against SHA-256 of the same bytes.
 */
import { float16Kernel } from './float16-kernel.ts'

/** Elements per call into the module: its memory holds the chunk's float32 input, halves and float32 output (320 KiB of its 1 MiB). */
const CHUNK = 32768
const SRC = 0
const HALF = SRC + 4 * CHUNK
const OUT = HALF + 2 * CHUNK

/** The module works on multiples of 8 elements; the lanes past `n` are ignored. */
const padded = (n: number): number => (n + 7) & ~7

/**
 * Runs one of the module's loops over `n` elements, chunk by chunk: copies
 * `input` (`inSize` bytes an element) to `inAt`, and each region asked for
 * in `outputs` (`[offset, array, bytes an element]`) back out.
 */
function convert (fn: 'round' | 'encode' | 'decode', input: Uint8Array, inSize: number, inAt: number, outputs: Array<[number, Uint8Array, number]>): void {
  const k = float16Kernel()
  const mem = new Uint8Array(k.memory.buffer)
  const n = input.byteLength / inSize
  for (let i = 0; i < n; i += CHUNK) {
    const m = Math.min(CHUNK, n - i)
    mem.set(input.subarray(i * inSize, (i + m) * inSize), inAt)
    if (fn === 'decode') k.decode(HALF, padded(m), OUT, 0)
    else k[fn](SRC, padded(m), HALF, OUT)
    for (const [at, out, size] of outputs) out.set(mem.subarray(at, at + m * size), i * size)
  }
}

/** Half encodings of rounded tensors, kept from the rounding so that sending them costs no second pass. */
const encoded = new WeakMap<Uint8Array, Uint8Array>()

/** float32 little-endian bytes -> binary16 little-endian bytes (half the size). */
export function encodeFloat16 (data: Uint8Array): Uint8Array {
  const known = encoded.get(data)
  if (known !== undefined) return known
  const half = new Uint8Array(data.byteLength / 2)
  convert('encode', data, 4, SRC, [[HALF, half, 2]])
  return half
}

/** binary16 little-endian bytes -> float32 little-endian bytes (twice the size). */
export function decodeFloat16 (data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.byteLength * 2)
  convert('decode', data, 2, HALF, [[OUT, out, 4]])
  return out
}

/** float32 bytes rounded to the nearest half values, still float32 (a new buffer; its half encoding is kept for sending). */
export function roundToFloat16 (data: Uint8Array): Uint8Array {
  const half = new Uint8Array(data.byteLength / 2)
  const rounded = new Uint8Array(data.byteLength)
  convert('round', data, 4, SRC, [[HALF, half, 2], [OUT, rounded, 4]])
  encoded.set(rounded, half)
  return rounded
}
