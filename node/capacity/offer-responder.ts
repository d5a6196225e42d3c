/**
 * The vehicle's side of batch work: hears job announcements on the jobs
 * topic, offers the stages it holds to the announcing client over
 * `/fleetmesh/offer/2.0.0`, keeps the lease while the client renews it, and
 * forgets it when it expires or the stream breaks. Model announcements heard
 * on the same topic are passed on as `model` events.
 */
import { TypedEventEmitter } from '@libp2p/interface'
import { lpStream, repeatingTask } from '@libp2p/utils'
import type { ComponentLogger, Logger, Startable } from '@libp2p/interface'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import type { RepeatingTask } from '@libp2p/utils'
import { OFFER_PROTOCOL, jobsTopic } from '../../protocols/ids.ts'
import { SeenJobs, decodeJobsMessage } from '../../protocols/jobs.ts'
import type { JobAnnouncement, ModelAnnouncement } from '../../protocols/jobs.ts'
import { MAX_OFFER_MESSAGE_BYTES, OFFER_READ_TIMEOUT_MS } from '../../protocols/limits.ts'
import { decodeOfferMessage, encodeOfferMessage } from '../../protocols/offer.ts'
import type { PeerDialer } from '../dial.ts'
import type { StageRuntime } from '../runtime/stage-runtime.ts'
import { TokenBuckets } from '../peer-limits.ts'
import { LeaseBook } from './leases.ts'

export interface OfferResponderComponents {
  logger: ComponentLogger
  pubsub: Pick<GossipSub, 'subscribe' | 'addEventListener' | 'removeEventListener'>
  dialer: PeerDialer
  runtime: Pick<StageRuntime, 'served' | 'isAccepting'>
}

export interface OfferResponderInit {
  fleet: string
  /** Items this vehicle offers to hold in flight per job. @default 4 */
  maxInFlight?: number
}

export interface OfferResponderEvents {
  /** A model was announced on the jobs topic by `from`. */
  model: CustomEvent<{ announcement: ModelAnnouncement, from: string }>
}

/** Addresses of an announcing client that are dialled. */
const MAX_ANNOUNCED_ADDRS = 4

export class OfferResponder extends TypedEventEmitter<OfferResponderEvents> implements Startable {
  /** Leases this vehicle granted (written only by this responder; tests may grant one directly). */
  readonly leases = new LeaseBook()
  private readonly c: OfferResponderComponents
  private readonly init: OfferResponderInit
  private readonly log: Logger
  private readonly seen = new SeenJobs()
  /** Offers (dials) per announcing client: 2 a second, bursts of 5. */
  private readonly dials = new TokenBuckets(2, 5)
  private readonly sweeper: RepeatingTask
  private readonly listener = (evt: CustomEvent<Message>): void => { void this.onMessage(evt.detail) }

  constructor (components: OfferResponderComponents, init: OfferResponderInit) {
    super()
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:offers')
    this.sweeper = repeatingTask(() => { for (const e of this.leases.sweep()) this.log('lease %s for job %s expired', e.lease, e.job) }, 250)
  }

  start (): void {
    this.c.pubsub.subscribe(jobsTopic(this.init.fleet))
    this.c.pubsub.addEventListener('message', this.listener)
    this.sweeper.start()
  }

  stop (): void {
    this.c.pubsub.removeEventListener('message', this.listener)
    this.sweeper.stop()
  }

  /** Whether a lease this vehicle granted is still live (the infer handler refuses work under a dead one). */
  isLeaseValid (lease: string): boolean { return this.leases.isValid(lease) }

  private async onMessage (msg: Message): Promise<void> {
    if (msg.topic !== jobsTopic(this.init.fleet) || msg.type !== 'signed') return
    let m
    try { m = decodeJobsMessage(msg.data) } catch (err) {
      this.log('dropped announcement from %p: %e', msg.from, err)
      return
    }
    if (m.kind === 'model') { this.safeDispatchEvent('model', { detail: { announcement: m.model, from: msg.from.toString() } }); return }
    // a replayed announcement is ignored once we have offered; until then
    // (nothing held yet) a re-announcement gets another look
    if (m.kind === 'job' && !this.seen.has(m.job)) await this.offer(m.job, msg.from.toString())
  }

  /**
   * Offers what we hold of `a`'s model to its client, then keeps the lease it
   * grants. The client is dialled at no more than a few of the addresses it
   * announced, and a client gets at most a few offers a second: announcements
   * cannot make vehicles dial elsewhere en masse.
   */
  async offer (a: JobAnnouncement, client: string): Promise<void> {
    const held = this.c.runtime.served().filter(s => s.manifest === a.manifest)
    if (!this.c.runtime.isAccepting || held.length === 0) return
    if (!this.dials.take(client)) { this.log('not offering job %s: %s announces faster than offers are made', a.job, client); return }
    this.seen.remember(a)
    try {
      const stream = await this.c.dialer.dialProtocol(client, OFFER_PROTOCOL, { signal: AbortSignal.timeout(5000), addrs: a.addrs.slice(0, MAX_ANNOUNCED_ADDRS) })
      const lp = lpStream(stream, { maxDataLength: MAX_OFFER_MESSAGE_BYTES })
      const stages = held.map(s => ({ stage: s.stage, msPerItem: s.msPerItem, ...(s.batchMsPerItem !== undefined ? { batchMsPerItem: s.batchMsPerItem } : {}) }))
      await lp.write(encodeOfferMessage({ type: 'offer', job: a.job, stages, maxInFlight: this.init.maxInFlight ?? 4 }))
      const answer = decodeOfferMessage((await lp.read({ signal: AbortSignal.timeout(OFFER_READ_TIMEOUT_MS) })).subarray())
      if (answer.type !== 'lease') { await stream.close(); return }
      this.leases.grant({ lease: answer.lease, job: a.job, client, stages: answer.stages, inFlight: answer.inFlight, expiresAt: Date.now() + answer.ttlMs })
      // renewals until release, expiry or a broken stream; unknown messages are skipped
      try {
        for (;;) {
          const m = decodeOfferMessage((await lp.read({ signal: AbortSignal.timeout(answer.ttlMs * 2) })).subarray())
          if (m.type === 'release') break
          if (m.type !== 'renew') continue
          const expiresAt = this.leases.renew(m.lease, m.ttlMs)
          if (expiresAt === undefined) break
          await lp.write(encodeOfferMessage({ type: 'ack', lease: m.lease, expiresAt }))
        }
      } finally {
        this.leases.release(answer.lease)
      }
      await stream.close().catch(() => {})
    } catch (err) {
      this.log('offer for job %s failed: %e', a.job, err)
    }
  }
}
