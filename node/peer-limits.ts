/**
 * Per-peer limits: token buckets keyed by peer (pure bookkeeping), a stream
 * middleware that caps how fast one peer may open streams of a protocol,
 * and a byte budget for work a peer has in flight (frames being received).
 * A peer over a limit gets its stream refused; other peers are not affected.
 */
import type { Connection, Stream, StreamMiddleware } from '@libp2p/interface'

/** The peer asked for more than its share. */
export class RateLimitedError extends Error {
  readonly name = 'RateLimitedError'
  readonly code = 'ERR_RATE_LIMITED'
}

/** Token buckets per key: `ratePerS` tokens a second, at most `burst` saved up. */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number, at: number }>()
  private readonly rate: number
  private readonly burst: number
  constructor (ratePerS: number, burst: number) { this.rate = ratePerS; this.burst = burst }

  /** Takes `n` tokens for `key` if it has them. */
  take (key: string, n = 1, now = Date.now()): boolean {
    const b = this.buckets.get(key) ?? { tokens: this.burst, at: now }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) / 1000 * this.rate)
    b.at = now
    this.buckets.set(key, b)
    if (this.buckets.size > 100_000) this.forgetFull(now)
    if (b.tokens < n) return false
    b.tokens -= n
    return true
  }

  private forgetFull (now: number): void {
    for (const [k, b] of this.buckets) if (b.tokens + (now - b.at) / 1000 * this.rate >= this.burst) this.buckets.delete(k)
  }
}

/**
 * Inbound streams of a protocol per peer: `ratePerS` a second, bursts of
 * `burst`. `refused` hears each refusal (a metric), so a flood shows.
 */
export function streamRateLimit (protocol: string, ratePerS: number, burst: number, refused?: (protocol: string) => void): StreamMiddleware {
  const buckets = new TokenBuckets(ratePerS, burst)
  return async (stream: Stream, connection: Connection, next) => {
    if (stream.direction === 'inbound' && !buckets.take(connection.remotePeer.toString())) {
      const err = new RateLimitedError(`${connection.remotePeer.toString()} opens ${protocol} streams faster than ${ratePerS}/s`)
      refused?.(protocol)
      stream.abort(err)
      throw err
    }
    next(stream, connection)
  }
}

/**
 * Bytes reserved per peer and in total (e.g. frames being received): a
 * reservation that would pass either cap is refused, so no peer can hold more
 * than its share of memory however many streams it opens.
 */
export class ByteBudget {
  private readonly held = new Map<string, number>()
  private total = 0
  readonly perPeer: number
  readonly overall: number
  constructor (perPeer: number, overall: number) { this.perPeer = perPeer; this.overall = overall }

  /** Reserves `bytes` for `peer`; returns the release function, or undefined when over a cap. */
  reserve (peer: string, bytes: number): (() => void) | undefined {
    const mine = this.held.get(peer) ?? 0
    if (mine + bytes > this.perPeer || this.total + bytes > this.overall) return undefined
    this.held.set(peer, mine + bytes)
    this.total += bytes
    let released = false
    return () => {
      if (released) return
      released = true
      this.total -= bytes
      const left = (this.held.get(peer) ?? bytes) - bytes
      if (left <= 0) this.held.delete(peer)
      else this.held.set(peer, left)
    }
  }

  heldBy (peer: string): number { return this.held.get(peer) ?? 0 }
  get totalHeld (): number { return this.total }
}
