/**
 * Calling one hop: a REQUEST frame on an infer stream, the RESULT or ERROR
 * frame that comes back. Used by the client for the first hop and by each
 * hop for the next one.
 *
 * Streams are kept for the next job to the same peer where the peer speaks
 * INFER_REUSE_PROTOCOL: a 100-byte request and answer cost 2.3-3.0 ms of
 * both ends' CPU on a new stream each time (yamux, multistream-select's round
 * trip, libp2p's per-stream bookkeeping) and 0.2-0.4 ms on one stream. A
 * stream is reused only after its whole answer was read, so one job's bytes
 * never meet another's.
 */
import type { AbortOptions, Stream } from '@libp2p/interface'
import { MalformedFrameError } from '../../protocols/errors.ts'
import { frameStream } from '../../protocols/framing.ts'
import type { Frame, FrameStream } from '../../protocols/framing.ts'
import { INFER_PROTOCOLS, keptInfer, readsCompressed } from '../../protocols/ids.ts'
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

/** An idle stream is closed after this long (the serving side waits INFER_IDLE_MS, longer). */
export const IDLE_STREAM_MS = 10_000
/** Idle streams kept per peer, at most. */
const IDLE_PER_PEER = 8

/** An infer stream to a hop, with its frame reader (one per stream: it may hold bytes read ahead). */
export interface HopStream {
  peer: string
  stream: Stream
  frames: FrameStream
}

/** Infer streams to peers that were answered and wait for the next job. */
export class HopStreams {
  private readonly dialer: PeerDialer
  private readonly idle = new Map<string, Array<{ s: HopStream, timer: ReturnType<typeof setTimeout> }>>()
  /** How long a stream is kept idle before it closes. */
  idleMs = IDLE_STREAM_MS

  constructor (dialer: PeerDialer) { this.dialer = dialer }

  /** An idle stream to `hop`'s peer, else a new one (reusable when the peer speaks INFER_REUSE_PROTOCOL or later). */
  async open (hop: Hop, opts: AbortOptions = {}): Promise<HopStream> {
    const waiting = this.idle.get(hop.peer) ?? []
    for (let e = waiting.pop(); e !== undefined; e = waiting.pop()) {
      clearTimeout(e.timer)
      if (e.s.stream.status === 'open' && e.s.stream.writeStatus === 'writable' && e.s.stream.readStatus === 'readable') return e.s
    }
    this.idle.delete(hop.peer)
    const stream = await this.dialer.dialProtocol(hop.peer, INFER_PROTOCOLS, { ...opts, addrs: hop.addrs })
    return { peer: hop.peer, stream, frames: frameStream(stream) }
  }

  /** After its whole answer was read: kept for the next job to that peer, or closed. */
  release (s: HopStream): void {
    const waiting = this.idle.get(s.peer) ?? []
    if (!keptInfer(s.stream.protocol) || s.stream.status !== 'open' || waiting.length >= IDLE_PER_PEER) {
      void s.stream.close().catch(() => {})
      return
    }
    const entry = { s, timer: setTimeout(() => { this.drop(entry) }, this.idleMs) }
    entry.timer.unref?.()
    waiting.push(entry)
    this.idle.set(s.peer, waiting)
  }

  /** Closes the idle streams (to `peer`, or all). */
  closeIdle (peer?: string): void {
    for (const [p, waiting] of [...this.idle]) {
      if (peer === undefined || p === peer) for (const e of [...waiting]) { clearTimeout(e.timer); this.drop(e) }
    }
  }

  /** Idle streams now, per peer (tests, metrics). */
  idleCount (peer?: string): number {
    return peer !== undefined ? (this.idle.get(peer)?.length ?? 0) : [...this.idle.values()].reduce((n, l) => n + l.length, 0)
  }

  private drop (entry: { s: HopStream }): void {
    const waiting = this.idle.get(entry.s.peer)
    const i = waiting?.findIndex(e => e === entry) ?? -1
    if (i >= 0) waiting!.splice(i, 1)
    if (waiting?.length === 0) this.idle.delete(entry.s.peer)
    void entry.s.stream.close().catch(() => {})
  }
}

const pools = new WeakMap<PeerDialer, HopStreams>()

/** The idle streams of a node (one pool per dialer). */
export function hopStreams (dialer: PeerDialer): HopStreams {
  let p = pools.get(dialer)
  if (p === undefined) { p = new HopStreams(dialer); pools.set(dialer, p) }
  return p
}

export interface CallOptions extends AbortOptions {
  /** Carry float32 tensors as float16 (fp16 hand-offs). */
  float16?: boolean
  /**
   * The share of its size a request's tensor must shrink to, to go
   * compressed (compressionFor), asked once the stream is open (the link is
   * known then), if the hop reads them so (INFER_COMPRESSED_PROTOCOL).
   */
  compress?: () => number | undefined
  /** A stream to the hop taken before (see openHop), used instead of taking one. */
  stream?: HopStream
  /** Called once the request is written, while the answer is awaited (work that should not hold up the request). */
  onSent?: () => void
  /**
   * Receipts the hop sends ahead of its answer (the request asked for them:
   * InferRequest.earlyReceipts), in the order they come; unasked for, or
   * more frames than the hops of the route, they fail the call.
   */
  onReceipts?: (receipts: Uint8Array[]) => void
}

/** Takes an infer stream to `hop`: an idle one, else a new one (callHop does it itself unless given one). */
export async function openHop (dialer: PeerDialer, hop: Hop, opts: AbortOptions = {}): Promise<HopStream> {
  return await hopStreams(dialer).open(hop, opts)
}

/**
 * Sends `request` with `tensors` to `hop` and returns its answer with the
 * tensors still encoded (`frameTensors` decodes them), so a relaying hop
 * never re-encodes them. A kept stream that fails is not tried again: the
 * peer most likely died (a stream the peer closed for idling is rarer, as
 * callers drop theirs first), and the caller routes around it at once.
 */
export async function callHop (dialer: PeerDialer, hop: Hop, request: InferRequest, tensors: Tensor[], opts: CallOptions = {}): Promise<Frame> {
  const pool = hopStreams(dialer)
  let s = opts.stream
  try {
    s ??= await pool.open(hop, opts)
  } catch (err) {
    throw new HopUnreachableError(hop.peer, err as Error)
  }
  try {
    const { compress, ...rest } = opts
    const ratio = readsCompressed(s.stream.protocol) ? compress?.() : undefined
    await s.frames.write({ kind: 'request', request }, tensors, { ...rest, ...(ratio !== undefined ? { compress: ratio } : {}) })
    opts.onSent?.()
    let answer = await s.frames.read(opts)
    for (let early = 0; answer.message.kind === 'receipts'; early++) {
      if (request.earlyReceipts !== true || opts.onReceipts === undefined) throw new MalformedFrameError('header.kind', 'receipts sent ahead of the answer, which the request did not ask for')
      if (early >= request.route.length + 1) throw new MalformedFrameError('header.kind', `more receipts frames than the ${request.route.length + 1} hops of the route`)
      if (answer.message.receipts.job !== request.job) throw new MalformedFrameError('header.job', `receipts for job ${answer.message.receipts.job.slice(0, 8)}, not ${request.job.slice(0, 8)}`)
      opts.onReceipts(answer.message.receipts.receipts)
      answer = await s.frames.read(opts)
    }
    pool.release(s)
    return answer
  } catch (err) {
    s.stream.abort(err as Error)
    throw new HopUnreachableError(hop.peer, err as Error)
  }
}
