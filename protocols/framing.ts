/**
 * Infer frames on a libp2p stream: `uvarint(n) | header (n bytes, protobuf) |
 * payload`, where the header's tensor descriptors say how long the payload
 * is. Every read has the protocol's size limits and the caller's deadline; a
 * payload can be relayed under a new header without being copied or decoded.
 */
import { byteStream } from '@libp2p/utils'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import type { AbortOptions, Stream } from '@libp2p/interface'
import { FrameTooLargeError, MalformedFrameError, OverBudgetError } from './errors.ts'
import { decodeInferHeader, encodeInferHeader } from './infer.ts'
import type { InferMessage, Tap } from './infer.ts'
import { MAX_HEADER_BYTES, MAX_INFER_FRAME_BYTES } from './limits.ts'
import { TensorEncoding } from './gen/tensor_pb.ts'
import { checkDescriptors, decodedLength, describeTensors, tensorsFromPayload } from './tensor.ts'
import type { EncodeOptions, Tensor, TensorDescriptor } from './tensor.ts'

/** A frame as read: its message, its tensor descriptors, the taps at the payload's end and the payload, still encoded. */
export interface Frame {
  message: InferMessage
  tensors: TensorDescriptor[]
  taps: Tap[]
  payload: Uint8ArrayList
}

/** How many of a frame's tensors are its own (results, hand-backs), before the taps. */
function mainCount (f: Pick<Frame, 'tensors' | 'taps'>): number {
  return f.tensors.length - f.taps.reduce((s, t) => s + t.count, 0)
}

/** The tensors of a frame that was read (its taps left out); `shared`: see tensorsFromPayload. */
export function frameTensors (f: Frame, opts: { shared?: boolean } = {}): Tensor[] {
  return tensorsFromPayload(f.tensors.slice(0, mainCount(f)), f.payload, opts)
}

/** The descriptors and bytes of a frame's own tensors (taps left out), still encoded. */
export function mainPart (f: Frame): { tensors: TensorDescriptor[], payload: Uint8ArrayList } {
  const n = mainCount(f)
  const bytes = f.tensors.slice(0, n).reduce((s, d) => s + d.encodedLength, 0)
  return { tensors: f.tensors.slice(0, n), payload: f.payload.sublist(0, bytes) }
}

/** The taps a frame carries: stage -> that stage's outputs (its own tensors are not decoded, nor copied). */
export function frameTaps (f: Frame): Map<number, Tensor[]> {
  const out = new Map<number, Tensor[]>()
  if (f.taps.length === 0) return out
  const n = mainCount(f)
  const own = f.tensors.slice(0, n).reduce((s, d) => s + d.encodedLength, 0)
  const tapped = tensorsFromPayload(f.tensors.slice(n), f.payload.sublist(own))
  let o = 0
  for (const t of f.taps) { out.set(t.stage, tapped.slice(o, o + t.count)); o += t.count }
  return out
}

export interface WriteOptions extends AbortOptions, EncodeOptions {
  /** Tap tensors (stage outputs) to carry after the frame's own tensors. */
  taps?: Array<{ stage: number, tensors: Tensor[] }>
}

export interface ReadOptions extends AbortOptions {
  /**
   * Called with a frame's payload size once its header is read, before the
   * payload: false refuses the frame (OverBudgetError) without reading it.
   */
  reserve?: (bytes: number) => boolean
}

export interface FrameStream {
  /** Reads one frame. Over-long, malformed or refused frames throw FrameTooLargeError / MalformedFrameError / OverBudgetError. */
  read: (opts?: ReadOptions) => Promise<Frame>
  /** Reads the next frame, or undefined when the remote closed its side before one began. */
  next: (opts?: ReadOptions) => Promise<Frame | undefined>
  /** Writes a frame with these tensors (and taps after them). */
  write: (message: InferMessage, tensors: Tensor[], opts?: WriteOptions) => Promise<void>
  /**
   * Writes a frame that carries another frame's payload as it is (no copy, no
   * re-encoding), its taps included, with more taps appended.
   */
  relay: (message: InferMessage, from: Pick<Frame, 'tensors' | 'payload' | 'taps'>, opts?: WriteOptions) => Promise<void>
}

const MAX_LENGTH_BYTES = varint.encodingLength(MAX_HEADER_BYTES)

