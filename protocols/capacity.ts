/**
 * Capacity heartbeats on `/fleetmesh/<fleet>/capacity/1` (gossipsub, signed).
 *
 * A node publishes one every few seconds while it runs and a final one with
 * `leaving: true` when it stops. The sender is the message's signed `from`,
 * never a field of the body. Unknown fields are ignored so newer peers stay
 * compatible.
 */
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'
import { decodeJsonObject, encodeJson } from './json.ts'
import { MAX_HEARTBEAT_BYTES } from './limits.ts'

export interface ServedStage {
  /** Manifest CID of the model. */
  manifest: string
  /** Stage index within that manifest. */
  stage: number
  /** Shard CID of that stage. */
  cid: string
  /** Moving average of run time per item, ms (0 until measured). */
  msPerItem: number
  /** Run time per item when run MICRO_BATCH at a time, ms (when measured). */
  batchMsPerItem?: number
}

/** Items per micro-batch that vehicles measure and clients send. */
export const MICRO_BATCH = 4

export interface Heartbeat {
  v: 1
  /** Sender's clock, epoch ms. */
  ts: number
  /** Monotonic per sender, so reordered messages can be dropped. */
  seq: number
  /** Whether the node takes new work now. */
  eligible: boolean
  /** Items running or queued right now. */
  load: number
  /** Items it can still take at once. */
  slots: number
  stages: ServedStage[]
  /** Model names the node knows, name -> manifest CID. */
  models: Record<string, string>
  /** Listening addresses, so hops can dial each other directly. */
  addrs: string[]
  /** Set on the last heartbeat before the node leaves. */
  leaving?: boolean
  /** When the sender's current capacity record expires (epoch ms). */
  expiresAt?: number
  /** Stages the sender chose and is loading (not served yet). */
  claims?: Array<{ manifest: string, stage: number }>
  /** The vehicle's state and why it is not eligible, for status displays. */
  vehicle?: VehicleSummary
}

export type NetworkKind = 'wifi' | 'cellular' | 'none'

/** What a car says about itself (see node/vehicle/). */
export interface VehicleState {
  parked: boolean
  pluggedIn: boolean
  /** State of charge, 0..100. */
  socPct: number
  /** Charger power while plugged in, kW (0 when unplugged). */
  chargerKw: number
  /** Temperature of the onboard computer, °C. */
  computeTempC: number
  /** Next planned departure, epoch ms on the source's clock; null when none is planned. */
  nextDepartureAt: number | null
  /** The owner allows donating compute. */
  ownerOptIn: boolean
  network: NetworkKind
}

/** A vehicle's state and its eligibility as carried in heartbeats. */
export interface VehicleSummary extends VehicleState {
  source: string
  reasons: string[]
  powerBudgetW: number
  /** Now on the vehicle's (possibly simulated) clock. */
  clock: number
}

export function encodeHeartbeat (hb: Heartbeat): Uint8Array {
  const bytes = encodeJson(hb)
  if (bytes.byteLength > MAX_HEARTBEAT_BYTES) throw new FrameTooLargeError('heartbeat', bytes.byteLength, MAX_HEARTBEAT_BYTES)
  return bytes
}

export function decodeHeartbeat (bytes: Uint8Array): Heartbeat {
  const v = decodeJsonObject(bytes, 'heartbeat', MAX_HEARTBEAT_BYTES)
  if (v.v !== 1) throw new MalformedFrameError('heartbeat.v', `unsupported version ${String(v.v)}`)
  for (const f of ['ts', 'seq', 'load', 'slots']) {
    if (typeof v[f] !== 'number' || !Number.isFinite(v[f]) || v[f] < 0) throw new MalformedFrameError(`heartbeat.${f}`, 'must be a non-negative number')
  }
  if (typeof v.eligible !== 'boolean') throw new MalformedFrameError('heartbeat.eligible', 'must be a boolean')
  if (!Array.isArray(v.stages) || v.stages.length > 256) throw new MalformedFrameError('heartbeat.stages', 'must be an array of at most 256')
  const stages: ServedStage[] = v.stages.map((s: any, i: number) => {
    if (typeof s?.manifest !== 'string' || typeof s?.cid !== 'string' || !Number.isInteger(s?.stage)) throw new MalformedFrameError(`heartbeat.stages[${i}]`, 'needs manifest, stage and cid')
    return { manifest: s.manifest, stage: s.stage, cid: s.cid, msPerItem: typeof s.msPerItem === 'number' && s.msPerItem >= 0 ? s.msPerItem : 0, ...(typeof s.batchMsPerItem === 'number' && s.batchMsPerItem >= 0 ? { batchMsPerItem: s.batchMsPerItem } : {}) }
  })
  const models: Record<string, string> = {}
  if (v.models !== null && typeof v.models === 'object') {
    for (const [k, m] of Object.entries(v.models)) if (typeof m === 'string') models[k] = m
  }
  const addrs = Array.isArray(v.addrs) ? v.addrs.filter((a: unknown) => typeof a === 'string').slice(0, 16) : []
  const out: Heartbeat = { v: 1, ts: v.ts, seq: v.seq, eligible: v.eligible, load: v.load, slots: v.slots, stages, models, addrs, leaving: v.leaving === true }
  if (typeof v.expiresAt === 'number') out.expiresAt = v.expiresAt
  if (Array.isArray(v.claims)) out.claims = v.claims.filter((c: any) => typeof c?.manifest === 'string' && Number.isInteger(c?.stage)).slice(0, 64)
  if (v.vehicle !== null && typeof v.vehicle === 'object') out.vehicle = v.vehicle as VehicleSummary
  return out
}

