/**
 * Yamux receive windows that grow at once, within the spec.
 *
 * The yamux spec fixes a stream's initial window at 256 KiB and has no way
 * to negotiate another, so a peer that simply starts with a larger one
 * overruns peers built by other implementations. What the spec does allow is
 * a window update at any time, and hashicorp/yamux sends one with the SYN or
 * ACK of every stream. This wraps a yamux muxer factory so each stream, as it
 * opens in either direction, raises its own receive window to `window` with
 * such an update. A sender still starts from 256 KiB until the update arrives.
 */
import type { Stream, StreamMuxer, StreamMuxerFactory } from '@libp2p/interface'

/** The fields of @chainsafe/libp2p-yamux's stream that this relies on (checked at run time). */
interface YamuxStreamWindow {
  recvWindow: number
  sendWindowUpdate: () => void
}

function isYamuxStream (s: unknown): s is YamuxStreamWindow {
  const y = s as Partial<YamuxStreamWindow>
  return typeof y?.recvWindow === 'number' && typeof y.sendWindowUpdate === 'function'
}

/** Raises a stream's receive window to `window` and tells the remote (a window update). */
export function growReceiveWindow (stream: Stream, window: number): boolean {
  if (!isYamuxStream(stream) || stream.recvWindow >= window) return false
  stream.recvWindow = window
  stream.sendWindowUpdate()
  return true
}

export function growingWindows<C> (factory: (components: C) => StreamMuxerFactory, window: number): (components: C) => StreamMuxerFactory {
  return (components) => {
    const inner = factory(components)
    return {
      protocol: inner.protocol,
      createStreamMuxer (maConn): StreamMuxer {
        const muxer = inner.createStreamMuxer(maConn)
        const createStream = muxer.createStream.bind(muxer)
        muxer.createStream = async (options) => {
          const stream = await createStream(options)
          growReceiveWindow(stream, window)
          return stream
        }
        // inbound streams: grow as the muxer takes them (a 'stream' listener here would
        // make the muxer hand out early streams before libp2p's own listener exists)
        const hooked = muxer as StreamMuxer & { onRemoteStream?: (s: Stream) => void }
        const onRemoteStream = hooked.onRemoteStream?.bind(muxer)
        if (onRemoteStream !== undefined) hooked.onRemoteStream = (stream) => { growReceiveWindow(stream, window); onRemoteStream(stream) }
        return muxer
      }
    }
  }
}