/**
 * The next frame on a kept stream, or undefined when none came: the remote
 * closed its side, or `opts.signal` (the stream's idle time) ended first.
 */
export async function nextWhileKept (fs: FrameStream, opts: ReadOptions): Promise<Frame | undefined> {
  try {
    return await fs.next(opts)
  } catch (err) {
    if (['AbortError', 'TimeoutError'].includes((err as Error).name)) return undefined
    throw err
  }
}

export function frameStream (stream: Stream, limit = MAX_INFER_FRAME_BYTES): FrameStream {
  const bytes = byteStream(stream, { maxBufferSize: limit + MAX_HEADER_BYTES + 16 })
  const send = async (message: InferMessage, tensors: TensorDescriptor[], taps: Tap[], payload: Uint8Array[] | Uint8ArrayList, opts: AbortOptions): Promise<void> => {
    const header = encodeInferHeader(message, tensors, taps)
    if (header.byteLength > MAX_HEADER_BYTES) throw new FrameTooLargeError('header', header.byteLength, MAX_HEADER_BYTES)
    const out = new Uint8ArrayList(varint.encode(header.byteLength), header)
    if (payload instanceof Uint8ArrayList) out.append(payload)
    else for (const p of payload) out.append(p)
    if (out.byteLength > limit + MAX_HEADER_BYTES + MAX_LENGTH_BYTES) throw new FrameTooLargeError('frame', out.byteLength, limit)
    await bytes.write(out, opts)
  }
  const readFrame = async (opts: ReadOptions, endOk: boolean): Promise<Frame | undefined> => {
    let length = 0
    for (let i = 0; ; i++) {
      if (i >= MAX_LENGTH_BYTES) throw new FrameTooLargeError('header', NaN, MAX_HEADER_BYTES)
      let b: number
      try {
        b = (await bytes.read({ ...opts, bytes: 1 })).get(0)
      } catch (err) {
        if (endOk && i === 0 && (err as Error).name === 'UnexpectedEOFError') return undefined
        throw err
      }
      length += (b & 0x7f) * 2 ** (7 * i)
      if ((b & 0x80) === 0) break
    }
    if (length > MAX_HEADER_BYTES) throw new FrameTooLargeError('header', length, MAX_HEADER_BYTES)
    if (length === 0) throw new MalformedFrameError('header', 'empty')
    const { message, tensors, taps } = decodeInferHeader((await bytes.read({ ...opts, bytes: length })).subarray())
    const size = checkDescriptors(tensors, limit)
    // what the frame holds once read and decoded: its payload, and the tensors float16 or compression make anew
    const held = size + tensors.reduce((s, d) => s + (d.encoding === TensorEncoding.RAW ? 0 : decodedLength(d)), 0)
    if (opts.reserve !== undefined && !opts.reserve(held)) throw new OverBudgetError(held)
    const payload = size > 0 ? await bytes.read({ ...opts, bytes: size }) : new Uint8ArrayList()
    return { message, tensors, taps, payload }
  }
  return {
    read: async (opts = {}) => (await readFrame(opts, false))!,
    next: async (opts = {}) => await readFrame(opts, true),
    async write (message, tensors, opts = {}) {
      const extra = opts.taps ?? []
      const own = describeTensors(tensors, { float16: opts.float16 === true, ...(opts.compress !== undefined ? { compress: opts.compress } : {}) })
      const tapped = describeTensors(extra.flatMap(t => t.tensors))
      const size = own.bytes + tapped.bytes
      if (size > limit) throw new FrameTooLargeError('payload', size, limit)
      await send(message, [...own.descriptors, ...tapped.descriptors], extra.map(t => ({ stage: t.stage, count: t.tensors.length })), [...own.parts, ...tapped.parts], opts)
    },
    async relay (message, from, opts = {}) {
      const extra = opts.taps ?? []
      if (extra.length === 0) { await send(message, from.tensors, from.taps, from.payload, opts); return }
      const more = describeTensors(extra.flatMap(t => t.tensors))
      const payload = new Uint8ArrayList(...from.payload)
      for (const p of more.parts) payload.append(p)
      await send(message, [...from.tensors, ...more.descriptors], [...from.taps, ...extra.map(t => ({ stage: t.stage, count: t.tensors.length }))], payload, opts)
    }
  }
}
