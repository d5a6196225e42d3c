/**
 * `/fleetmesh/infer/2.0.0` (schema: protocols/infer.proto): one stream per job
 * per hop. The caller writes one REQUEST frame: the stage to run, the rest of
 * the route and the stage's input tensors. The hop runs its shard, calls the
 * next hop with the hand-off tensors and answers its caller with the RESULT
 * or ERROR that comes back. An ERROR names the stage and peer that failed;
 * when the failure is downstream of a hop, that hop attaches the tensors it
 * tried to forward so the caller can replay that stage on another peer.
 *
 * A frame is a protobuf header followed by the tensors' raw bytes (see
 * framing.ts), so hops relay results without re-encoding them.
 */
import type { MessageInitShape } from '@bufbuild/protobuf'
import { decodeMessage, encodeMessage, list, num, text, time } from './codec.ts'
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'
import { InferErrorCode as WireCode } from './gen/infer_error_pb.ts'
import { InferHeaderSchema } from './gen/infer_pb.ts'
import { OutputMode_Kind as WireOutput } from './gen/output_pb.ts'
import type { InferHeader } from './gen/infer_pb.ts'
import { MAX_HEADER_BYTES, MAX_PEER_ID_CHARS, MAX_RECEIPT_BYTES, MAX_ROUTE_HOPS } from './limits.ts'
import type { TensorDescriptor } from './tensor.ts'

export interface Hop { peer: string, addrs: string[] }

export interface InferRequest {
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
  /** Stages whose outputs the answer must carry back as taps. */
  taps?: number[]
  /** The client's peer id, when it takes the result straight from the last hop (see infer.proto). */
  returnTo?: string
  /** What the last hop returns in place of the raw outputs (node/runtime/output-modes.ts). @default raw */
  output?: OutputMode
  /** Send receipts ahead of the answer as they are signed (`receipts` frames; see infer.proto). */
  earlyReceipts?: boolean
}

/** Receipts of consecutive stage runs, sent ahead of the answer (InferRequest.earlyReceipts). */
export interface InferReceipts {
  job: string
  receipts: Uint8Array[]
}

/**
 * A result reduced at the last hop (opt-in): `ctc-text` decodes a CTC model's
 * probabilities to text, `top-k` keeps the k largest entries of each row.
 */
export type OutputMode = { kind: 'ctc-text' } | { kind: 'top-k', k: number }

/** Largest k a top-k output mode may ask for. */
export const MAX_TOP_K = 1024

/** What one hop ran: the peer, the stage and how long it took (from its receipt). */
export interface HopTiming { peer: string, stage: number, ms: number }

export interface InferResult {
  job: string
  /** Signed receipts (protocols/receipt.ts) of every stage from the requested one, in order. */
  receipts: Uint8Array[]
  /** The result's tensors went straight to the client (InferRequest.returnTo); this answer has none of them. */
  delivered?: boolean
}

/** `count` tensors at the end of a frame's payload are stage `stage`'s outputs. */
export interface Tap { stage: number, count: number }

/** Error codes a hop may answer with (names of InferErrorCode in infer.proto). */
export const InferErrorCode = {
  /** A code this version does not know (sent by a newer peer): retryable. */
  UNKNOWN: 'UNKNOWN',
  BAD_INPUT: 'BAD_INPUT',
  NOT_SERVING: 'NOT_SERVING',
  RUN_FAILED: 'RUN_FAILED',
  HOP_UNREACHABLE: 'HOP_UNREACHABLE',
  TIMEOUT: 'TIMEOUT',
  DEPARTING: 'DEPARTING',
  BUSY: 'BUSY',
  LEASE_EXPIRED: 'LEASE_EXPIRED',
  INVALID_RESULT: 'INVALID_RESULT'
} as const
export type InferErrorCode = typeof InferErrorCode[keyof typeof InferErrorCode]