/**
 * Signed capacity record, stored in the DHT under `/fmcap/<peer id>`.
 * The body is a JSON string signed by the peer's key; it expires at most
 * MAX_RECORD_TTL_MS after it was issued and is refreshed before that.
 */
export const CAPACITY_RECORD_NAMESPACE = 'fmcap'
export const MAX_RECORD_TTL_MS = 60_000
const CLOCK_SKEW_MS = 5_000

export interface CapacityRecord {
  v: 1
  peer: string
  seq: number
  issuedAt: number
  expiresAt: number
  eligible: boolean
  stages: ServedStage[]
  slots: number
  /** Why not eligible (empty when eligible). */
  reasons: string[]
}

export function capacityRecordKey (peer: string): Uint8Array {
  return new TextEncoder().encode(`/${CAPACITY_RECORD_NAMESPACE}/${peer}`)
}

export interface RecordSigner { sign: (data: Uint8Array) => Uint8Array | Promise<Uint8Array> }
export interface RecordVerifier { verify: (data: Uint8Array, sig: Uint8Array) => boolean | Promise<boolean> }

export async function encodeCapacityRecord (r: CapacityRecord, key: RecordSigner): Promise<Uint8Array> {
  const body = JSON.stringify(r)
  const sig = await key.sign(new TextEncoder().encode(body))
  return encodeJson({ body, sig: Buffer.from(sig).toString('base64') })
}

/**
 * Decodes and checks a record: signature by `publicKeyOf(peer)`, peer matches
 * the key, lifetime at most MAX_RECORD_TTL_MS, not expired at `now`.
 */
export async function decodeCapacityRecord (value: Uint8Array, publicKeyOf: (peer: string) => RecordVerifier, opts: { key?: Uint8Array, now?: number } = {}): Promise<CapacityRecord> {
  const env = decodeJsonObject(value, 'capacity record', MAX_HEARTBEAT_BYTES)
  if (typeof env.body !== 'string' || typeof env.sig !== 'string') throw new MalformedFrameError('capacity record', 'needs body and sig')
  const r = decodeJsonObject(new TextEncoder().encode(env.body), 'capacity record.body', MAX_HEARTBEAT_BYTES)
  if (r.v !== 1 || typeof r.peer !== 'string') throw new MalformedFrameError('capacity record.body', 'needs v 1 and peer')
  for (const f of ['seq', 'issuedAt', 'expiresAt', 'slots']) {
    if (typeof r[f] !== 'number' || !Number.isFinite(r[f])) throw new MalformedFrameError(`capacity record.${f}`, 'must be a number')
  }
  if (opts.key !== undefined && new TextDecoder().decode(opts.key) !== `/${CAPACITY_RECORD_NAMESPACE}/${r.peer}`) {
    throw new MalformedFrameError('capacity record.peer', 'does not match the record key')
  }
  const ok = await publicKeyOf(r.peer).verify(new TextEncoder().encode(env.body), Buffer.from(env.sig, 'base64'))
  if (!ok) throw new MalformedFrameError('capacity record.sig', 'signature does not verify')
  if (r.expiresAt - r.issuedAt > MAX_RECORD_TTL_MS) throw new MalformedFrameError('capacity record.expiresAt', `lifetime over ${MAX_RECORD_TTL_MS} ms`)
  if (r.expiresAt + CLOCK_SKEW_MS < (opts.now ?? Date.now())) throw new MalformedFrameError('capacity record.expiresAt', 'expired')
  return {
    v: 1,
    peer: r.peer,
    seq: r.seq,
    issuedAt: r.issuedAt,
    expiresAt: r.expiresAt,
    eligible: r.eligible === true,
    stages: Array.isArray(r.stages) ? r.stages : [],
    slots: r.slots,
    reasons: Array.isArray(r.reasons) ? r.reasons.filter((x: unknown) => typeof x === 'string') : []
  }
}
