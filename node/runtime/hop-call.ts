/**
 * Calling one hop: open an infer stream, write a REQUEST frame, read the
 * RESULT or ERROR frame that comes back. Used by the client for the first hop
 * and by each hop for the next one.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { AbortOptions } from '@libp2p/interface'
import type { Host } from '../host.ts'
import { INFER_PROTOCOL } from '../../protocols/ids.ts'
import { frameStream } from '../../protocols/framing.ts'
import type { Hop } from '../../protocols/infer.ts'
import type { Frame, RawFrame } from '../../protocols/tensor-codec.ts'

/** The hop could not be dialled, or dropped the stream before answering. */
export class HopUnreachableError extends Error {
  readonly name = 'HopUnreachableError'
  readonly code = 'ERR_HOP_UNREACHABLE'
  readonly peer: string
  constructor (peer: string, cause: Error) {
    super(`hop ${peer.slice(-8)} unreachable: ${cause.message}`, { cause })
    this.peer = peer
  }
}

/**
 * Sends `request` to `hop` and returns its answer with the tensors still
 * encoded (`rawTensors` decodes them), so a relaying hop never re-encodes them.
 */
export async function callHop (host: Host, hop: Hop, request: Frame, opts: AbortOptions = {}): Promise<RawFrame> {
  let stream
  try {
    const id = peerIdFromString(hop.peer)
    if (hop.addrs.length > 0 && host.getConnections(id).length === 0) await host.peerStore.merge(id, { multiaddrs: hop.addrs.map(a => multiaddr(a)) })
    stream = await host.dialProtocol(id, INFER_PROTOCOL, opts)
  } catch (err) {
    throw new HopUnreachableError(hop.peer, err as Error)
  }
  const fs = frameStream(stream)
  try {
    await fs.write(request, opts)
    const answer = await fs.readRaw(opts)
    await stream.close().catch(() => {})
    return answer
  } catch (err) {
    stream.abort(err as Error)
    throw new HopUnreachableError(hop.peer, err as Error)
  }
}
