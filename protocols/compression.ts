/**
 * Lossless compression of tensors on the wire (TensorEncoding ZSTD), where
 * it pays.
 *
 * Tensors made from images compress far: a text line's 184 KB float32 input
 * to pp-ocrv4-rec goes as 2-3 KB (Zstandard level 1, 0.1-0.2 ms each way),
 * which a hop then neither decrypts, nor copies, nor waits for. Activations
 * and probabilities do not (0.62-0.92 of their size, at 1.3-2.4 ms for
 * 0.5-1 MB), and on a fast link the time spent compressing them costs more
 * than the bytes saved. So a tensor is compressed only when a sample of its
 * first bytes shrinks to `maxRatio` of its size or less (a few hundredths of
 * a millisecond to find out), and it travels compressed only if the whole
 * did shrink.
 *
 * The receiver allows a compressed tensor exactly the bytes its dims and
 * dtype need, and no more: a frame that claims 2 KB but inflates to
 * gigabytes stops at that size with an error, and the bytes it may take are
 * counted against the sender's memory budget before it is read
 * (protocols/framing.ts).
 */
import { constants, zstdCompressSync, zstdDecompressSync } from 'node:zlib'
import { MalformedFrameError } from './errors.ts'
import { KiB } from './limits.ts'

/** Tensors smaller than this travel as they are: too few bytes to save. */
export const COMPRESS_MIN_BYTES = 16 * KiB
/** Bytes of a tensor tried first, from its start. */
const SAMPLE_BYTES = 16 * KiB
/**
 * A tensor is compressed when its sample shrinks to this share of its size
 * or less: on loopback a 0.46 MB activation at 0.62 took 1.3 ms to compress
 * and 0.7 to decompress against about 0.5 ms of both ends' TLS for the bytes
 * it saved; inputs made from images come to 0.01-0.05.
 */
export const COMPRESS_MAX_RATIO = 0.25
/** Once compressed whole, it is sent so if it shrank below this share (the work is done by then). */
const KEEP_RATIO = 0.9

const LEVEL = { params: { [constants.ZSTD_c_compressionLevel]: 1 } }

/** `data` as one Zstandard frame when that pays (see the top of this file), else undefined. */
export function compressIfItPays (data: Uint8Array, maxRatio = COMPRESS_MAX_RATIO): Uint8Array | undefined {
  if (data.byteLength < COMPRESS_MIN_BYTES) return undefined
  const sampled = data.byteLength > SAMPLE_BYTES
  if (sampled && zstdCompressSync(data.subarray(0, SAMPLE_BYTES), LEVEL).byteLength > SAMPLE_BYTES * maxRatio) return undefined
  const whole = zstdCompressSync(data, LEVEL)
  return whole.byteLength <= data.byteLength * (sampled ? KEEP_RATIO : maxRatio) ? whole : undefined
}

/**
 * The `size` bytes a Zstandard frame decompresses to: more is stopped at
 * `size`, fewer or a frame that is not one is refused; errors name `field`.
 */
export function decompressExactly (data: Uint8Array, size: number, field: string): Uint8Array {
  let out: Uint8Array
  try {
    out = zstdDecompressSync(data, { maxOutputLength: Math.max(1, size) })
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'ERR_BUFFER_TOO_LARGE') throw new MalformedFrameError(field, `decompresses to more than the ${size} bytes its dims need`)
    throw new MalformedFrameError(field, `is not a Zstandard frame (${e.message})`)
  }
  if (out.byteLength !== size) throw new MalformedFrameError(field, `decompresses to ${out.byteLength} bytes, its dims need ${size}`)
  // own, 8-byte aligned bytes for typed-array views (a small result may share a pooled buffer)
  return out.byteOffset % 8 === 0 ? out : new Uint8Array(out)
}
