/**
 * Advertises what this node offers: a provider record in the DHT for every
 * shard (and manifest) it holds, and a signed heartbeat on the fleet's
 * capacity topic every few seconds (eligible, load, stages served, measured
 * speed). On stop it publishes a last heartbeat with `leaving: true`.
 */
import type { Logger } from '@libp2p/interface'
import type { SubscriptionChangeData } from '@libp2p/gossipsub'
import { parseCid } from '../models/cid.ts'
import type { Host } from '../host.ts'
import { hostAddrs } from '../host.ts'
import type { StageServer } from '../runtime/stage-server.ts'
import { capacityTopic, jobsTopic } from '../../protocols/ids.ts'
import { MAX_RECORD_TTL_MS, capacityRecordKey, encodeCapacityRecord, encodeHeartbeat } from '../../protocols/capacity.ts'
import type { CapacityRecord, Heartbeat, RecordSigner, VehicleSummary } from '../../protocols/capacity.ts'

export interface AdvertiserInit {
  fleet: string
  /** Signs the DHT capacity record; without it no record is published. */
  privateKey?: RecordSigner
  /** Capacity record lifetime (at most 60 s); refreshed at a third of it. @default 60000 */
  recordTtlMs?: number
  /** Heartbeat period. @default 2000 */
  heartbeatMs?: number
  /** Items this node takes at once. @default 4 */
  slots?: number
}

export const DEFAULT_HEARTBEAT_MS = 2000
export const DEFAULT_RECORD_TTL_MS = MAX_RECORD_TTL_MS

export class CapacityAdvertiser {
  private readonly host: Host
  private readonly stages: StageServer
  private readonly init: AdvertiserInit
  private readonly log: Logger
  private timer?: ReturnType<typeof setInterval>
  private seq = 0
  private recordSeq = 0
  private recordTimer?: ReturnType<typeof setInterval>
  private expiresAt?: number
  /** The vehicle's latest state and decision, carried in heartbeats. */
  vehicle?: VehicleSummary
  /** Stages chosen and being loaded, announced so other vehicles choose differently. */
  readonly claims = new Map<string, { manifest: string, stage: number }>()
  private readonly provided = new Set<string>()
  private soon?: ReturnType<typeof setTimeout>
  /** A peer that just subscribed gets our state at once, not at the next tick. */
  private readonly onSubscription = (evt: CustomEvent<SubscriptionChangeData>): void => {
    if (!evt.detail.subscriptions.some(s => s.topic === capacityTopic(this.init.fleet) && s.subscribe)) return
    if (this.soon !== undefined) return
    this.soon = setTimeout(() => { this.soon = undefined; void this.beat() }, 50)
  }

  constructor (host: Host, stages: StageServer, init: AdvertiserInit) {
    this.host = host
    this.stages = stages
    this.init = init
    this.log = host.logger.forComponent('fleetmesh:advertiser')
  }

  start (): void {
    // subscribing makes this node part of the topics' mesh, so it relays too
    this.host.services.pubsub.subscribe(capacityTopic(this.init.fleet))
    this.host.services.pubsub.subscribe(jobsTopic(this.init.fleet))
    this.host.services.pubsub.addEventListener('subscription-change', this.onSubscription)
    this.timer = setInterval(() => { void this.beat() }, this.init.heartbeatMs ?? DEFAULT_HEARTBEAT_MS)
    this.timer.unref()
    void this.beat()
    if (this.init.privateKey !== undefined) {
      this.recordTimer = setInterval(() => { void this.publishRecord() }, this.ttl / 3)
      this.recordTimer.unref()
      void this.publishRecord()
    }
  }

  heartbeat (leaving = false): Heartbeat {
    const load = this.stages.load()
    const slots = this.init.slots ?? 4
    return {
      v: 1,
      ts: Date.now(),
      seq: ++this.seq,
      eligible: this.stages.accepting && !leaving,
      load,
      slots: Math.max(0, slots - load),
      stages: this.stages.served(),
      models: this.stages.models(),
      addrs: hostAddrs(this.host).map(a => a.replace(/\/p2p\/[^/]+$/, '')),
      ...(leaving ? { leaving: true } : {}),
      ...(this.expiresAt !== undefined ? { expiresAt: this.expiresAt } : {}),
      ...(this.vehicle !== undefined ? { vehicle: this.vehicle } : {}),
      ...(this.claims.size > 0 ? { claims: [...this.claims.values()] } : {})
    }
  }

  private get ttl (): number { return Math.min(MAX_RECORD_TTL_MS, this.init.recordTtlMs ?? DEFAULT_RECORD_TTL_MS) }

  /** The signed capacity record as of now. */
  record (): CapacityRecord {
    const now = Date.now()
    const load = this.stages.load()
    return {
      v: 1,
      peer: this.host.peerId.toString(),
      seq: ++this.recordSeq,
      issuedAt: now,
      expiresAt: now + this.ttl,
      eligible: this.stages.accepting,
      stages: this.stages.served(),
      slots: Math.max(0, (this.init.slots ?? 4) - load),
      reasons: this.vehicle?.reasons ?? []
    }
  }

  /** Puts a fresh signed capacity record in the DHT. */
  async publishRecord (): Promise<void> {
    if (this.init.privateKey === undefined) return
    const r = this.record()
    try {
      await this.host.contentRouting.put(capacityRecordKey(r.peer), await encodeCapacityRecord(r, this.init.privateKey), { signal: AbortSignal.timeout(10_000) })
      this.expiresAt = r.expiresAt
    } catch (err) {
      this.log('capacity record not published: %e', err)
    }
  }

  /** Publishes one heartbeat now. */
  async beat (leaving = false): Promise<void> {
    try {
      await this.host.services.pubsub.publish(capacityTopic(this.init.fleet), encodeHeartbeat(this.heartbeat(leaving)))
    } catch (err) {
      this.log('heartbeat not published: %e', err)
    }
  }

  /** Publishes a provider record for `cid` (once per CID). */
  async provide (cid: string, signal?: AbortSignal): Promise<void> {
    if (this.provided.has(cid)) return
    await this.host.contentRouting.provide(parseCid(cid), { signal: signal ?? AbortSignal.timeout(30_000) })
    this.provided.add(cid)
  }

  async stop (): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    if (this.recordTimer !== undefined) clearInterval(this.recordTimer)
    if (this.soon !== undefined) clearTimeout(this.soon)
    this.timer = undefined
    this.host.services.pubsub.removeEventListener('subscription-change', this.onSubscription)
    await this.beat(true)
    // let the withdrawal leave before the caller closes connections
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
