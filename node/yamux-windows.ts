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
 *
 * It also makes a stream's window updates lazy, as hashicorp/yamux's are:
 * @chainsafe/libp2p-yamux answers every data frame it receives with a window
 * update, so each request, answer and hand-off costs the other side a frame
 * of its own (a TLS record, a write, a wake-up) for no gain while most of the
 * window is still open. Here an update goes out only once more than half of
 * the receive window is used (or with the SYN or ACK it carries, or as
 * reading resumes): a sender with more than half the window left is never
 * held up, so it never waits for an update that will not come.
 */
import type { Stream, StreamMuxer, StreamMuxerFactory } from '@libp2p/interface'

/** The fields of @chainsafe/libp2p-yamux's stream that this relies on (checked at run time). */
interface YamuxStreamWindow {
  recvWindow: number
  recvWindowCapacity: number
  state: number
  sendWindowUpdate: () => void
  sendResume: () => void
}

function isYamuxStream (s: unknown): s is YamuxStreamWindow {
  const y = s as Partial<YamuxStreamWindow>
  return typeof y?.recvWindow === 'number' && typeof y.recvWindowCapacity === 'number' && typeof y.state === 'number' &&
    typeof y.sendWindowUpdate === 'function' && typeof y.sendResume === 'function'
}

/** @chainsafe/libp2p-yamux's StreamState.Established: no SYN or ACK left to send. */
const ESTABLISHED = 3

/**
 * Window updates for `stream` only once more than half its receive window is
 * used, or when its state needs one (SYN, ACK, resuming); true if it is a
 * yamux stream.
 */
export function lazyWindowUpdates (stream: Stream): boolean {
  if (!isYamuxStream(stream)) return false
  const y = stream
  const update = y.sendWindowUpdate.bind(y)
  let resuming = false
  y.sendWindowUpdate = () => {
    if (!resuming && y.state === ESTABLISHED && y.recvWindowCapacity * 2 > y.recvWindow) return
    update()
  }
  const resume = y.sendResume.bind(y)
  y.sendResume = () => {
    resuming = true
    try { resume() } finally { resuming = false }
  }
  return true
}

/** Raises a stream's receive window to `window` and tells the remote (a window update). */
export function growReceiveWindow (stream: Stream, window: number): boolean {
  if (!isYamuxStream(stream) || stream.recvWindow >= window) return false
  stream.recvWindow = window
  stream.sendWindowUpdate()
  return true
}

/** A new stream: its receive window grown to `window`, its updates lazy from then on. */
function prepare (stream: Stream, window: number): void {
  growReceiveWindow(stream, window)
  lazyWindowUpdates(stream)
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
          prepare(stream, window)
          return stream
        }
        // inbound streams: grow as the muxer takes them (a 'stream' listener here would
        // make the muxer hand out early streams before libp2p's own listener exists)
        const hooked = muxer as StreamMuxer & { onRemoteStream?: (s: Stream) => void }
        const onRemoteStream = hooked.onRemoteStream?.bind(muxer)
        if (onRemoteStream !== undefined) hooked.onRemoteStream = (stream) => { prepare(stream, window); onRemoteStream(stream) }
        return muxer
      }
    }
  }
}
