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
}

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
    return { manifest: s.manifest, stage: s.stage, cid: s.cid, msPerItem: typeof s.msPerItem === 'number' && s.msPerItem >= 0 ? s.msPerItem : 0 }
  })
  const models: Record<string, string> = {}
  if (v.models !== null && typeof v.models === 'object') {
    for (const [k, m] of Object.entries(v.models)) if (typeof m === 'string') models[k] = m
  }
  const addrs = Array.isArray(v.addrs) ? v.addrs.filter((a: unknown) => typeof a === 'string').slice(0, 16) : []
  return { v: 1, ts: v.ts, seq: v.seq, eligible: v.eligible, load: v.load, slots: v.slots, stages, models, addrs, leaving: v.leaving === true }
}
