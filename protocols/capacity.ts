/**
 * Capacity (schema: protocols/capacity.proto): heartbeats on
 * `/fleetmesh/<fleet>/capacity/2` (gossipsub, signed; the sender is the
 * message's signed `from`, never a field of the body), and signed capacity
 * records in the DHT under `/fmcap/<peer id>`, sealed in a RecordEnvelope and
 * valid for at most a minute.
 */
import type { PrivateKey } from '@libp2p/interface'
import { chainIn, decodeMessage, encodeMessage, list, measure, num, text, time } from './codec.ts'
import { openRecord, sealRecord } from './envelope.ts'
import { MalformedFrameError } from './errors.ts'
import type { MessageInitShape } from '@bufbuild/protobuf'
import { CapacityRecordSchema, HeartbeatSchema } from './gen/capacity_pb.ts'
import type { ServedStage as WireStage } from './gen/capacity_pb.ts'
import { NetworkKind as WireNetwork } from './gen/vehicle_pb.ts'
import type { VehicleSummary as WireVehicle, VehicleSummarySchema } from './gen/vehicle_pb.ts'
import { CAPACITY_RECORD, CAPACITY_RECORD_NAMESPACE } from './ids.ts'
import { CLOCK_SKEW_MS, MAX_CAPACITY_RECORD_BYTES, MAX_CAPACITY_RECORD_TTL_MS, MAX_HEARTBEAT_BYTES, MAX_PEER_ID_CHARS } from './limits.ts'

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
  /** The grid's price per kWh now, when the car's charger knows it (evcc). */
  tariffPerKwh?: number
  /** Power the site exports to the grid now, W (evcc: solar surplus). */
  surplusW?: number
}

/** A vehicle's state and its eligibility as carried in heartbeats. */
export interface VehicleSummary extends VehicleState {
  source: string
  reasons: string[]
  powerBudgetW: number
  /** Now on the vehicle's (possibly simulated) clock. */
  clock: number
}

export interface Heartbeat {
  /** Sender's clock, epoch ms. */
  ts: number
  /** Monotonic per sender process, so reordered messages can be dropped. */
  seq: number
  /** Whether the node takes new work now. */
  eligible: boolean
  /** Items running or queued right now. */
  load: number
  /** Items it can still take at once. */
  slots: number
  stages: ServedStage[]
  /** Deprecated (old senders only): model names the sender knew. Never used to resolve a name. */
  models?: Record<string, string>
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
  /** The sender's member certificate chain (absent in an open fleet). */
  membership?: Uint8Array[]
  /** What the sender measured of its links to other vehicles (at most MAX_LINKS). */
  links?: LinkFigure[]
  /**
   * A short keep-alive: only ts, seq, eligible, load, slots and expiresAt
   * are set; the rest is as in the sender's full heartbeat with this seq
   * (FleetDirectory merges them), its certificate chain included: a peer
   * that verified it then accepts the keep-alive (node/membership/topics.ts).
   */
  refreshes?: number
}

/**
 * The short keep-alive of a full heartbeat `hb` as of now (`seq` its own):
 * what changes without an event, naming `hb` by its seq (no chain); the
 * decoder refuses a keep-alive carrying anything more.
 */
export function keepAliveOf (hb: Heartbeat, seq: number): Heartbeat {
  return {
    ts: hb.ts,
    seq,
    eligible: hb.eligible,
    load: hb.load,
    slots: hb.slots,
    stages: [],
    addrs: [],
    refreshes: hb.seq,
    ...(hb.expiresAt !== undefined ? { expiresAt: hb.expiresAt } : {})
  }
}

/** One measured link from a heartbeat's sender to `peer`. */
export interface LinkFigure {
  peer: string
  /** Round trip, ms (moving average of pings). */
  rttMs: number
  /** Bytes per ms of real transfers (moving average); 0 until measured. */
  bytesPerMs: number
  /** The connection goes through a relay. */
  relayed: boolean
}

/** Links a heartbeat carries at most. */
export const MAX_LINKS = 16

const NETWORKS: Record<NetworkKind, WireNetwork> = { wifi: WireNetwork.WIFI, cellular: WireNetwork.CELLULAR, none: WireNetwork.NONE }
const MAX_STAGES = 256
const MAX_CID_CHARS = 128
const MAX_ADDRS = 16
const MAX_REASONS = 16

function stagesOut (stages: ServedStage[]): Array<Omit<WireStage, '$typeName'>> {
  return stages.map(s => ({ manifest: s.manifest, stage: s.stage, cid: s.cid, msPerItem: s.msPerItem, batchMsPerItem: s.batchMsPerItem ?? 0 }))
}

