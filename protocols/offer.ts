/**
 * `/fleetmesh/offer/2.0.0` (schema: protocols/offer.proto): offers and leases
 * for batch work. A vehicle that heard a job announcement opens a stream to
 * the client and writes an OFFER (the stages it will run, how many items it
 * will hold in flight, how fast). The client answers LEASE (or DECLINE); the
 * lease lasts `ttlMs` and the client renews it with RENEW messages on the
 * same stream, each answered by an ACK with the new expiry. A lease that is
 * not renewed in time expires; a stream that breaks loses the lease on both
 * sides. Messages are length-prefixed; one of a kind this version does not
 * know decodes as `unknown` and is skipped by both sides.
 */
import { decodeMessage, encodeMessage, list, measure, num, text, time } from './codec.ts'
import type { MessageInitShape } from '@bufbuild/protobuf'
import { MalformedFrameError } from './errors.ts'
import { OfferMessageSchema } from './gen/offer_pb.ts'
import { MAX_OFFER_MESSAGE_BYTES } from './limits.ts'

export const DEFAULT_LEASE_TTL_MS = 5000

export interface OfferStage { stage: number, msPerItem: number, batchMsPerItem?: number }
export interface Offer { type: 'offer', job: string, stages: OfferStage[], maxInFlight: number }
export interface Lease { type: 'lease', job: string, lease: string, stages: number[], inFlight: number, ttlMs: number }
export interface Decline { type: 'decline', job: string, reason: string }
export interface Renew { type: 'renew', lease: string, ttlMs: number }
export interface Ack { type: 'ack', lease: string, expiresAt: number }
export interface Release { type: 'release', lease: string }
export type OfferMessage = Offer | Lease | Decline | Renew | Ack | Release | { type: 'unknown' }

const ID = 128

export function encodeOfferMessage (m: Exclude<OfferMessage, { type: 'unknown' }>): Uint8Array {
  return encodeMessage(OfferMessageSchema, { kind: wireKind(m) })
}

function wireKind (m: Exclude<OfferMessage, { type: 'unknown' }>): MessageInitShape<typeof OfferMessageSchema>['kind'] {
  switch (m.type) {
    case 'offer': return { case: 'offer', value: { job: m.job, stages: m.stages.map(s => ({ ...s, batchMsPerItem: s.batchMsPerItem ?? 0 })), maxInFlight: m.maxInFlight } }
    case 'lease': return { case: 'lease', value: { job: m.job, lease: m.lease, stages: m.stages, inFlight: m.inFlight, ttlMs: m.ttlMs } }
    case 'decline': return { case: 'decline', value: { job: m.job, reason: m.reason } }
    case 'renew': return { case: 'renew', value: { lease: m.lease, ttlMs: m.ttlMs } }
    case 'ack': return { case: 'ack', value: { lease: m.lease, expiresAtMs: m.expiresAt } }
    case 'release': return { case: 'release', value: { lease: m.lease } }
  }
}

/** Decodes and checks one message; errors name the field. */
export function decodeOfferMessage (bytes: Uint8Array): OfferMessage {
  const m = decodeMessage(OfferMessageSchema, bytes, 'offer message', MAX_OFFER_MESSAGE_BYTES)
  const k = m.kind
  switch (k.case) {
    case 'offer': {
      const stages = list(k.value.stages, 'offer message.stages', 256).map((s, i) => ({
        stage: num(s.stage, `offer message.stages[${i}].stage`, 0, 1024),
        msPerItem: measure(s.msPerItem),
        ...(measure(s.batchMsPerItem) > 0 ? { batchMsPerItem: s.batchMsPerItem } : {})
      }))
      if (stages.length === 0) throw new MalformedFrameError('offer message.stages', 'must not be empty')
      return { type: 'offer', job: text(k.value.job, 'offer message.job', ID), stages, maxInFlight: num(k.value.maxInFlight, 'offer message.maxInFlight', 1, 1024) }
    }
    case 'lease':
      return {
        type: 'lease',
        job: text(k.value.job, 'offer message.job', ID),
        lease: text(k.value.lease, 'offer message.lease', ID),
        stages: list(k.value.stages, 'offer message.stages', 256),
        inFlight: num(k.value.inFlight, 'offer message.inFlight', 1, 1024),
        ttlMs: num(k.value.ttlMs, 'offer message.ttlMs', 100, 600_000)
      }
    case 'decline': return { type: 'decline', job: text(k.value.job, 'offer message.job', ID), reason: k.value.reason.slice(0, 512) }
    case 'renew': return { type: 'renew', lease: text(k.value.lease, 'offer message.lease', ID), ttlMs: num(k.value.ttlMs, 'offer message.ttlMs', 100, 600_000) }
    case 'ack': return { type: 'ack', lease: text(k.value.lease, 'offer message.lease', ID), expiresAt: time(k.value.expiresAtMs, 'offer message.expiresAt') }
    case 'release': return { type: 'release', lease: text(k.value.lease, 'offer message.lease', ID) }
    default: return { type: 'unknown' }
  }
}
