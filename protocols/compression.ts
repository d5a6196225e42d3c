/**
 * Lossless compression of tensors on the wire (TensorEncoding ZSTD), where
 * it pays.
 *
 * Tensors made from images compress far: a text line's 184 KB float32 input
 * to pp-ocrv4-rec goes as 2.7-5.2 KB (Zstandard level 1). Activations and
 * probabilities do not (0.62-0.92 of their size, at 1.3-2.4 ms for 0.5-1
 * MB). Compressing costs time on both ends (for that input, 0.4-0.5 ms to
 * compress and 0.5-0.7 to decompress in a vehicle's process, which makes a
 * new Zstandard context each time), so whether it pays depends on the link:
 * between processes of one machine it does not (a 184 KB hand-over costs
 * about as much as compressing it), over a 20 Mbit/s link the input's 74 ms
 * become 1. `compressionFor` turns a link into the largest share of its size
 * a tensor must shrink to: none on the same host or a link measured faster
 * than compressing, 0.25 on a link not measured yet (inputs made from images,
 * not activations), up to 0.9 on a slow one. A tensor is then compressed only
 * when a sample of its first bytes shrinks that far (a few hundredths of a
 * millisecond to find out), and travels compressed only if the whole did.
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
 * On a link not measured yet, a tensor is compressed when its sample shrinks
 * to this share of its size or less: inputs made from images come to
 * 0.01-0.05, activations to 0.6 and more (0.46 MB at 0.62 took 1.3 ms to
 * compress and 0.7 to decompress, worth it below about 60 MB/s).
 */
export const COMPRESS_MAX_RATIO = 0.25
/** Once compressed whole, it is sent so if it shrank below this share (the work is done by then). */
const KEEP_RATIO = 0.9

const LEVEL = { params: { [constants.ZSTD_c_compressionLevel]: 1 } }

/** `auto`: where the link says it pays; `always`: on every link, as if not measured; `off`: never. */
export type CompressMode = 'auto' | 'always' | 'off'
export const COMPRESS_MODES: readonly CompressMode[] = ['auto', 'always', 'off']

/** A link measured at least this fast (bytes per ms) gains nothing from compression: Zstandard's own pace on activations. */
export const FAST_LINK_BYTES_PER_MS = 150_000

/** What is known of the link to a peer: on this host (loopback), and its measured throughput (node/link-meter.ts; 0 or undefined when not measured). */
export interface LinkHint { sameHost: boolean, bytesPerMs?: number }

/**
 * The share of its size a tensor must shrink to, to travel compressed over
 * `link` in `mode`, or undefined to send it as it is. On a measured link of
 * B MB/s, compressing and decompressing activations (about 200 MB/s
 * together) pays when it saves more than B/200 of the bytes.
 */
export function compressionFor (mode: CompressMode, link: LinkHint): number | undefined {
  if (mode === 'off') return undefined
  const b = link.bytesPerMs ?? 0
  if (mode === 'auto' && (link.sameHost || b >= FAST_LINK_BYTES_PER_MS)) return undefined
  if (b <= 0) return COMPRESS_MAX_RATIO
  return Math.min(KEEP_RATIO, Math.max(COMPRESS_MAX_RATIO, 1 - b / 200_000))
}

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
