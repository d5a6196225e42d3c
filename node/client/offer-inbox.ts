/**
 * The client's side of `/fleetmesh/offer/2.0.0`: vehicles that heard a job
 * announcement open a stream and offer. The inbox reads the first message
 * and hands an offer to the batch running that job, or declines when no such
 * job runs here. The protocol is handled only while some batch listens.
 */
import { lpStream } from '@libp2p/utils'
import type { LengthPrefixedStream } from '@libp2p/utils'
import type { ComponentLogger, Libp2p, Logger, Stream } from '@libp2p/interface'
import { OFFER_PROTOCOL } from '../../protocols/ids.ts'
import { MAX_OFFER_MESSAGE_BYTES, OFFER_READ_TIMEOUT_MS } from '../../protocols/limits.ts'
import { decodeOfferMessage, encodeOfferMessage } from '../../protocols/offer.ts'
import type { Offer } from '../../protocols/offer.ts'

/** An offer and the stream it came on (the lease is negotiated on it). */
export interface IncomingOffer { stream: Stream, from: string, offer: Offer, lp: LengthPrefixedStream<Stream> }
export type OfferHandler = (o: IncomingOffer) => Promise<void>

export interface OfferInboxComponents {
  logger: ComponentLogger
  registrar: Pick<Libp2p, 'handle' | 'unhandle'>
}

export class OfferInbox {
  private readonly c: OfferInboxComponents
  private readonly log: Logger
  private readonly handlers = new Map<string, OfferHandler>()
  private handling = false

  constructor (components: OfferInboxComponents) {
    this.c = components
    this.log = components.logger.forComponent('fleetmesh:offer-inbox')
  }

  /** Routes offers for `job` to `handler` until the returned function is called. */
  async listen (job: string, handler: OfferHandler): Promise<() => Promise<void>> {
    if (!this.handling) {
      this.handling = true
      await this.c.registrar.handle(OFFER_PROTOCOL, (stream, connection) => { void this.accept(stream, connection.remotePeer.toString()) }, { maxInboundStreams: 256, runOnLimitedConnection: true })
    }
    this.handlers.set(job, handler)
    return async () => {
      this.handlers.delete(job)
      if (this.handlers.size === 0 && this.handling) {
        this.handling = false
        await this.c.registrar.unhandle(OFFER_PROTOCOL).catch(() => {})
      }
    }
  }

  private async accept (stream: Stream, from: string): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: MAX_OFFER_MESSAGE_BYTES })
    try {
      const m = decodeOfferMessage((await lp.read({ signal: AbortSignal.timeout(OFFER_READ_TIMEOUT_MS) })).subarray())
      if (m.type !== 'offer') throw new Error(`expected an offer, got ${m.type}`)
      const h = this.handlers.get(m.job)
      if (h === undefined) {
        await lp.write(encodeOfferMessage({ type: 'decline', job: m.job, reason: 'no such job here (finished?)' }))
        await stream.close()
        return
      }
      await h({ stream, from, offer: m, lp })
    } catch (err) {
      this.log('offer from %s dropped: %e', from, err)
      stream.abort(err as Error)
    }
  }

  async stop (): Promise<void> {
    this.handlers.clear()
    if (this.handling) await this.c.registrar.unhandle(OFFER_PROTOCOL).catch(() => {})
    this.handling = false
  }
}
