/**
 * Length-prefixed frames on a libp2p stream, with the protocol's size limit
 * and a deadline on every read. Over-long frames surface as FrameTooLargeError.
 */
import { lpStream } from '@libp2p/utils'
import type { AbortOptions, Stream } from '@libp2p/interface'
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'
import { MAX_INFER_FRAME_BYTES, MiB } from './limits.ts'
import { Uint8ArrayList } from 'uint8arraylist'
import { decodeFrame, encodeFrame, peekFrame, reframe } from './tensor-codec.ts'
import type { Frame, RawFrame } from './tensor-codec.ts'

export interface FrameStream {
  read: (opts?: AbortOptions) => Promise<Frame>
  /** Reads a frame decoding only its kind and header. */
  readRaw: (opts?: AbortOptions) => Promise<RawFrame>
  write: (frame: Frame, opts?: AbortOptions) => Promise<void>
  /** Writes a raw frame under a (possibly new) header without re-encoding its tensors. */
  writeRaw: (raw: RawFrame, opts?: AbortOptions) => Promise<void>
}

export function frameStream (stream: Stream, limit = MAX_INFER_FRAME_BYTES): FrameStream {
  const lp = lpStream(stream, { maxDataLength: limit, maxBufferSize: limit + MiB })
  const readBytes = async (opts: AbortOptions): Promise<Uint8Array> => {
    try { return (await lp.read(opts)).subarray() } catch (err) {
      const e = err as Error
      if (e.name === 'InvalidDataLengthError' || e.name === 'InvalidDataLengthLengthError') throw new FrameTooLargeError('frame', NaN, limit)
      if (e.name === 'InvalidMessageLengthError') throw new MalformedFrameError('frame.length', e.message)
      throw err
    }
  }
  return {
    async read (opts = {}) { return decodeFrame(await readBytes(opts), limit) },
    async readRaw (opts = {}) { return peekFrame(await readBytes(opts), limit) },
    async write (frame, opts = {}) { await lp.write(encodeFrame(frame, limit), opts) },
    async writeRaw (raw, opts = {}) { await lp.write(new Uint8ArrayList(...reframe(raw.kind, raw.header, raw.tensorBytes, limit)), opts) }
  }
}
