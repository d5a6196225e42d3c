/**
 * The fleet as this peer hears it: the latest capacity heartbeat of every
 * sender on the capacity topics of the cells it listens to. Entries go stale after `staleMs`
 * without a heartbeat, at once when a sender says it is leaving, and are
 * forgotten after `forgetMs`, so the directory stays bounded.
 */
import { TypedEventEmitter } from '@libp2p/interface'
import { repeatingTask } from '@libp2p/utils'
import type { AbortOptions, ComponentLogger, Logger, Startable } from '@libp2p/interface'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import type { RepeatingTask } from '@libp2p/utils'
import { decodeHeartbeat } from '../../protocols/capacity.ts'
import type { Heartbeat, LinkFigure } from '../../protocols/capacity.ts'
import { DEFAULT_CELL, capacityTopic } from '../../protocols/ids.ts'
import type { Membership } from '../membership/membership.ts'

/** A peer as last heard: `heartbeat` is its last full heartbeat with the keep-alives since merged in. */
export interface PeerState {
  peer: string
  heartbeat: Heartbeat
  receivedAt: number
  /** seq of its last full heartbeat */
  fullSeq: number
  /** The cell whose topic it was heard on. */
  cell: string
}

export interface StageHolder { peer: string, addrs: string[], load: number, msPerItem: number, links?: LinkFigure[], cell: string }

export interface DirectoryComponents {
  logger: ComponentLogger
  pubsub: Pick<GossipSub, 'subscribe' | 'addEventListener' | 'removeEventListener'>
  /** Peers it refuses (revoked, no proof) are forgotten at once. */
  membership?: Pick<Membership, 'addEventListener' | 'removeEventListener'>
}

export interface DirectoryInit {
  fleet: string
  /** Locality cells to listen to (a vehicle: its own; a client: those it routes in). @default [DEFAULT_CELL] */
  cells?: string[]
  /** A peer not heard from for this long is not fresh. @default 3 keep-alives + 0.5 s */
  staleMs?: number
  /** A peer not heard from for this long is forgotten. @default 2 x staleMs */
  forgetMs?: number
  /** Most peers remembered; past it, the one heard from longest ago is forgotten. @default 50000 */
  maxPeers?: number
}

export interface DirectoryEvents {
  /** A newer heartbeat arrived. */
  heartbeat: CustomEvent<PeerState>
  /** A peer's heartbeats show that its process restarted (its sequence began again). */
  restart: CustomEvent<string>
}

/**
 * Vehicles heartbeat when what they offer changes, and at least this often
 * (a keep-alive): see README, "A million cars", for the arithmetic.
 */
export const DEFAULT_KEEPALIVE_MS = 120_000

export class FleetDirectory extends TypedEventEmitter<DirectoryEvents> implements Startable {
  private readonly c: DirectoryComponents
  private readonly topics: string[]
  /** The cells listened to, nearest first. */
  readonly cells: string[]
  private readonly staleMs: number
  private readonly forgetMs: number
  private readonly maxPeers: number
  private readonly log: Logger
  private readonly peers = new Map<string, PeerState>()
  private readonly pruner: RepeatingTask
  private readonly listener = (evt: CustomEvent<Message>): void => { this.onMessage(evt.detail) }
  private readonly onRefused = (evt: CustomEvent<{ peer: string }>): void => { this.peers.delete(evt.detail.peer) }

  constructor (components: DirectoryComponents, init: DirectoryInit) {
    super()
    this.c = components
    this.cells = init.cells ?? [DEFAULT_CELL]
    this.topics = this.cells.map(c => capacityTopic(init.fleet, c))
    this.staleMs = init.staleMs ?? 3 * DEFAULT_KEEPALIVE_MS + 500
    this.forgetMs = init.forgetMs ?? 2 * this.staleMs
    this.maxPeers = init.maxPeers ?? 50_000
    this.log = components.logger.forComponent('fleetmesh:directory')
    this.pruner = repeatingTask(() => { this.prune() }, Math.max(1000, this.forgetMs / 4))
  }

  start (): void {
    for (const t of this.topics) this.c.pubsub.subscribe(t)
    this.c.pubsub.addEventListener('message', this.listener)
    this.c.membership?.addEventListener('refused', this.onRefused)
    this.pruner.start()
  }

  stop (): void {
    this.c.pubsub.removeEventListener('message', this.listener)
    this.c.membership?.removeEventListener('refused', this.onRefused)
    this.pruner.stop()
  }

  private onMessage (msg: Message): void {
    const cell = this.cells[this.topics.indexOf(msg.topic)]
    if (cell === undefined || msg.type !== 'signed') return
    let hb: Heartbeat
    try { hb = decodeHeartbeat(msg.data) } catch (err) {
      this.log('dropped heartbeat from %p: %e', msg.from, err)
      return
    }
    const peer = msg.from.toString()
    const prev = this.peers.get(peer)
    if (hb.refreshes !== undefined) { this.refresh(peer, prev, hb, cell); return }
    if (prev !== undefined && prev.heartbeat.seq >= hb.seq && prev.heartbeat.ts >= hb.ts) return
    this.record(peer, hb, Date.now(), hb.seq, cell)
    // a lower sequence with a newer clock: the peer's process started again
    if (prev !== undefined && hb.seq < prev.heartbeat.seq && hb.ts > prev.heartbeat.ts) this.safeDispatchEvent('restart', { detail: peer })
  }

