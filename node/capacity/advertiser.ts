/**
 * Advertises what this node offers: a signed heartbeat on the fleet's
 * capacity topic every few seconds (eligible, load, stages held, measured
 * speed) and a signed capacity record in the DHT that expires within a
 * minute. (Provider records for the shards it holds are the shard
 * exchange's.) It asks
 * the runtime, the governor and the stage hosting for what to say, and says
 * it again at once when they report a change. On stop it publishes a last
 * heartbeat with `leaving: true`.
 */
import { repeatingTask } from '@libp2p/utils'
import type { AbortOptions, ComponentLogger, ContentRouting, Libp2p, Logger, PeerId, PrivateKey, Startable, TypedEventTarget } from '@libp2p/interface'
import type { GossipSub, SubscriptionChangeData } from '@libp2p/gossipsub'
import type { RepeatingTask } from '@libp2p/utils'
import { MAX_LINKS, capacityRecordKey, encodeHeartbeat, sealCapacityRecord } from '../../protocols/capacity.ts'
import type { LinkTable } from '../scheduler/links.ts'
import type { CapacityRecord, Heartbeat, VehicleSummary } from '../../protocols/capacity.ts'
import { capacityTopic, jobsTopic } from '../../protocols/ids.ts'
import { MAX_CAPACITY_RECORD_TTL_MS } from '../../protocols/limits.ts'
import { dialableAddrs } from '../host.ts'
import type { OwnCredentials } from '../membership/membership.ts'
import type { StageRuntime } from '../runtime/stage-runtime.ts'
import { DEFAULT_HEARTBEAT_MS } from './directory.ts'

/** What the advertiser asks the vehicle's governor. */
export interface VehicleStatus extends TypedEventTarget<{ eligible: CustomEvent, ineligible: CustomEvent }> {
  summary: () => VehicleSummary
}

/** What the advertiser asks the stage hosting: stages chosen and loading. */
export interface ClaimSource extends TypedEventTarget<{ change: CustomEvent }> {
  claims: () => Array<{ manifest: string, stage: number }>
}

export interface AdvertiserComponents {
  peerId: PeerId
  privateKey: PrivateKey
  logger: ComponentLogger
  pubsub: Pick<GossipSub, 'subscribe' | 'publish' | 'addEventListener' | 'removeEventListener'>
  contentRouting: ContentRouting
  addresses: Pick<Libp2p, 'getMultiaddrs'>
  runtime: Pick<StageRuntime, 'served' | 'queued' | 'isAccepting'>
  vehicle?: VehicleStatus
  hosting?: ClaimSource
  /** This node's certificate chain, attached to heartbeats and records (absent in an open fleet). */
  credentials?: OwnCredentials
  /** Its measured links to other vehicles, published in heartbeats. */
  links?: Pick<LinkTable, 'recent'>
}

export interface AdvertiserInit {
  fleet: string
  /** Capacity record lifetime (at most 60 s); refreshed at a third of it. @default 60000 */
  recordTtlMs?: number
  /** Heartbeat period. @default 2000 */
  heartbeatMs?: number
  /** Items this node takes at once. @default 4 */
  slots?: number
}

export class CapacityAdvertiser implements Startable {
  private readonly c: AdvertiserComponents
  private readonly init: AdvertiserInit
  private readonly log: Logger
  private readonly heartbeats: RepeatingTask
  private readonly records: RepeatingTask
  private seq = 0
  private recordSeq = 0
  private expiresAt?: number
  private started = false
  private putting?: Promise<void>
  private dirty = false
  /** Something changed: say so at once. */
  private readonly onChange = (): void => {
    if (!this.started) return
    void this.beat()
    void this.refreshRecord()
  }

  /** A peer that just subscribed gets our state at once, not at the next tick. */
  private readonly onSubscription = (evt: CustomEvent<SubscriptionChangeData>): void => {
    if (evt.detail.subscriptions.some(s => s.topic === capacityTopic(this.init.fleet) && s.subscribe)) this.heartbeats.run()
  }

  constructor (components: AdvertiserComponents, init: AdvertiserInit) {
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:advertiser')
    this.heartbeats = repeatingTask(async () => { await this.beat() }, init.heartbeatMs ?? DEFAULT_HEARTBEAT_MS, { debounce: 20 })
    this.records = repeatingTask(async () => { await this.refreshRecord() }, this.ttl / 3)
  }

