/**
 * How the members of a locality cell find each other without a central
 * peer: every vehicle of a cell is a DHT provider of the cell's key (a CID
 * of `fleetmesh/<fleet>/cell/<cell>`), and every node that joins a cell's
 * topic (vehicles, clients) looks the key up and dials a few providers, so
 * the cell's gossip mesh forms among its own members. A lookup is O(log N)
 * DHT hops; it runs at start, again while the node has fewer than
 * `minPeers` topic peers, and the provider record is refreshed at the DHT's
 * own republish interval (so upkeep does not grow with the fleet either).
 * A cell whose lookup finds nobody new (a neighbour cell with no cars in it,
 * which a client near it listens to) is looked up again after twice as
 * long each time, up to `maxBackoffMs`.
 */
import { repeatingTask } from '@libp2p/utils'
import type { ComponentLogger, ContentRouting, Logger, Startable } from '@libp2p/interface'
import type { GossipSub } from '@libp2p/gossipsub'
import type { RepeatingTask } from '@libp2p/utils'
import { capacityTopic } from '../../protocols/ids.ts'
import { cidOf, parseCid } from '../models/cid.ts'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Host } from '../host.ts'

/**
 * Cars per cell the design is sized for (README, "A million cars"): what
 * `fleetmesh swarm` uses past that many vehicles and `fleetmesh sim` assumes.
 */
export const CELL_SIZE = 32

/** The DHT key whose providers are a cell's vehicles. */
export function cellKey (fleet: string, cell: string): string {
  return cidOf(new TextEncoder().encode(`fleetmesh/${fleet}/cell/${cell}`))
}

export interface CellRendezvousComponents {
  logger: ComponentLogger
  contentRouting: Pick<ContentRouting, 'provide' | 'findProviders'>
  pubsub: Pick<GossipSub, 'getSubscribers'>
  /** Peers this node is connected to (not dialled again). */
  connected: (peer: string) => boolean
  /** Opens a connection to a peer found in the DHT. */
  connect: (peer: string, addrs: string[]) => Promise<void>
  peerId: { toString: () => string }
}

export interface CellRendezvousInit {
  fleet: string
  cells: string[]
  /** Announce this node as a member (vehicles do; clients only look). */
  provide: boolean
  /** Look again while a cell topic has fewer peers than this. @default 4 */
  minPeers?: number
  /** Peers dialled per lookup. @default 8 */
  dialPerLookup?: number
  /** How often the topic peers are counted. @default 30000 */
  checkMs?: number
  /** Longest wait before looking up a cell again whose lookups found nobody. @default 30 minutes */
  maxBackoffMs?: number
}

export class CellRendezvous implements Startable {
  private readonly c: CellRendezvousComponents
  private readonly init: CellRendezvousInit
  private readonly log: Logger
  private readonly task: RepeatingTask
  private provided = false
  /** Per cell whose lookups found nobody new: how many in a row, and when to look again. */
  private readonly empty = new Map<string, { misses: number, next: number }>()

  constructor (components: CellRendezvousComponents, init: CellRendezvousInit) {
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:cells')
    this.task = repeatingTask(async (opts) => { await this.run(opts?.signal) }, init.checkMs ?? 30_000, { timeout: 60_000, runImmediately: true })
  }

  start (): void { this.task.start() }
  stop (): void { this.task.stop() }

  /** Provides (once; the DHT republishes) and looks up every cell with too few topic peers. */
  async run (signal?: AbortSignal): Promise<void> {
    for (const cell of this.init.cells) {
      const key = parseCid(cellKey(this.init.fleet, cell))
      if (this.init.provide && !this.provided) {
        await this.c.contentRouting.provide(key, { signal }).then(() => { this.provided = true }, err => { this.log('cell %s not provided: %e', cell, err) })
      }
      if (this.c.pubsub.getSubscribers(capacityTopic(this.init.fleet, cell)).length >= (this.init.minPeers ?? 4)) continue
      const miss = this.empty.get(cell)
      if (miss !== undefined && Date.now() < miss.next) continue
      let dialled = 0
      try {
        for await (const p of this.c.contentRouting.findProviders(key, { signal })) {
          const peer = p.id.toString()
          if (peer === this.c.peerId.toString() || this.c.connected(peer)) continue
          await this.c.connect(peer, p.multiaddrs.map(a => a.toString())).then(() => { dialled++ }, err => { this.log('cell %s: %s not reached: %e', cell, peer, err) })
          if (dialled >= (this.init.dialPerLookup ?? 8)) break
        }
      } catch (err) {
        this.log('cell %s lookup: %e', cell, err)
      }
      if (dialled > 0) { this.empty.delete(cell); continue }
      const misses = (miss?.misses ?? 0) + 1
      const wait = Math.min(this.init.maxBackoffMs ?? 30 * 60_000, (this.init.checkMs ?? 30_000) * 2 ** misses)
      this.empty.set(cell, { misses, next: Date.now() + wait })
    }
  }
}

/** `connected` and `connect` of a libp2p host. */
export function hostConnections (host: Pick<Host, 'getConnections' | 'peerStore' | 'dial'>): Pick<CellRendezvousComponents, 'connected' | 'connect'> {
  return {
    connected: (peer) => host.getConnections(peerIdFromString(peer)).length > 0,
    connect: async (peer, addrs) => {
      const id = peerIdFromString(peer)
      if (addrs.length > 0) await host.peerStore.merge(id, { multiaddrs: addrs.map(a => multiaddr(a)) })
      await host.dial(id, { signal: AbortSignal.timeout(10_000) })
    }
  }
}
