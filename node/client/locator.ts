/**
 * Stage location: who can run a stage now. Candidates are vehicles whose
 * latest heartbeat is fresh, eligible and lists the stage, without banned
 * peers, each with its queue plus this client's own jobs in flight there.
 * The DHT's provider records are how holders are discovered: looking them up
 * connects to them, which brings their heartbeats. Bans (scheduler/bans.ts)
 * are only ever lifted by time: nothing a vehicle says clears them. That lookup runs in the
 * background when the cache is stale, and blocks only when no live holder
 * is known at all (a blocking lookup on the hot path stalled on dead peers).
 */
import type { AbortOptions, ComponentLogger, Logger } from '@libp2p/interface'
import type { FleetDirectory } from '../capacity/directory.ts'
import type { Provider, ShardExchange } from '../models/shard-exchange.ts'
import { BanList } from '../scheduler/bans.ts'
import type { Candidate } from '../scheduler/router.ts'
import type { ResolvedModel } from './resolver.ts'

export interface LocatorComponents {
  logger: ComponentLogger
  directory: Pick<FleetDirectory, 'holders' | 'waitFor' | 'cells'>
  exchange: Pick<ShardExchange, 'findProviders'>
}

export interface LocatorInit {
  /** How long DHT provider answers are reused. @default 15000 */
  providerCacheMs?: number
}

/** Load added to a suspect's candidacy for routing (Candidate.penalty): it is used last, but given no more time. */
const SUSPECT_LOAD = 16

export class StageLocator {
  readonly bans = new BanList()
  private readonly c: LocatorComponents
  private readonly log: Logger
  private readonly providerCacheMs: number
  private readonly inflight = new Map<string, number>()
  private readonly providerCache = new Map<string, { at: number, providers: Provider[] }>()
  private readonly refreshing = new Set<string>()

  constructor (components: LocatorComponents, init: LocatorInit = {}) {
    this.c = components
    this.log = components.logger.forComponent('fleetmesh:locator')
    this.providerCacheMs = init.providerCacheMs ?? 15_000
  }

  /** Counts this client's jobs in flight on a route's peers (call the returned function when done). */
  track (peers: string[]): () => void {
    for (const p of peers) this.inflight.set(p, (this.inflight.get(p) ?? 0) + 1)
    return () => { for (const p of peers) this.inflight.set(p, (this.inflight.get(p) ?? 1) - 1) }
  }

  /** The cells routed in, nearest first. */
  get cells (): string[] { return this.c.directory.cells }

  /** Live, unbanned holders of a stage of `m`; a suspect (accused by one peer) counts as heavily loaded, so it is used last. */
  live (m: ResolvedModel, stage: number): Candidate[] {
    this.bans.prune()
    return this.c.directory.holders(m.cid, stage)
      .filter(s => !this.bans.isBanned(s.peer))
      .map(s => ({ peer: s.peer, addrs: s.addrs, load: s.load + (this.inflight.get(s.peer) ?? 0), ...(this.bans.isSuspect(s.peer) ? { penalty: SUSPECT_LOAD } : {}), msPerItem: s.msPerItem, cell: s.cell, ...(s.links !== undefined ? { links: s.links } : {}) }))
  }

  /** Candidates for one stage (see the module comment). */
  async candidates (m: ResolvedModel, stage: number): Promise<Candidate[]> {
    const cid = m.manifest.stages[stage].cid
    const hit = this.providerCache.get(cid)
    const stale = hit === undefined || Date.now() - hit.at > this.providerCacheMs
    let out = this.live(m, stage)
    if (out.length === 0) {
      await this.providers(cid).catch(() => [])
      out = this.live(m, stage)
    } else if (stale && !this.refreshing.has(cid)) {
      this.refreshing.add(cid)
      void this.providers(cid).catch(() => []).finally(() => { this.refreshing.delete(cid) })
    }
    return out
  }

  /** Waits until an unbanned holder of the stage that `usable` accepts is heard (or the signal aborts). */
  async waitForHolder (m: ResolvedModel, stage: number, opts: AbortOptions & { usable?: (peer: string) => boolean }): Promise<void> {
    const usable = opts.usable ?? (() => true)
    await this.c.directory.waitFor(() => this.live(m, stage).some(c => usable(c.peer)), { ...opts, what: `capacity for stage ${stage}` })
  }

  /** DHT providers of a stage's shard (cached briefly). */
  private async providers (cid: string): Promise<Provider[]> {
    const providers = await this.c.exchange.findProviders(cid, { signal: AbortSignal.timeout(5_000), max: 20 })
    this.providerCache.set(cid, { at: Date.now(), providers })
    this.log('%d providers of %s', providers.length, cid)
    return providers
  }
}