function stagesIn (stages: WireStage[], field: string): ServedStage[] {
  return list(stages, field, MAX_STAGES).map((s, i) => ({
    manifest: text(s.manifest, `${field}[${i}].manifest`, MAX_CID_CHARS),
    stage: num(s.stage, `${field}[${i}].stage`, 0, 1024),
    cid: text(s.cid, `${field}[${i}].cid`, MAX_CID_CHARS),
    msPerItem: measure(s.msPerItem),
    ...(measure(s.batchMsPerItem) > 0 ? { batchMsPerItem: s.batchMsPerItem } : {})
  }))
}

function reasonsIn (reasons: string[], field: string): string[] {
  return list(reasons, field, MAX_REASONS).map(r => r.slice(0, 256))
}

function vehicleIn (v: WireVehicle): VehicleSummary {
  const network = (Object.keys(NETWORKS) as NetworkKind[]).find(k => NETWORKS[k] === v.network) ?? 'none'
  return {
    source: v.source.slice(0, 256),
    parked: v.parked,
    pluggedIn: v.pluggedIn,
    socPct: v.socPct,
    chargerKw: v.chargerKw,
    computeTempC: v.computeTempC,
    nextDepartureAt: v.nextDepartureAtMs ?? null,
    ownerOptIn: v.ownerOptIn,
    network,
    reasons: reasonsIn(v.reasons, 'heartbeat.vehicle.reasons'),
    powerBudgetW: v.powerBudgetW,
    clock: v.clockMs,
    ...(v.tariffPerKwh !== undefined ? { tariffPerKwh: v.tariffPerKwh } : {}),
    ...(v.surplusW !== undefined ? { surplusW: v.surplusW } : {})
  }
}

function vehicleOut (v: VehicleSummary): MessageInitShape<typeof VehicleSummarySchema> {
  return {
    source: v.source,
    parked: v.parked,
    pluggedIn: v.pluggedIn,
    socPct: v.socPct,
    chargerKw: v.chargerKw,
    computeTempC: v.computeTempC,
    ...(v.nextDepartureAt !== null ? { nextDepartureAtMs: v.nextDepartureAt } : {}),
    ownerOptIn: v.ownerOptIn,
    network: NETWORKS[v.network],
    reasons: v.reasons,
    powerBudgetW: v.powerBudgetW,
    clockMs: v.clock,
    ...(v.tariffPerKwh !== undefined ? { tariffPerKwh: v.tariffPerKwh } : {}),
    ...(v.surplusW !== undefined ? { surplusW: v.surplusW } : {})
  }
}

export function encodeHeartbeat (hb: Heartbeat): Uint8Array {
  const v = hb.vehicle
  return encodeMessage(HeartbeatSchema, {
    tsMs: hb.ts,
    seq: hb.seq,
    eligible: hb.eligible,
    load: hb.load,
    slots: hb.slots,
    stages: stagesOut(hb.stages),
    models: Object.entries(hb.models ?? {}).map(([name, manifest]) => ({ name, manifest })),
    addrs: hb.addrs,
    leaving: hb.leaving === true,
    recordExpiresAtMs: hb.expiresAt ?? 0,
    claims: hb.claims ?? [],
    membership: hb.membership ?? [],
    links: (hb.links ?? []).slice(0, MAX_LINKS),
    refreshes: hb.refreshes ?? 0,
    ...(v !== undefined ? { vehicle: vehicleOut(v) } : {})
  })
}

/** Decodes and checks a heartbeat; errors name the field. */
export function decodeHeartbeat (bytes: Uint8Array): Heartbeat {
  const h = decodeMessage(HeartbeatSchema, bytes, 'heartbeat', MAX_HEARTBEAT_BYTES)
  const models: Record<string, string> = {}
  for (const m of list(h.models, 'heartbeat.models', 256)) models[text(m.name, 'heartbeat.models.name', 130)] = text(m.manifest, 'heartbeat.models.manifest', MAX_CID_CHARS)
  const out: Heartbeat = {
    ts: time(h.tsMs, 'heartbeat.ts'),
    seq: h.seq,
    eligible: h.eligible,
    load: h.load,
    slots: h.slots,
    stages: stagesIn(h.stages, 'heartbeat.stages'),
    ...(Object.keys(models).length > 0 ? { models } : {}),
    addrs: list(h.addrs, 'heartbeat.addrs', MAX_ADDRS).map((a, i) => text(a, `heartbeat.addrs[${i}]`, 512)),
    leaving: h.leaving
  }
  if (h.recordExpiresAtMs > 0) out.expiresAt = time(h.recordExpiresAtMs, 'heartbeat.expiresAt')
  if (h.claims.length > 0) out.claims = list(h.claims, 'heartbeat.claims', 64).map((c, i) => ({ manifest: text(c.manifest, `heartbeat.claims[${i}].manifest`, MAX_CID_CHARS), stage: num(c.stage, `heartbeat.claims[${i}].stage`, 0, 1024) }))
  if (h.vehicle !== undefined) out.vehicle = vehicleIn(h.vehicle)
  const membership = chainIn(h.membership, 'heartbeat.membership')
  if (membership !== undefined) out.membership = membership
  if (h.links.length > 0) {
    out.links = list(h.links, 'heartbeat.links', MAX_LINKS).map((l, i) => ({
      peer: text(l.peer, `heartbeat.links[${i}].peer`, MAX_PEER_ID_CHARS),
      rttMs: Math.min(measure(l.rttMs), 600_000),
      bytesPerMs: Math.min(measure(l.bytesPerMs), 1e9),
      relayed: l.relayed
    }))
  }
  if (h.refreshes > 0) {
    if (h.refreshes >= h.seq) throw new MalformedFrameError('heartbeat.refreshes', `must name an earlier heartbeat than seq ${h.seq}, got ${h.refreshes}`)
    if (out.stages.length > 0 || out.addrs.length > 0 || out.claims !== undefined || out.vehicle !== undefined || out.links !== undefined) throw new MalformedFrameError('heartbeat.refreshes', 'a keep-alive carries no stages, addrs, claims, vehicle or links')
    out.refreshes = h.refreshes
  }
  return out
}

