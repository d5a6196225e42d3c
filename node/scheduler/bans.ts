/**
 * Peers that failed recently, banned with exponential backoff (pure
 * bookkeeping, clock passed in).
 */
export class BanList {
  private readonly bans = new Map<string, { until: number, strikes: number }>()
  private readonly baseMs: number
  private readonly maxMs: number
  constructor (baseMs = 2000, maxMs = 60_000) { this.baseMs = baseMs; this.maxMs = maxMs }

  ban (peer: string, now = Date.now()): number {
    const prev = this.bans.get(peer)
    const strikes = (prev?.strikes ?? 0) + 1
    const ms = Math.min(this.maxMs, this.baseMs * 2 ** (strikes - 1))
    this.bans.set(peer, { until: now + ms, strikes })
    return ms
  }

  isBanned (peer: string, now = Date.now()): boolean {
    const b = this.bans.get(peer)
    return b !== undefined && b.until > now
  }

  /** Forgets strikes of a peer that served well again. */
  clear (peer: string): void { this.bans.delete(peer) }
}
