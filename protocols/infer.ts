/**
 * `/fleetmesh/infer/1.0.0`: one stream per job per hop.
 *
 * The caller writes one REQUEST frame (length-prefixed, see tensor-codec.ts):
 * the stage to run, the rest of the route and the stage's input tensors. The
 * hop runs its shard, sends REQUEST for the next stage to the next hop, and
 * answers its caller with the RESULT (or ERROR) that comes back, so results
 * travel back along the chain. An ERROR names the stage and peer that failed;
 * when the failure is downstream of a hop, that hop attaches the tensors it
 * tried to forward so the caller can replay that stage on another peer.
 */
import { MalformedFrameError } from './errors.ts'
import { MAX_ROUTE_HOPS } from './limits.ts'
import type { Frame, Tensor } from './tensor-codec.ts'

export const FrameKind = { REQUEST: 1, RESULT: 2, ERROR: 3 } as const

export interface Hop { peer: string, addrs: string[] }

export interface InferRequestHeader {
  job: string
  /** Manifest CID of the model. */
  manifest: string
  /** Stage this hop must run. */
  stage: number
  /** Hops for stage+1, stage+2, ... */
  route: Hop[]
  /** Epoch ms after which the work is useless. */
  deadline: number
  /** Batch work: the lease each peer granted for it (peer id -> lease id). */
  leases?: Record<string, string>
}

export interface HopTiming { peer: string, stage: number, ms: number }

export interface InferResultHeader { job: string, hops: HopTiming[] }

/** Error codes a hop may answer with. */
export const InferErrorCode = {
  /** The request or its tensors do not fit the stage (not retryable). */
  BAD_INPUT: 'BAD_INPUT',
  /** This peer does not serve that stage (any more). */
  NOT_SERVING: 'NOT_SERVING',
  /** The runtime failed on valid input. */
  RUN_FAILED: 'RUN_FAILED',
  /** The next hop could not be reached or dropped the stream. */
  HOP_UNREACHABLE: 'HOP_UNREACHABLE',
  /** The deadline passed. */
  TIMEOUT: 'TIMEOUT',
  /** The peer is leaving the mesh. */
  DEPARTING: 'DEPARTING',
  /** Too much work queued. */
  BUSY: 'BUSY',
  /** The request names a lease this peer no longer holds. */
  LEASE_EXPIRED: 'LEASE_EXPIRED'
} as const
export type InferErrorCode = typeof InferErrorCode[keyof typeof InferErrorCode]

export interface InferErrorHeader {
  job: string
  code: InferErrorCode
  message: string
  /** The stage that failed. */
  stage: number
  /** The peer that failed to run it. */
  peer: string
  hops: HopTiming[]
}

export function isRetryable (code: string): boolean {
  return code !== InferErrorCode.BAD_INPUT
}

function str (h: Record<string, unknown>, field: string, max = 256): string {
  const v = h[field]
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new MalformedFrameError(`header.${field}`, `must be a string of 1..${max} chars`)
  return v
}
function int (h: Record<string, unknown>, field: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = h[field]
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new MalformedFrameError(`header.${field}`, `must be an integer in ${min}..${max}`)
  return v
}
function obj (h: unknown): Record<string, unknown> {
  if (h === null || typeof h !== 'object' || Array.isArray(h)) throw new MalformedFrameError('header', 'must be an object')
  return h as Record<string, unknown>
}
function hops (v: unknown): HopTiming[] {
  if (!Array.isArray(v)) return []
  return v.filter((x): x is HopTiming => typeof x?.peer === 'string' && Number.isInteger(x?.stage) && typeof x?.ms === 'number').slice(0, MAX_ROUTE_HOPS)
}

/** Validates a REQUEST header; unknown fields are ignored. */
export function parseRequestHeader (raw: unknown): InferRequestHeader {
  const h = obj(raw)
  const route = h.route
  if (!Array.isArray(route) || route.length > MAX_ROUTE_HOPS) throw new MalformedFrameError('header.route', `must be an array of at most ${MAX_ROUTE_HOPS} hops`)
  const parsed: Hop[] = route.map((r, i) => {
    const o = obj(r)
    const peer = o.peer
    if (typeof peer !== 'string' || peer.length === 0 || peer.length > 128) throw new MalformedFrameError(`header.route[${i}].peer`, 'must be a peer id string')
    const addrs = o.addrs
    if (!Array.isArray(addrs) || addrs.length > 16 || addrs.some(a => typeof a !== 'string' || a.length > 512)) throw new MalformedFrameError(`header.route[${i}].addrs`, 'must be at most 16 multiaddr strings')
    return { peer, addrs: addrs as string[] }
  })
  let leases: Record<string, string> | undefined
  if (h.leases !== undefined) {
    const l = obj(h.leases)
    const entries = Object.entries(l)
    if (entries.length > MAX_ROUTE_HOPS || entries.some(([k, v]) => typeof v !== 'string' || k.length > 128 || v.length > 128)) throw new MalformedFrameError('header.leases', 'must map peer ids to lease ids')
    leases = l as Record<string, string>
  }
  return {
    job: str(h, 'job', 128),
    manifest: str(h, 'manifest', 128),
    stage: int(h, 'stage', 0, 1024),
    route: parsed,
    deadline: int(h, 'deadline'),
    ...(leases !== undefined ? { leases } : {})
  }
}

export function parseResultHeader (raw: unknown): InferResultHeader {
  const h = obj(raw)
  return { job: str(h, 'job', 128), hops: hops(h.hops) }
}

export function parseErrorHeader (raw: unknown): InferErrorHeader {
  const h = obj(raw)
  return {
    job: typeof h.job === 'string' ? h.job : '',
    code: str(h, 'code', 64) as InferErrorCode,
    message: typeof h.message === 'string' ? h.message.slice(0, 4096) : '',
    stage: int(h, 'stage', 0, 1024),
    peer: typeof h.peer === 'string' ? h.peer : '',
    hops: hops(h.hops)
  }
}

export function requestFrame (header: InferRequestHeader, tensors: Tensor[]): Frame<InferRequestHeader> {
  return { kind: FrameKind.REQUEST, header, tensors }
}
export function resultFrame (header: InferResultHeader, tensors: Tensor[]): Frame<InferResultHeader> {
  return { kind: FrameKind.RESULT, header, tensors }
}
export function errorFrame (header: InferErrorHeader, tensors: Tensor[] = []): Frame<InferErrorHeader> {
  return { kind: FrameKind.ERROR, header, tensors }
}