  private get ttl (): number { return Math.min(MAX_CAPACITY_RECORD_TTL_MS, this.init.recordTtlMs ?? MAX_CAPACITY_RECORD_TTL_MS) }

  start (): void {
    // subscribing makes this node part of the topics' mesh, so it relays too
    this.c.pubsub.subscribe(capacityTopic(this.init.fleet))
    this.c.pubsub.subscribe(jobsTopic(this.init.fleet))
    this.c.pubsub.addEventListener('subscription-change', this.onSubscription)
    this.c.vehicle?.addEventListener('eligible', this.onChange)
    this.c.vehicle?.addEventListener('ineligible', this.onChange)
    this.c.hosting?.addEventListener('change', this.onChange)
    this.started = true
    this.heartbeats.start()
    this.records.start()
    this.onChange()
  }

  async stop (): Promise<void> {
    this.started = false
    this.heartbeats.stop()
    this.records.stop()
    this.c.pubsub.removeEventListener('subscription-change', this.onSubscription)
    this.c.vehicle?.removeEventListener('eligible', this.onChange)
    this.c.vehicle?.removeEventListener('ineligible', this.onChange)
    this.c.hosting?.removeEventListener('change', this.onChange)
    await this.beat(true)
    // let the withdrawal leave before the caller closes connections
    await new Promise(resolve => setTimeout(resolve, 100))
  }

  private get eligible (): boolean { return this.c.runtime.isAccepting }

  private slots (): number { return Math.max(0, (this.init.slots ?? 4) - this.c.runtime.queued()) }

  private linkFigures (): Pick<Heartbeat, 'links'> {
    const links = this.c.links?.recent(MAX_LINKS) ?? []
    return links.length > 0 ? { links } : {}
  }

  heartbeat (leaving = false): Heartbeat {
    const claims = this.c.hosting?.claims() ?? []
    return {
      ts: Date.now(),
      seq: ++this.seq,
      eligible: this.eligible && !leaving,
      load: this.c.runtime.queued(),
      slots: this.slots(),
      stages: this.c.runtime.served(),
      addrs: dialableAddrs(this.c.addresses),
      ...(leaving ? { leaving: true } : {}),
      ...(this.expiresAt !== undefined ? { expiresAt: this.expiresAt } : {}),
      ...(this.c.vehicle !== undefined ? { vehicle: this.c.vehicle.summary() } : {}),
      ...(claims.length > 0 ? { claims } : {}),
      ...this.linkFigures(),
      ...this.membership()
    }
  }

  private membership (): { membership?: Uint8Array[] } {
    const chain = this.c.credentials?.chain()
    return chain !== undefined ? { membership: chain } : {}
  }

  /** The signed capacity record as of now. */
  record (): CapacityRecord {
    const now = Date.now()
    return {
      peer: this.c.peerId.toString(),
      seq: ++this.recordSeq,
      issuedAt: now,
      expiresAt: now + this.ttl,
      eligible: this.eligible,
      stages: this.c.runtime.served(),
      slots: this.slots(),
      reasons: this.c.vehicle?.summary().reasons ?? [],
      ...this.membership()
    }
  }

  /** Puts a fresh record soon: now, or right after a put in flight (so the newest state always lands). */
  private async refreshRecord (): Promise<void> {
    if (this.putting !== undefined) { this.dirty = true; return }
    this.putting = this.publishRecord({ signal: AbortSignal.timeout(10_000) }).finally(() => { this.putting = undefined })
    await this.putting
    if (this.dirty && this.started) { this.dirty = false; await this.refreshRecord() }
  }

  /** Puts a fresh signed capacity record in the DHT. */
  async publishRecord (opts: AbortOptions = {}): Promise<void> {
    const r = this.record()
    try {
      await this.c.contentRouting.put(capacityRecordKey(r.peer), await sealCapacityRecord(r, this.c.privateKey), opts)
      this.expiresAt = r.expiresAt
    } catch (err) {
      this.log('capacity record not published: %e', err)
    }
  }

  /** Publishes one heartbeat now. */
  async beat (leaving = false): Promise<void> {
    try {
      await this.c.pubsub.publish(capacityTopic(this.init.fleet), encodeHeartbeat(this.heartbeat(leaving)))
    } catch (err) {
      this.log('heartbeat not published: %e', err)
    }
  }
}