const CODES: Record<InferErrorCode, WireCode> = {
  UNKNOWN: WireCode.UNSPECIFIED,
  BAD_INPUT: WireCode.BAD_INPUT,
  NOT_SERVING: WireCode.NOT_SERVING,
  RUN_FAILED: WireCode.RUN_FAILED,
  HOP_UNREACHABLE: WireCode.HOP_UNREACHABLE,
  TIMEOUT: WireCode.TIMEOUT,
  DEPARTING: WireCode.DEPARTING,
  BUSY: WireCode.BUSY,
  LEASE_EXPIRED: WireCode.LEASE_EXPIRED,
  INVALID_RESULT: WireCode.INVALID_RESULT
}
const NAMES = new Map<number, InferErrorCode>(Object.entries(CODES).map(([k, v]) => [v, k as InferErrorCode]))

export interface InferError {
  job: string
  code: InferErrorCode
  message: string
  /** The stage that failed. */
  stage: number
  /** The peer that failed to run it, as the reporting hop says (evidence only against that hop itself). */
  peer: string
  /** Signed receipts of the stages that ran before the failure, in order. */
  receipts: Uint8Array[]
}

export function isRetryable (code: string): boolean {
  return code !== InferErrorCode.BAD_INPUT
}

/** What a frame says, besides its tensors. */
export type InferMessage =
  | { kind: 'request', request: InferRequest }
  | { kind: 'result', result: InferResult }
  | { kind: 'error', error: InferError }
  | { kind: 'receipts', receipts: InferReceipts }

/** Longest error message carried. */
const MAX_MESSAGE_CHARS = 4096
const MAX_ID_CHARS = 128
const MAX_ADDR_CHARS = 512
const MAX_ADDRS = 16

/** The frame header: the message, the descriptors of the payload's tensors and the taps at its end. */
export function encodeInferHeader (m: InferMessage, tensors: TensorDescriptor[], taps: Tap[] = []): Uint8Array {
  return encodeMessage(InferHeaderSchema, { kind: wireKind(m), tensors, taps })
}

function wireKind (m: InferMessage): MessageInitShape<typeof InferHeaderSchema>['kind'] {
  switch (m.kind) {
    case 'request': {
      const r = m.request
      return { case: 'request', value: { job: r.job, manifest: r.manifest, stage: r.stage, route: r.route, deadlineMs: r.deadline, leases: r.leases ?? {}, taps: r.taps ?? [], returnTo: r.returnTo ?? '', ...(r.output !== undefined ? { output: wireOutput(r.output) } : {}), earlyReceipts: r.earlyReceipts === true } }
    }
    case 'receipts': return { case: 'receipts', value: { job: m.receipts.job, receipts: m.receipts.receipts } }
    case 'result': return { case: 'result', value: { job: m.result.job, receipts: m.result.receipts, delivered: m.result.delivered === true } }
    case 'error': {
      const e = m.error
      return { case: 'error', value: { job: e.job, code: CODES[e.code], message: e.message, stage: e.stage, peer: e.peer, receipts: e.receipts } }
    }
  }
}

