/**
 * Advertises what this node offers: a signed heartbeat on its cell's
 * capacity topic (eligible, load, stages held, measured speed) and a signed
 * capacity record in the DHT. Both go out when something changes (the
 * governor's eligibility, the stages hosted, the load crossing a step), a
 * heartbeat at least every keep-alive and the record at half its lifetime,
 * so an idle car sends almost nothing (README, "A million cars"). A peer
 * that joins the cell gets the state at once. (Provider records for the
 * shards it holds are the shard exchange's.) On stop it publishes a last
 * heartbeat with `leaving: true`.
 */
import { repeatingTask } from '@libp2p/utils'
import type { AbortOptions, ComponentLogger, ContentRouting, Libp2p, Logger, PeerId, PrivateKey, Startable, TypedEventTarget } from '@libp2p/interface'
import type { GossipSub, SubscriptionChangeData } from '@libp2p/gossipsub'
import type { RepeatingTask } from '@libp2p/utils'
import { capacityRecordKey, encodeHeartbeat, keepAliveOf, sealCapacityRecord } from '../../protocols/capacity.ts'
import type { LinkTable } from '../scheduler/links.ts'
import type { CapacityRecord, Heartbeat, VehicleSummary } from '../../protocols/capacity.ts'
import { DEFAULT_CELL, capacityTopic, jobsTopic } from '../../protocols/ids.ts'
import { MAX_CAPACITY_RECORD_TTL_MS } from '../../protocols/limits.ts'
import { dialableAddrs } from '../host.ts'
import type { Membership, OwnCredentials } from '../membership/membership.ts'
import type { StageRuntime } from '../runtime/stage-runtime.ts'
import { DEFAULT_KEEPALIVE_MS } from './directory.ts'

/** How often the load is looked at (locally; a heartbeat goes out only when it moved). */
const LOAD_CHECK_MS = 1000
/** Load changes are announced at most this often. */
const MIN_LOAD_BEAT_MS = 5000
/** How many members of a cell answer a joining vehicle, on average. */
export const JOIN_SAMPLE = 6
/**
 * Link figures in one heartbeat (the most recently measured; the wire
 * allows MAX_LINKS). Each costs about 64 bytes on every copy of every
 * heartbeat: 15 of them were 976 of a 20-car cell's 1,606-byte heartbeats.
 */
export const HEARTBEAT_LINKS = 6
/**
 * Every this many keep-alives one is a full heartbeat; the others are short
 * (Heartbeat.refreshes), and an idle cell's gossip shrinks by the size of
 * its stages, addresses, vehicle state and links (README, "A million cars").
 * The keep-alive after a change is full too: a peer that missed the flooded
 * change hears it one keep-alive later.
 */
export const FULL_EVERY = 4
/**
 * Capacity record lifetime. Each re-put is a DHT walk and 20 stores, so it is
 * long: the record says what a car serves for `status`, not whether it is
 * there now. A car that vanishes drops out of directories when its
 * heartbeats stop (3 keep-alives); one that changes or leaves puts a new
 * record at once.
 */
export const DEFAULT_RECORD_TTL_MS = 12 * 60 * 60_000

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
  /** gossipsub (its class's publish takes `floodPublish`; the exported interface does not say so). */
  pubsub: Pick<GossipSub, 'subscribe' | 'addEventListener' | 'removeEventListener'> & { publish: (topic: string, data: Uint8Array, opts?: { floodPublish?: boolean }) => Promise<unknown> }
  contentRouting: ContentRouting
  addresses: Pick<Libp2p, 'getMultiaddrs'>
  runtime: Pick<StageRuntime, 'served' | 'queued' | 'isAccepting'>
  vehicle?: VehicleStatus
  hosting?: ClaimSource
  /** This node's certificate chain, attached to heartbeats and records (absent in an open fleet). */
  credentials?: OwnCredentials
  /** Its measured links to other vehicles, published in heartbeats. */
  links?: Pick<LinkTable, 'recent'>
  /** Who joined: a vehicle's join is answered by a sample of the cell. */
  membership?: Pick<Membership, 'hasRole'>
  /** How many members of the cell this node hears. */
  cellSize?: () => number
}

export interface AdvertiserInit {
  fleet: string
  /** The locality cell whose topic carries the heartbeats. @default DEFAULT_CELL */
  cell?: string
  /** Capacity record lifetime (at most MAX_CAPACITY_RECORD_TTL_MS); refreshed at half of it. @default DEFAULT_RECORD_TTL_MS */
  recordTtlMs?: number
  /** Longest time between two heartbeats. @default DEFAULT_KEEPALIVE_MS */
  keepAliveMs?: number
  /** Items this node takes at once. @default 4 */
  slots?: number
}

export class CapacityAdvertiser implements Startable {
  private readonly c: AdvertiserComponents
  private readonly init: AdvertiserInit
  private readonly log: Logger
  private readonly heartbeats: RepeatingTask
  private readonly records: RepeatingTask
  private readonly loadWatch: RepeatingTask
  private readonly topic: string
  private lastBeat = 0
  private lastLoad = { load: 0, open: true }
  private seq = 0
  private recordSeq = 0
  private expiresAt?: number
  private started = false
  private putting?: Promise<void>
  private dirty = false
  /** The seq of the last full heartbeat, and keep-alives sent short since. */
  private lastFull = 0
  private shortSinceFull = 0
  /** The next beat of the heartbeat task must be full (a join answer, a load step). */
  private fullNext = false
  /** A join answer waiting for the one-a-second limit. */
  private answer?: ReturnType<typeof setTimeout>
  /** A change was flooded: the next keep-alive repeats it in full, for a peer that missed it (under load, or joining). */
  private repeatFull = false
  /** Something changed: say so at once. */
  private readonly onChange = (): void => {
    if (!this.started) return
    this.repeatFull = true
    void this.beat()
    void this.refreshRecord()
  }

