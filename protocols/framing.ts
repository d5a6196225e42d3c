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
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'
import { decodeInferHeader, encodeInferHeader } from './infer.ts'
import type { InferMessage } from './infer.ts'
import { MAX_HEADER_BYTES, MAX_INFER_FRAME_BYTES } from './limits.ts'
import { checkDescriptors, describeTensors, tensorsFromPayload } from './tensor.ts'
import type { Tensor, TensorDescriptor } from './tensor.ts'

/** A frame as read: its message, its tensor descriptors and the payload, still encoded. */
export interface Frame {
  message: InferMessage
  tensors: TensorDescriptor[]
  payload: Uint8ArrayList
}

/** The tensors of a frame that was read. */
export function frameTensors (f: Frame): Tensor[] {
  return tensorsFromPayload(f.tensors, f.payload)
}

export interface FrameStream {
  /** Reads one frame. Over-long or malformed frames throw FrameTooLargeError / MalformedFrameError. */
  read: (opts?: AbortOptions) => Promise<Frame>
  /** Writes a frame with these tensors. */
  write: (message: InferMessage, tensors: Tensor[], opts?: AbortOptions) => Promise<void>
  /** Writes a frame that carries another frame's payload as it is (no copy, no re-encoding). */
  relay: (message: InferMessage, from: Pick<Frame, 'tensors' | 'payload'>, opts?: AbortOptions) => Promise<void>
}

const MAX_LENGTH_BYTES = varint.encodingLength(MAX_HEADER_BYTES)

export function frameStream (stream: Stream, limit = MAX_INFER_FRAME_BYTES): FrameStream {
  const bytes = byteStream(stream, { maxBufferSize: limit + MAX_HEADER_BYTES + 16 })
  const send = async (message: InferMessage, tensors: TensorDescriptor[], payload: Uint8Array[] | Uint8ArrayList, opts: AbortOptions): Promise<void> => {
    const header = encodeInferHeader(message, tensors)
    if (header.byteLength > MAX_HEADER_BYTES) throw new FrameTooLargeError('header', header.byteLength, MAX_HEADER_BYTES)
    const out = new Uint8ArrayList(varint.encode(header.byteLength), header)
    if (payload instanceof Uint8ArrayList) out.append(payload)
    else for (const p of payload) out.append(p)
    if (out.byteLength > limit + MAX_HEADER_BYTES + MAX_LENGTH_BYTES) throw new FrameTooLargeError('frame', out.byteLength, limit)
    await bytes.write(out, opts)
  }
  return {
    async read (opts = {}) {
      let length = 0
      for (let i = 0; ; i++) {
        if (i >= MAX_LENGTH_BYTES) throw new FrameTooLargeError('header', NaN, MAX_HEADER_BYTES)
        const b = (await bytes.read({ ...opts, bytes: 1 })).get(0)
        length += (b & 0x7f) * 2 ** (7 * i)
        if ((b & 0x80) === 0) break
      }
      if (length > MAX_HEADER_BYTES) throw new FrameTooLargeError('header', length, MAX_HEADER_BYTES)
      if (length === 0) throw new MalformedFrameError('header', 'empty')
      const { message, tensors } = decodeInferHeader((await bytes.read({ ...opts, bytes: length })).subarray())
      const size = checkDescriptors(tensors, limit)
      const payload = size > 0 ? await bytes.read({ ...opts, bytes: size }) : new Uint8ArrayList()
      return { message, tensors, payload }
    },
    async write (message, tensors, opts = {}) {
      const { descriptors, parts, bytes: size } = describeTensors(tensors)
      if (size > limit) throw new FrameTooLargeError('payload', size, limit)
      await send(message, descriptors, parts, opts)
    },
    async relay (message, from, opts = {}) {
      await send(message, from.tensors, from.payload, opts)
    }
  }
}