/** Decodes and checks a frame header; errors name the field. */
export function decodeInferHeader (bytes: Uint8Array): { message: InferMessage, tensors: TensorDescriptor[], taps: Tap[] } {
  const h: InferHeader = decodeMessage(InferHeaderSchema, bytes, 'header', MAX_HEADER_BYTES)
  const tensors = h.tensors.map(d => ({ name: d.name, dtype: d.dtype, dims: d.dims, encoding: d.encoding, encodedLength: d.encodedLength }))
  const taps = list(h.taps, 'header.taps', MAX_ROUTE_HOPS + 1).map((t, i) => ({ stage: num(t.stage, `header.taps[${i}].stage`, 0, 1024), count: num(t.count, `header.taps[${i}].count`, 1, tensors.length) }))
  if (taps.reduce((s, t) => s + t.count, 0) > tensors.length) throw new MalformedFrameError('header.taps', `count more tensors than the frame's ${tensors.length}`)
  switch (h.kind.case) {
    case 'request': {
      const r = h.kind.value
      const route = list(r.route, 'header.route', MAX_ROUTE_HOPS).map((hop, i) => ({
        peer: text(hop.peer, `header.route[${i}].peer`, MAX_PEER_ID_CHARS),
        addrs: list(hop.addrs, `header.route[${i}].addrs`, MAX_ADDRS).map((a, j) => text(a, `header.route[${i}].addrs[${j}]`, MAX_ADDR_CHARS))
      }))
      const leases = Object.entries(r.leases)
      list(leases, 'header.leases', MAX_ROUTE_HOPS + 1).forEach(([peer, lease]) => {
        text(peer, 'header.leases', MAX_PEER_ID_CHARS); text(lease, `header.leases.${peer}`, MAX_ID_CHARS)
      })
      const request: InferRequest = {
        job: text(r.job, 'header.job', MAX_ID_CHARS),
        manifest: text(r.manifest, 'header.manifest', MAX_ID_CHARS),
        stage: num(r.stage, 'header.stage', 0, 1024),
        route,
        deadline: time(r.deadlineMs, 'header.deadline'),
        ...(leases.length > 0 ? { leases: r.leases } : {}),
        ...(r.taps.length > 0 ? { taps: list(r.taps, 'header.taps', MAX_ROUTE_HOPS + 1).map((t, i) => num(t, `header.taps[${i}]`, 0, 1024)) } : {}),
        ...(r.returnTo !== '' ? { returnTo: text(r.returnTo, 'header.returnTo', MAX_PEER_ID_CHARS) } : {}),
        ...outputIn(r.output),
        ...(r.earlyReceipts ? { earlyReceipts: true } : {})
      }
      return { message: { kind: 'request', request }, tensors, taps }
    }
    case 'result':
      return { message: { kind: 'result', result: { job: text(h.kind.value.job, 'header.job', MAX_ID_CHARS), receipts: receiptsIn(h.kind.value.receipts), ...(h.kind.value.delivered ? { delivered: true } : {}) } }, tensors, taps }
    case 'error': {
      const e = h.kind.value
      const error: InferError = {
        job: text(e.job, 'header.job', MAX_ID_CHARS, 0),
        code: NAMES.get(e.code) ?? InferErrorCode.UNKNOWN,
        message: e.message.slice(0, MAX_MESSAGE_CHARS),
        stage: num(e.stage, 'header.stage', 0, 1024),
        peer: text(e.peer, 'header.peer', MAX_PEER_ID_CHARS, 0),
        receipts: receiptsIn(e.receipts)
      }
      return { message: { kind: 'error', error }, tensors, taps }
    }
    case 'receipts': {
      if (tensors.length > 0) throw new MalformedFrameError('header.tensors', 'a receipts frame carries no tensors')
      const receipts = receiptsIn(h.kind.value.receipts)
      if (receipts.length === 0) throw new MalformedFrameError('header.receipts', 'a receipts frame without receipts')
      return { message: { kind: 'receipts', receipts: { job: text(h.kind.value.job, 'header.job', MAX_ID_CHARS), receipts } }, tensors, taps }
    }
    default:
      throw new MalformedFrameError('header.kind', 'no request, result, error or receipts (a frame kind this version does not know)')
  }
}

function wireOutput (o: OutputMode): { kind: WireOutput, k: number } {
  return o.kind === 'ctc-text' ? { kind: WireOutput.CTC_TEXT, k: 0 } : { kind: WireOutput.TOP_K, k: o.k }
}

function outputIn (o: { kind: WireOutput, k: number } | undefined): { output?: OutputMode } {
  if (o === undefined || o.kind === WireOutput.RAW_UNSPECIFIED) return {}
  if (o.kind === WireOutput.CTC_TEXT) return { output: { kind: 'ctc-text' } }
  if (o.kind === WireOutput.TOP_K) return { output: { kind: 'top-k', k: num(o.k, 'header.output.k', 1, MAX_TOP_K) } }
  throw new MalformedFrameError('header.output.kind', `unknown output mode ${o.kind as number}`)
}

function receiptsIn (receipts: Uint8Array[]): Uint8Array[] {
  return list(receipts, 'header.receipts', MAX_ROUTE_HOPS + 1).map((r, i) => {
    if (r.byteLength > MAX_RECEIPT_BYTES) throw new FrameTooLargeError(`header.receipts[${i}]`, r.byteLength, MAX_RECEIPT_BYTES)
    return r
  })
}