  /**
   * A peer that just joined the cell gets our state at once, not at the next
   * keep-alive (joins in a burst share one). A client or gateway hears every
   * member so it can route at once; a joining vehicle only needs a sample to
   * choose what to host, so each member answers it with probability
   * JOIN_SAMPLE / cell size: else every join would cost the cell
   * (members x members) messages, and a cell of 100 cars starting together
   * saturated this machine's CPU.
   */
  private readonly onSubscription = (evt: CustomEvent<SubscriptionChangeData>): void => {
    if (!evt.detail.subscriptions.some(s => s.topic === this.topic && s.subscribe) || this.answer !== undefined) return
    const vehicle = this.c.membership?.hasRole(evt.detail.peerId.toString(), 'vehicle') === true
    if (vehicle && Math.random() * Math.max(1, this.c.cellSize?.() ?? 0) >= JOIN_SAMPLE) return
    // at most one answer a second: a beat that went out just before the peer subscribed did not reach it
    const wait = 1000 - (Date.now() - this.lastBeat)
    this.fullNext = true
    if (wait <= 0) { this.heartbeats.run(); return }
    this.answer = setTimeout(() => { this.answer = undefined; if (this.started) this.heartbeats.run() }, wait)
  }

  /** Announces the load when it crossed a step: no free slot / free slots, or two items more or fewer. */
  private checkLoad (): void {
    const now = { load: this.c.runtime.queued(), open: this.slots() > 0 }
    if (now.open === this.lastLoad.open && Math.abs(now.load - this.lastLoad.load) < 2) return
    if (Date.now() - this.lastBeat < MIN_LOAD_BEAT_MS) return
    this.fullNext = true
    this.heartbeats.run()
  }

  constructor (components: AdvertiserComponents, init: AdvertiserInit) {
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:advertiser')
    this.topic = capacityTopic(init.fleet, init.cell ?? DEFAULT_CELL)
    this.heartbeats = repeatingTask(async () => {
      // a join answer or a load step: full, and to every peer of the topic; a keep-alive: to the mesh, mostly short
      const urgent = this.fullNext
      const repeat = this.repeatFull && !urgent
      this.fullNext = false
      if (!urgent) this.repeatFull = false
      await this.beat(false, !urgent && !repeat && this.lastFull > 0 && this.shortSinceFull < FULL_EVERY - 1, urgent)
    }, init.keepAliveMs ?? DEFAULT_KEEPALIVE_MS, { debounce: 20 })
    this.records = repeatingTask(async () => { await this.refreshRecord() }, this.ttl / 2)
    this.loadWatch = repeatingTask(() => { this.checkLoad() }, LOAD_CHECK_MS)
  }

  private get ttl (): number { return Math.min(MAX_CAPACITY_RECORD_TTL_MS, this.init.recordTtlMs ?? DEFAULT_RECORD_TTL_MS) }

  start (): void {
    // subscribing makes this node part of the topics' mesh, so it relays too
    this.c.pubsub.subscribe(this.topic)
    this.c.pubsub.subscribe(jobsTopic(this.init.fleet))
    this.c.pubsub.addEventListener('subscription-change', this.onSubscription)
    this.c.vehicle?.addEventListener('eligible', this.onChange)
    this.c.vehicle?.addEventListener('ineligible', this.onChange)
    this.c.hosting?.addEventListener('change', this.onChange)
    this.started = true
    this.heartbeats.start()
    this.records.start()
    this.loadWatch.start()
    this.onChange()
  }

  async stop (): Promise<void> {
    this.started = false
    clearTimeout(this.answer)
    this.heartbeats.stop()
    this.records.stop()
    this.loadWatch.stop()
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
    const links = this.c.links?.recent(HEARTBEAT_LINKS) ?? []
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

  /**
   * Publishes one heartbeat now: full, or a short keep-alive of the last full
   * one. `flood`: to every peer of the topic this node is connected to (a
   * change, a join answer, leaving: a joiner or a client outside this node's
   * gossip mesh hears it at once), else to the mesh peers only (keep-alives:
   * each copy costs bytes, and a lost one is repeated).
   */
  async beat (leaving = false, short = false, flood = true): Promise<void> {
    this.lastBeat = Date.now()
    this.lastLoad = { load: this.c.runtime.queued(), open: this.slots() > 0 }
    const full = this.heartbeat(leaving)
    // a keep-alive takes this beat's seq and names the last full heartbeat sent
    const hb = short && !leaving ? keepAliveOf({ ...full, seq: this.lastFull }, full.seq) : full
    if (hb.refreshes !== undefined) this.shortSinceFull++
    else { this.lastFull = hb.seq; this.shortSinceFull = 0 }
    try {
      await this.c.pubsub.publish(this.topic, encodeHeartbeat(hb), { floodPublish: flood })
    } catch (err) {
      this.log('heartbeat not published: %e', err)
    }
  }
}