/** A signed statement of what a peer offers, valid until `expiresAt`. */
export interface CapacityRecord {
  peer: string
  seq: number
  issuedAt: number
  expiresAt: number
  eligible: boolean
  stages: ServedStage[]
  slots: number
  /** Why not eligible (empty when eligible). */
  reasons: string[]
  /** The peer's member certificate chain (absent in an open fleet). */
  membership?: Uint8Array[]
}

export function capacityRecordKey (peer: string): Uint8Array {
  return new TextEncoder().encode(`/${CAPACITY_RECORD_NAMESPACE}/${peer}`)
}

/** The record sealed in an envelope signed by `key` (which must be the record's peer). */
export async function sealCapacityRecord (r: CapacityRecord, key: PrivateKey): Promise<Uint8Array> {
  const payload = encodeMessage(CapacityRecordSchema, { peer: r.peer, seq: r.seq, issuedAtMs: r.issuedAt, expiresAtMs: r.expiresAt, eligible: r.eligible, stages: stagesOut(r.stages), slots: r.slots, reasons: r.reasons, membership: r.membership ?? [] })
  return await sealRecord(CAPACITY_RECORD, payload, key)
}

/**
 * Opens and checks a record: the envelope's signature, its signer is the
 * record's peer (and the DHT key's, when given), a lifetime of at most
 * MAX_CAPACITY_RECORD_TTL_MS and not expired at `now`.
 */
export async function openCapacityRecord (value: Uint8Array, opts: { key?: Uint8Array, now?: number } = {}): Promise<CapacityRecord> {
  const { signer, payload } = await openRecord(CAPACITY_RECORD, value, 'capacity record', MAX_CAPACITY_RECORD_BYTES)
  const r = decodeMessage(CapacityRecordSchema, payload, 'capacity record', MAX_CAPACITY_RECORD_BYTES)
  const peer = text(r.peer, 'capacity record.peer', MAX_PEER_ID_CHARS)
  if (peer !== signer) throw new MalformedFrameError('capacity record.peer', 'is not the signer')
  if (opts.key !== undefined && new TextDecoder().decode(opts.key) !== `/${CAPACITY_RECORD_NAMESPACE}/${peer}`) {
    throw new MalformedFrameError('capacity record.peer', 'does not match the record key')
  }
  const issuedAt = time(r.issuedAtMs, 'capacity record.issuedAt')
  const expiresAt = time(r.expiresAtMs, 'capacity record.expiresAt')
  if (expiresAt - issuedAt > MAX_CAPACITY_RECORD_TTL_MS) throw new MalformedFrameError('capacity record.expiresAt', `lifetime over ${MAX_CAPACITY_RECORD_TTL_MS} ms`)
  if (expiresAt + CLOCK_SKEW_MS < (opts.now ?? Date.now())) throw new MalformedFrameError('capacity record.expiresAt', 'expired')
  const membership = chainIn(r.membership, 'capacity record.membership')
  return { peer, seq: r.seq, issuedAt, expiresAt, eligible: r.eligible, stages: stagesIn(r.stages, 'capacity record.stages'), slots: r.slots, reasons: reasonsIn(r.reasons, 'capacity record.reasons'), ...(membership !== undefined ? { membership } : {}) }
}

/** Of several values for one record key, the index of the newest valid one (by seq). */
export async function selectCapacityRecord (values: Uint8Array[]): Promise<number> {
  let best = 0; let bestSeq = -1
  for (const [i, v] of values.entries()) {
    try {
      const r = await openCapacityRecord(v, { now: 0 })
      if (r.seq > bestSeq) { bestSeq = r.seq; best = i }
    } catch {}
  }
  return best
}
