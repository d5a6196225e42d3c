/**
 * Length-prefixed frames on a libp2p stream, with the protocol's size limit
 * and a deadline on every read. Over-long frames surface as FrameTooLargeError.
 */
import { lpStream } from '@libp2p/utils'
import type { AbortOptions, Stream } from '@libp2p/interface'
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'
import { MAX_INFER_FRAME_BYTES, MiB } from './limits.ts'
import { decodeFrame, encodeFrame } from './tensor-codec.ts'
import type { Frame } from './tensor-codec.ts'

export interface FrameStream {
  read: (opts?: AbortOptions) => Promise<Frame>
  write: (frame: Frame, opts?: AbortOptions) => Promise<void>
  writeRaw: (bytes: Uint8Array, opts?: AbortOptions) => Promise<void>
}

export function frameStream (stream: Stream, limit = MAX_INFER_FRAME_BYTES): FrameStream {
  const lp = lpStream(stream, { maxDataLength: limit, maxBufferSize: limit + MiB })
  return {
    async read (opts = {}) {
      let bytes: Uint8Array
      try { bytes = (await lp.read(opts)).subarray() } catch (err) {
        const e = err as Error
        if (e.name === 'InvalidDataLengthError' || e.name === 'InvalidDataLengthLengthError') throw new FrameTooLargeError('frame', NaN, limit)
        if (e.name === 'InvalidMessageLengthError') throw new MalformedFrameError('frame.length', e.message)
        throw err
      }
      return decodeFrame(bytes, limit)
    },
    async write (frame, opts = {}) { await lp.write(encodeFrame(frame, limit), opts) },
    async writeRaw (bytes, opts = {}) { await lp.write(bytes, opts) }
  }
}