  /**
   * A short keep-alive: merged into the full heartbeat it names. Without
   * that one (joined since, or missed it) there is nothing to merge into:
   * ignored, the sender's next full heartbeat or join answer brings it.
   */
  private refresh (peer: string, prev: PeerState | undefined, ka: Heartbeat, cell: string): void {
    if (prev === undefined || prev.fullSeq !== ka.refreshes || ka.seq <= prev.heartbeat.seq) {
      this.log('keep-alive from %s for heartbeat %d ignored (have %s)', peer, ka.refreshes, prev?.fullSeq)
      return
    }
    const { stages: _s, addrs: _a, refreshes: _r, ...news } = ka
    this.record(peer, { ...prev.heartbeat, ...news }, Date.now(), prev.fullSeq, cell)
  }

  /** Sets a peer's latest heartbeat directly (unit tests, or a node's own state); `fullSeq`: of its last full heartbeat. */
  record (peer: string, hb: Heartbeat, receivedAt = Date.now(), fullSeq = hb.seq, cell = this.cells[0]): void {
    const state = { peer, heartbeat: hb, receivedAt, fullSeq, cell }
    // most recently heard last, so the first entry is the one to forget when full
    this.peers.delete(peer)
    this.peers.set(peer, state)
    if (this.peers.size > this.maxPeers) this.peers.delete(this.peers.keys().next().value!)
    this.safeDispatchEvent('heartbeat', { detail: state })
  }

  /** How many peers it holds. */
  get size (): number { return this.peers.size }

  /** Forgets a peer now (it left, or was refused). */
  forget (peer: string): void { this.peers.delete(peer) }

  /** Forgets peers not heard from for `forgetMs`. */
  prune (now = Date.now()): number {
    let n = 0
    for (const [peer, p] of this.peers) if (now - p.receivedAt > this.forgetMs) { this.peers.delete(peer); n++ }
    return n
  }

  /** Heard recently, not leaving, and its capacity record has not expired. */
  isFresh (p: PeerState, now = Date.now()): boolean {
    return now - p.receivedAt <= this.staleMs && p.heartbeat.leaving !== true &&
      (p.heartbeat.expiresAt === undefined || p.heartbeat.expiresAt > now)
  }

  /** Every peer remembered, fresh or not. */
  all (): PeerState[] { return [...this.peers.values()] }

  get (peer: string): PeerState | undefined { return this.peers.get(peer) }

  /** Fresh, eligible peers (the vehicles that take work now). */
  eligible (now = Date.now()): PeerState[] {
    return this.all().filter(p => this.isFresh(p, now) && p.heartbeat.eligible)
  }

  /** Peers whose latest fresh heartbeat says they are eligible and serve `manifest` stage `stage`. */
  holders (manifest: string, stage: number, now = Date.now()): StageHolder[] {
    const out: StageHolder[] = []
    for (const p of this.eligible(now)) {
      const s = p.heartbeat.stages.find(x => x.manifest === manifest && x.stage === stage)
      if (s !== undefined) out.push({ peer: p.peer, addrs: p.heartbeat.addrs, load: p.heartbeat.load, msPerItem: s.msPerItem, cell: p.cell, ...(p.heartbeat.links !== undefined ? { links: p.heartbeat.links } : {}) })
    }
    return out
  }

  /** Fresh peers (other than `except`) that serve or are loading `manifest` stage `stage`: supply, for choosing stages. */
  supply (manifest: string, stage: number, except: string, now = Date.now()): { providers: number, meanMsPerItem: number } {
    let providers = 0; let ms = 0
    for (const p of this.peers.values()) {
      if (p.peer === except || !this.isFresh(p, now)) continue
      const s = p.heartbeat.stages.find(x => x.manifest === manifest && x.stage === stage)
      const claimed = p.heartbeat.claims?.some(c => c.manifest === manifest && c.stage === stage) === true
      if (s !== undefined && p.heartbeat.eligible) { providers++; ms += s.msPerItem } else if (claimed) providers++
    }
    return { providers, meanMsPerItem: providers > 0 ? ms / providers : 0 }
  }

  /** Resolves once `predicate` holds (checked on every heartbeat); rejects when `opts.signal` aborts. */
  async waitFor (predicate: () => boolean, opts: AbortOptions & { what?: string } = {}): Promise<void> {
    if (predicate()) return
    await new Promise<void>((resolve, reject) => {
      const check = (): void => { if (predicate()) { done(); resolve() } }
      const abort = (): void => { done(); reject(new WaitTimeoutError(opts.what ?? 'a heartbeat', opts.signal?.reason)) }
      const done = (): void => { this.removeEventListener('heartbeat', check); opts.signal?.removeEventListener('abort', abort) }
      if (opts.signal?.aborted === true) { abort(); return }
      this.addEventListener('heartbeat', check)
      opts.signal?.addEventListener('abort', abort, { once: true })
    })
  }
}

/** What a directory wait was for did not happen before its signal aborted. */
export class WaitTimeoutError extends Error {
  readonly name = 'WaitTimeoutError'
  readonly code = 'ERR_WAIT_TIMEOUT'
  constructor (what: string, cause?: unknown) {
    super(`gave up waiting for ${what}${cause instanceof Error && cause.name !== 'TimeoutError' ? ` (${cause.message})` : ''}`, { cause })
  }
}

/**
 * Vehicles worth measuring links to: the fresh holders of the stages next to
 * each stage `me` serves (the peers it hands work to or gets it from).
 */
export function neighbours (directory: Pick<FleetDirectory, 'holders'>, served: Array<{ manifest: string, stage: number }>, me: string, max = 16): Array<{ peer: string, addrs: string[] }> {
  const out = new Map<string, string[]>()
  for (const s of served) {
    for (const n of [s.stage - 1, s.stage + 1]) {
      if (n < 0) continue
      for (const h of directory.holders(s.manifest, n)) if (h.peer !== me) out.set(h.peer, h.addrs)
    }
  }
  return [...out].slice(0, max).map(([peer, addrs]) => ({ peer, addrs }))
}
