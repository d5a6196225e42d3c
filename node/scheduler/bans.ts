/**
 * Who not to route to, and why (pure bookkeeping, clock passed in).
 *
 * A peer is held responsible only for what it did itself:
 * - `ban`: a failure of the peer this client talked to (it could not be
 *   reached, timed out, refused, answered BUSY, or sent an answer that does
 *   not hold together). Bans back off exponentially with the strikes (one
 *   per incident: failures during a ban add none); strikes fade (one per
 *   `decayMs`). Success does not clear them,
 *   and nothing a peer says about itself (a heartbeat) does either.
 * - `accuse`: another peer says this one failed (an error frame naming it).
 *   One accuser is not evidence: the accused is only suspected for a while
 *   (routed to last). Accusations from `quorum` distinct peers within
 *   `windowMs` count as a strike.
 * - `convict`: redundant execution proved the peer produced a wrong result;
 *   banned for `convictMs`.
 */
export interface BanInit {
  /** First ban. @default 2000 */
  baseMs?: number
  /** Longest backoff ban. @default 60000 */
  maxMs?: number
  /** Longest ban for being absent: unreachable, leaving, not serving (a crashed vehicle comes back; a dead one stops sending heartbeats). @default 4000 */
  maxAbsentMs?: number
  /** Longest ban for being slow: past an attempt's budget (honest but overloaded, or stalling). @default 16000 */
  maxSlowMs?: number
  /** A strike fades after this long without a new one. @default 60000 */
  decayMs?: number
  /** How long accusations are remembered (and a suspect suspected). @default 60000 */
  windowMs?: number
  /** Distinct accusers that make a strike. @default 2 */
  quorum?: number
  /** Ban after a proven wrong result. @default 3600000 */
  convictMs?: number
}

interface Record { until: number, strikes: number, last: number }

/** Why a peer is struck: misbehaving (`fault`), too slow for an attempt's budget (`slow`), or gone (`absent`). */
export type BanKind = 'fault' | 'slow' | 'absent'

export class BanList {
  private readonly bans = new Map<string, Record>()
  private readonly accusations = new Map<string, Map<string, number>>()
  private readonly cfg: Required<BanInit>

  constructor (init: BanInit = {}) {
    this.cfg = { baseMs: 2000, maxMs: 60_000, maxAbsentMs: 4000, maxSlowMs: 16_000, decayMs: 60_000, windowMs: 60_000, quorum: 2, convictMs: 3_600_000, ...init }
  }

  /** Strikes still counting for `peer`. */
  strikes (peer: string, now = Date.now()): number {
    const b = this.bans.get(peer)
    if (b === undefined) return 0
    return Math.max(0, b.strikes - Math.floor(Math.max(0, now - b.last) / this.cfg.decayMs))
  }

  /**
   * A strike for the peer's own failure (`absent`: it could not be dialled,
   * dropped the stream, is leaving or no longer serves; such bans stay
   * short); returns the ban's length. Failures
   * while it is banned (jobs that were in flight there) are the same
   * incident: they do not add strikes.
   */
  ban (peer: string, kind: BanKind = 'fault', now = Date.now()): number {
    const prev = this.bans.get(peer)
    if (prev !== undefined && prev.until > now) return prev.until - now
    const strikes = this.strikes(peer, now) + 1
    const cap = kind === 'absent' ? this.cfg.maxAbsentMs : kind === 'slow' ? this.cfg.maxSlowMs : this.cfg.maxMs
    const ms = Math.min(cap, this.cfg.baseMs * 2 ** (strikes - 1))
    this.bans.set(peer, { until: now + ms, strikes, last: now })
    return ms
  }

  /** Proven wrong: banned for `convictMs`. */
  convict (peer: string, now = Date.now()): void {
    const strikes = this.strikes(peer, now) + 1
    this.bans.set(peer, { until: now + this.cfg.convictMs, strikes, last: now })
  }

  /** `reporter` says `accused` failed; returns true when that made a strike. */
  accuse (accused: string, reporter: string, now = Date.now()): boolean {
    if (accused === reporter || accused === '') return false
    const by = this.accusations.get(accused) ?? new Map<string, number>()
    for (const [r, at] of by) if (now - at > this.cfg.windowMs) by.delete(r)
    by.set(reporter, now)
    this.accusations.set(accused, by)
    if (by.size < this.cfg.quorum) return false
    this.accusations.delete(accused)
    this.ban(accused, 'fault', now)
    return true
  }

  isBanned (peer: string, now = Date.now()): boolean {
    const b = this.bans.get(peer)
    return b !== undefined && b.until > now
  }

  /** Accused recently by someone, not (yet) by enough peers to be banned. */
  isSuspect (peer: string, now = Date.now()): boolean {
    const by = this.accusations.get(peer)
    if (by === undefined) return false
    for (const at of by.values()) if (now - at <= this.cfg.windowMs) return true
    this.accusations.delete(peer)
    return false
  }

  /** Forgets peers with nothing left against them (keeps the maps bounded by recent trouble). */
  prune (now = Date.now()): void {
    for (const [p, b] of this.bans) if (b.until <= now && this.strikes(p, now) === 0) this.bans.delete(p)
    for (const p of this.accusations.keys()) this.isSuspect(p, now)
  }
}
