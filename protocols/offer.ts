/**
 * `/fleetmesh/offer/1.0.0`: offers and leases for batch work.
 *
 * A vehicle that heard a job announcement opens a stream to the client and
 * writes an OFFER (the stages it will run, how many items it will hold in
 * flight, how fast). The client answers LEASE (or DECLINE); the lease lasts
 * `ttlMs` and the client renews it with RENEW frames on the same stream, each
 * answered by an ACK with the new expiry. A lease that is not renewed in time
 * expires; a stream that breaks loses the lease on both sides.
 * Every message is length-prefixed JSON of at most MAX_OFFER_MESSAGE_BYTES.
 */
import { MalformedFrameError } from './errors.ts'
import { decodeJsonObject, encodeJson } from './json.ts'
import { KiB } from './limits.ts'

export const MAX_OFFER_MESSAGE_BYTES = 16 * KiB
export const DEFAULT_LEASE_TTL_MS = 5000

export interface OfferStage { stage: number, msPerItem: number, batchMsPerItem?: number }
export interface Offer { type: 'offer', job: string, stages: OfferStage[], maxInFlight: number }
export interface Lease { type: 'lease', job: string, lease: string, stages: number[], inFlight: number, ttlMs: number }
export interface Decline { type: 'decline', job: string, reason: string }
export interface Renew { type: 'renew', lease: string, ttlMs: number }
export interface Ack { type: 'ack', lease: string, expiresAt: number }
export interface Release { type: 'release', lease: string }
export type OfferMessage = Offer | Lease | Decline | Renew | Ack | Release

export function encodeOfferMessage (m: OfferMessage): Uint8Array { return encodeJson(m) }

export function decodeOfferMessage (bytes: Uint8Array): OfferMessage {
  const v = decodeJsonObject(bytes, 'offer message', MAX_OFFER_MESSAGE_BYTES)
  const str = (f: string): string => {
    if (typeof v[f] !== 'string' || v[f].length === 0 || v[f].length > 128) throw new MalformedFrameError(`offer message.${f}`, 'must be a string of 1..128 chars')
    return v[f]
  }
  const int = (f: string, min: number, max: number): number => {
    if (!Number.isInteger(v[f]) || v[f] < min || v[f] > max) throw new MalformedFrameError(`offer message.${f}`, `must be an integer in ${min}..${max}`)
    return v[f]
  }
  switch (v.type) {
    case 'offer': {
      if (!Array.isArray(v.stages) || v.stages.length === 0 || v.stages.length > 256) throw new MalformedFrameError('offer message.stages', 'must be a non-empty array')
      const stages = v.stages.map((s: any, i: number) => {
        if (!Number.isInteger(s?.stage) || s.stage < 0 || typeof s?.msPerItem !== 'number' || s.msPerItem < 0) throw new MalformedFrameError(`offer message.stages[${i}]`, 'needs stage and msPerItem')
        return { stage: s.stage, msPerItem: s.msPerItem, ...(typeof s.batchMsPerItem === 'number' && s.batchMsPerItem >= 0 ? { batchMsPerItem: s.batchMsPerItem } : {}) }
      })
      return { type: 'offer', job: str('job'), stages, maxInFlight: int('maxInFlight', 1, 1024) }
    }
    case 'lease':
      if (!Array.isArray(v.stages) || v.stages.some((s: unknown) => !Number.isInteger(s))) throw new MalformedFrameError('offer message.stages', 'must be stage indexes')
      return { type: 'lease', job: str('job'), lease: str('lease'), stages: v.stages, inFlight: int('inFlight', 1, 1024), ttlMs: int('ttlMs', 100, 600_000) }
    case 'decline': return { type: 'decline', job: str('job'), reason: typeof v.reason === 'string' ? v.reason.slice(0, 512) : '' }
    case 'renew': return { type: 'renew', lease: str('lease'), ttlMs: int('ttlMs', 100, 600_000) }
    case 'ack': return { type: 'ack', lease: str('lease'), expiresAt: int('expiresAt', 0, Number.MAX_SAFE_INTEGER) }
    case 'release': return { type: 'release', lease: str('lease') }
    default: throw new MalformedFrameError('offer message.type', `unknown type ${String(v.type)}`)
  }
}
