/**
 * Measures this node's links to the peers it may send work to: a libp2p ping
 * now and then (a few peers a round, least recently measured first) for the
 * round trip, real transfers (shards) for throughput, and whether the
 * connection goes through a relay. Vehicles publish the figures in their
 * heartbeats; clients use their own for the links to and from the route.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { repeatingTask } from '@libp2p/utils'
import type { RepeatingTask } from '@libp2p/utils'
import type { ComponentLogger, Libp2p, Logger, Startable } from '@libp2p/interface'
import type { Ping } from '@libp2p/ping'
import { LinkTable } from './scheduler/links.ts'
import type { LinkFigure } from './scheduler/links.ts'
import { CONNECTION_PING_MS } from './network.ts'

export interface LinkMeterComponents {
  logger: ComponentLogger
  /** Ping dials the peer if need be; address hints go into the peer store first. */
  host: Pick<Libp2p, 'getConnections' | 'peerStore'> & { services: { ping: Pick<Ping, 'ping'> } }
}

export interface LinkTarget { peer: string, addrs: string[] }

export interface LinkMeterInit {
  /** Peers worth measuring now (e.g. holders of the stages next to ours). */
  targets: () => LinkTarget[]
  /** Time between rounds. @default 5000 */
  intervalMs?: number
  /** Peers pinged per round. @default 4 */
  perRound?: number
  /**
   * A figure younger than this is not measured again. Each ping is a stream
   * of its own (about 400 B each way with its framing); it was 20 s, which
   * made most of an idle car's per-connection bytes. @default CONNECTION_PING_MS
   */
  freshMs?: number
}

export class LinkMeter implements Startable {
  readonly table = new LinkTable()
  private readonly c: LinkMeterComponents
  private readonly init: LinkMeterInit
  private readonly log: Logger
  private readonly task: RepeatingTask
  private readonly measuredAt = new Map<string, number>()

  constructor (components: LinkMeterComponents, init: LinkMeterInit) {
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:links')
    this.task = repeatingTask(async () => { await this.round() }, init.intervalMs ?? 5000, { runImmediately: true })
  }

  start (): void { this.task.start() }
  stop (): void { this.task.stop() }

  /** Whether every open connection to `peer` goes through a relay (undefined: no connection). */
  relayed (peer: string): boolean | undefined {
    const conns = this.c.host.getConnections(peerIdFromString(peer))
    if (conns.length === 0) return undefined
    return conns.every(c => c.remoteAddr.toString().includes('/p2p-circuit'))
  }

  get (peer: string): LinkFigure | undefined { return this.table.get(peer) }

  /** `bytes` moved with `peer` in `ms` (a shard fetch, a hand-off). */
  observeTransfer (peer: string, bytes: number, ms: number): void {
    this.table.observeTransfer(peer, bytes, ms, this.relayed(peer))
  }

  /** Measures `targets` now (those not measured recently), e.g. shard providers before a fetch. */
  async measure (targets: LinkTarget[]): Promise<void> {
    await Promise.all(targets.filter(t => this.table.get(t.peer) === undefined).slice(0, 8).map(async t => { await this.ping(t, Date.now()) }))
  }

  private async ping (t: LinkTarget, now: number): Promise<void> {
    this.measuredAt.set(t.peer, now)
    try {
      const id = peerIdFromString(t.peer)
      // libp2p's connection monitor already pings every open connection: its round trip costs nothing more
      const monitored = this.c.host.getConnections(id).find(c => c.rtt !== undefined && c.status === 'open')
      if (monitored?.rtt !== undefined) {
        this.table.observeRtt(t.peer, monitored.rtt, this.relayed(t.peer))
        return
      }
      if (this.c.host.getConnections(id).length === 0 && t.addrs.length > 0) {
        await this.c.host.peerStore.merge(id, { multiaddrs: t.addrs.map(a => multiaddr(a)) }, { signal: AbortSignal.timeout(5000) })
      }
      const ms = await this.c.host.services.ping.ping(id, { signal: AbortSignal.timeout(5000) })
      this.table.observeRtt(t.peer, ms, this.relayed(t.peer))
    } catch (err) {
      this.log('ping %s: %e', t.peer, err)
    }
  }

  /** Pings the least recently measured targets. */
  async round (): Promise<void> {
    const now = Date.now()
    const fresh = this.init.freshMs ?? CONNECTION_PING_MS
    const due = this.init.targets()
      .filter(t => now - (this.measuredAt.get(t.peer) ?? 0) > fresh)
      .sort((a, b) => (this.measuredAt.get(a.peer) ?? 0) - (this.measuredAt.get(b.peer) ?? 0))
      .slice(0, this.init.perRound ?? 4)
    await Promise.all(due.map(async t => { await this.ping(t, now) }))
    // forget when we measured peers that are no longer targets
    if (this.measuredAt.size > 1024) for (const [p, at] of this.measuredAt) if (now - at > 10 * fresh) this.measuredAt.delete(p)
  }
}
