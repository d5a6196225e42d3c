/**
 * Measured links to other peers (pure: no I/O): round-trip time from libp2p
 * pings and throughput from real transfers, each a moving average, and
 * whether the connection goes through a relay. A node keeps one table of
 * its own links; vehicles publish theirs in heartbeats so a client can price
 * the links between hops it cannot measure itself.
 */
import type { LinkFigure } from '../../protocols/capacity.ts'

export type { LinkFigure }

export interface LinkTableInit {
  /** Weight of a new sample in the moving averages. @default 0.3 */
  alpha?: number
  /** Peers remembered (least recently measured dropped). @default 256 */
  maxPeers?: number
  /** A figure older than this is forgotten. @default 300000 */
  maxAgeMs?: number
}

interface Entry extends LinkFigure { at: number }

/** Transfers shorter than this many bytes say little about bandwidth. */
const MIN_TRANSFER_BYTES = 64 * 1024

export class LinkTable {
  private readonly links = new Map<string, Entry>()
  private readonly alpha: number
  private readonly maxPeers: number
  private readonly maxAgeMs: number

  constructor (init: LinkTableInit = {}) {
    this.alpha = init.alpha ?? 0.3
    this.maxPeers = init.maxPeers ?? 256
    this.maxAgeMs = init.maxAgeMs ?? 300_000
  }

  private entry (peer: string, relayed: boolean | undefined, now: number): Entry {
    let e = this.links.get(peer)
    if (e === undefined) {
      e = { peer, rttMs: 0, bytesPerMs: 0, relayed: relayed ?? false, at: now }
      if (this.links.size >= this.maxPeers) {
        const oldest = [...this.links.values()].reduce((a, b) => a.at <= b.at ? a : b)
        this.links.delete(oldest.peer)
      }
    } else {
      // re-inserted so iteration order is least recently measured first
      this.links.delete(peer)
    }
    if (relayed !== undefined) e.relayed = relayed
    e.at = now
    this.links.set(peer, e)
    return e
  }

  private avg (old: number, sample: number): number { return old === 0 ? sample : old + this.alpha * (sample - old) }

  /** A ping's round trip to `peer`. */
  observeRtt (peer: string, ms: number, relayed?: boolean, now = Date.now()): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) return
    const e = this.entry(peer, relayed, now)
    e.rttMs = this.avg(e.rttMs, ms)
  }

  /** `bytes` moved to or from `peer` in `ms` of wire time (compute excluded). */
  observeTransfer (peer: string, bytes: number, ms: number, relayed?: boolean, now = Date.now()): void {
    if (bytes < MIN_TRANSFER_BYTES || !(ms > 0) || !Number.isFinite(ms)) return
    const e = this.entry(peer, relayed, now)
    // the round trip is latency, not bandwidth
    const wire = Math.max(ms - e.rttMs, ms / 2)
    e.bytesPerMs = this.avg(e.bytesPerMs, bytes / wire)
  }

  get (peer: string, now = Date.now()): LinkFigure | undefined {
    const e = this.links.get(peer)
    if (e === undefined) return undefined
    if (now - e.at > this.maxAgeMs) { this.links.delete(peer); return undefined }
    return { peer: e.peer, rttMs: e.rttMs, bytesPerMs: e.bytesPerMs, relayed: e.relayed }
  }

  /** The most recently measured figures (for a heartbeat). */
  recent (n: number, now = Date.now()): LinkFigure[] {
    return [...this.links.values()].filter(e => now - e.at <= this.maxAgeMs).slice(-n).reverse()
      .map(e => ({ peer: e.peer, rttMs: e.rttMs, bytesPerMs: e.bytesPerMs, relayed: e.relayed }))
  }
}

/**
 * The nearest of `peers` by measured round trip: those within `factor` of
 * the best (plus `slackMs`), nearest first. Peers nobody measured count as
 * far; when none is measured all are kept as they are.
 */
export function nearestFirst<T> (peers: T[], rttOf: (p: T) => number | undefined, factor = 3, slackMs = 5): T[] {
  const known = peers.map(p => ({ p, rtt: rttOf(p) })).filter((x): x is { p: T, rtt: number } => x.rtt !== undefined && x.rtt > 0)
  if (known.length === 0) return peers
  const best = Math.min(...known.map(x => x.rtt))
  return known.filter(x => x.rtt <= best * factor + slackMs).sort((a, b) => a.rtt - b.rtt).map(x => x.p)
}
