/**
 * `/fleetmesh/shard/2.0.0` (schema: protocols/shard.proto): shard bytes by CID.
 *
 * The caller writes one length-prefixed ShardRequest; the server answers with
 * a length-prefixed ShardResponse (`ok`: size that follows and the shard's
 * total size; or an error), then length-prefixed chunks of at most
 * SHARD_CHUNK_BYTES. The caller verifies the sha256 of the whole content
 * against the CID before using it.
 */
import { decodeMessage, encodeMessage, num, text } from './codec.ts'
import { MalformedFrameError } from './errors.ts'
import { ShardErrorCode, ShardRequestSchema, ShardResponseSchema } from './gen/shard_pb.ts'
import { MAX_SHARD_BYTES, MAX_SHARD_MESSAGE_BYTES } from './limits.ts'

/** `length` absent: to the end. */
export interface ShardRequest { cid: string, offset: number, length?: number }
/** `size`: bytes that follow; `total`: the whole shard's size. */
export type ShardErrorName = 'NOT_FOUND' | 'BAD_REQUEST' | 'RATE_LIMITED'
export type ShardResponse = { ok: true, size: number, total: number } | { ok: false, code: ShardErrorName, message: string }
const CODES: Record<ShardErrorName, ShardErrorCode> = { NOT_FOUND: ShardErrorCode.NOT_FOUND, BAD_REQUEST: ShardErrorCode.BAD_REQUEST, RATE_LIMITED: ShardErrorCode.RATE_LIMITED }
const NAMES = new Map<number, ShardErrorName>(Object.entries(CODES).map(([k, v]) => [v, k as ShardErrorName]))

export function encodeShardRequest (r: ShardRequest): Uint8Array {
  return encodeMessage(ShardRequestSchema, r)
}

export function decodeShardRequest (bytes: Uint8Array): ShardRequest {
  const r = decodeMessage(ShardRequestSchema, bytes, 'shard request', MAX_SHARD_MESSAGE_BYTES)
  return {
    cid: text(r.cid, 'shard request.cid', 128),
    offset: num(r.offset, 'shard request.offset', 0, MAX_SHARD_BYTES),
    ...(r.length !== undefined ? { length: num(r.length, 'shard request.length', 0, MAX_SHARD_BYTES) } : {})
  }
}

export function encodeShardResponse (r: ShardResponse): Uint8Array {
  return encodeMessage(ShardResponseSchema, {
    kind: r.ok
      ? { case: 'ok', value: { size: r.size, total: r.total } }
      : { case: 'error', value: { code: CODES[r.code], message: r.message } }
  })
}

export function decodeShardResponse (bytes: Uint8Array): ShardResponse {
  const r = decodeMessage(ShardResponseSchema, bytes, 'shard response', MAX_SHARD_MESSAGE_BYTES)
  if (r.kind.case === 'ok') {
    const size = num(r.kind.value.size, 'shard response.size', 0, MAX_SHARD_BYTES)
    const total = num(r.kind.value.total, 'shard response.total', size, MAX_SHARD_BYTES)
    return { ok: true, size, total }
  }
  if (r.kind.case === 'error') return { ok: false, code: NAMES.get(r.kind.value.code) ?? 'BAD_REQUEST', message: r.kind.value.message.slice(0, 1024) }
  throw new MalformedFrameError('shard response', 'neither ok nor error')
}
