/**
 * Calling one hop: open an infer stream, write a REQUEST frame, read the
 * RESULT or ERROR frame that comes back. Used by the client for the first hop
 * and by each hop for the next one.
 */
import type { AbortOptions, Stream } from '@libp2p/interface'
import { frameStream } from '../../protocols/framing.ts'
import type { Frame } from '../../protocols/framing.ts'
import { INFER_PROTOCOL } from '../../protocols/ids.ts'
import type { Hop, InferRequest } from '../../protocols/infer.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { PeerDialer } from '../dial.ts'

/** The hop could not be dialled, or dropped the stream before answering. */
export class HopUnreachableError extends Error {
  readonly name = 'HopUnreachableError'
  readonly code = 'ERR_HOP_UNREACHABLE'
  readonly peer: string
  constructor (peer: string, cause: Error) {
    super(`hop ${peer.slice(-8)} unreachable: ${cause?.message ?? String(cause)}`, { cause })
    this.peer = peer
  }
}

export interface CallOptions extends AbortOptions {
  /** Carry float32 tensors as float16 (fp16 hand-offs). */
  float16?: boolean
  /** A stream to the hop opened before (see openHop), used instead of opening one. */
  stream?: Stream
}

/** Opens an infer stream to `hop` (callHop does it itself unless given one). */
export async function openHop (dialer: PeerDialer, hop: Hop, opts: AbortOptions = {}): Promise<Stream> {
  return await dialer.dialProtocol(hop.peer, INFER_PROTOCOL, { ...opts, addrs: hop.addrs })
}

/**
 * Sends `request` with `tensors` to `hop` and returns its answer with the
 * tensors still encoded (`frameTensors` decodes them), so a relaying hop
 * never re-encodes them.
 */
export async function callHop (dialer: PeerDialer, hop: Hop, request: InferRequest, tensors: Tensor[], opts: CallOptions = {}): Promise<Frame> {
  let stream = opts.stream
  try {
    stream ??= await openHop(dialer, hop, opts)
  } catch (err) {
    throw new HopUnreachableError(hop.peer, err as Error)
  }
  const fs = frameStream(stream)
  try {
    await fs.write({ kind: 'request', request }, tensors, opts)
    const answer = await fs.read(opts)
    await stream.close(opts).catch(() => {})
    return answer
  } catch (err) {
    stream.abort(err as Error)
    throw new HopUnreachableError(hop.peer, err as Error)
  }
}
