/**
 * The vehicle's side of batch work: hears job announcements, offers the
 * stages it serves to the announcing client over `/fleetmesh/offer/1.0.0`,
 * keeps the lease while the client renews it, and forgets it when it expires
 * or the stream breaks.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { Logger } from '@libp2p/interface'
import type { Message } from '@libp2p/gossipsub'
import { LeaseBook } from './leases.ts'
import type { Host } from '../host.ts'
import type { StageServer } from '../runtime/stage-server.ts'
import { OFFER_PROTOCOL, jobsTopic } from '../../protocols/ids.ts'
import { SeenJobs, decodeJobsMessage } from '../../protocols/jobs.ts'
import type { JobAnnouncement, ModelAnnouncement } from '../../protocols/jobs.ts'
import { MAX_OFFER_MESSAGE_BYTES, decodeOfferMessage, encodeOfferMessage } from '../../protocols/offer.ts'

export interface OfferResponderInit {
  fleet: string
  /** Items this vehicle offers to hold in flight per job. @default 4 */
  maxInFlight?: number
}

export class OfferResponder {
  readonly leases = new LeaseBook()
  private readonly host: Host
  private readonly stages: StageServer
  private readonly init: OfferResponderInit
  private readonly log: Logger
  private readonly seen = new SeenJobs()
  private sweeper?: ReturnType<typeof setInterval>
  private readonly listener = (evt: CustomEvent<Message>): void => { void this.onMessage(evt.detail) }
  /** Called with model announcements heard on the jobs topic. */
  onModel?: (a: ModelAnnouncement, from: string) => void

  constructor (host: Host, stages: StageServer, init: OfferResponderInit) {
    this.host = host
    this.stages = stages
    this.init = init
    this.log = host.logger.forComponent('fleetmesh:offers')
  }

  start (): void {
    this.host.services.pubsub.subscribe(jobsTopic(this.init.fleet))
    this.host.services.pubsub.addEventListener('message', this.listener)
    this.sweeper = setInterval(() => { for (const e of this.leases.sweep()) this.log('lease %s for job %s expired', e.lease, e.job) }, 250)
    this.sweeper.unref()
  }

  stop (): void {
    this.host.services.pubsub.removeEventListener('message', this.listener)
    if (this.sweeper !== undefined) clearInterval(this.sweeper)
  }

  private async onMessage (msg: Message): Promise<void> {
    if (msg.topic !== jobsTopic(this.init.fleet) || msg.type !== 'signed') return
    let decoded: JobAnnouncement | ModelAnnouncement
    try { decoded = decodeJobsMessage(msg.data) } catch (err) {
      this.log('dropped announcement from %p: %e', msg.from, err)
      return
    }
    if ('kind' in decoded) { this.onModel?.(decoded, msg.from.toString()); return }
    const a = decoded
    // a replayed announcement is ignored once we have offered; until then
    // (nothing served yet) a re-announcement gets another look
    if (this.seen.has(a)) return
    await this.offer(a, msg.from.toString())
  }

  /** Offers what we serve of `a`'s model to its client, then keeps the lease it grants. */
  async offer (a: JobAnnouncement, client: string): Promise<void> {
    const served = this.stages.served().filter(s => s.manifest === a.manifest)
    if (!this.stages.accepting || served.length === 0) return
    this.seen.remember(a)
    try {
      const id = peerIdFromString(client)
      if (a.addrs.length > 0 && this.host.getConnections(id).length === 0) await this.host.peerStore.merge(id, { multiaddrs: a.addrs.map(x => multiaddr(x)) })
      const stream = await this.host.dialProtocol(id, OFFER_PROTOCOL, { signal: AbortSignal.timeout(5000) })
      const lp = lpStream(stream, { maxDataLength: MAX_OFFER_MESSAGE_BYTES })
      await lp.write(encodeOfferMessage({ type: 'offer', job: a.job, stages: served.map(s => ({ stage: s.stage, msPerItem: s.msPerItem, ...(s.batchMsPerItem !== undefined ? { batchMsPerItem: s.batchMsPerItem } : {}) })), maxInFlight: this.init.maxInFlight ?? 4 }))
      const answer = decodeOfferMessage((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())
      if (answer.type !== 'lease') { await stream.close(); return }
      this.leases.grant({ lease: answer.lease, job: a.job, client, stages: answer.stages, inFlight: answer.inFlight, expiresAt: Date.now() + answer.ttlMs })
      // renewals until release, expiry or a broken stream
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
