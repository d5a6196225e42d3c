/**
 * `/fleetmesh/shard/1.0.0`: shard bytes by CID.
 *
 * The caller writes one length-prefixed JSON request `{ "cid", "offset", "length"? }`.
 * The server answers with a JSON header `{ "ok": true, "size", "total" }` (size:
 * the bytes that follow, from `offset`, at most `length`; total: the shard's
 * size) followed by length-prefixed chunks of at most SHARD_CHUNK_BYTES,
 * or `{ "ok": false, "code", "message" }`. The caller verifies the sha256 of the
 * whole content against the CID before using it.
 */
import { MalformedFrameError } from './errors.ts'
import { decodeJsonObject, encodeJson } from './json.ts'
import { MAX_SHARD_BYTES, MAX_SHARD_REQUEST_BYTES } from './limits.ts'

/** `length` absent: to the end. */
export interface ShardRequest { cid: string, offset: number, length?: number }
/** `size`: bytes that follow; `total`: the whole shard's size. */
export type ShardResponseHeader = { ok: true, size: number, total: number } | { ok: false, code: 'NOT_FOUND' | 'BAD_REQUEST', message: string }

export { encodeJson }

export function decodeShardRequest (bytes: Uint8Array): ShardRequest {
  const v = decodeJsonObject(bytes, 'shard request', MAX_SHARD_REQUEST_BYTES)
  if (typeof v.cid !== 'string' || v.cid.length === 0 || v.cid.length > 128) throw new MalformedFrameError('shard request.cid', 'must be a CID string')
  const offset = v.offset ?? 0
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0 || offset > MAX_SHARD_BYTES) throw new MalformedFrameError('shard request.offset', 'must be a non-negative integer')
  const length = v.length
  if (length !== undefined && (typeof length !== 'number' || !Number.isInteger(length) || length < 0 || length > MAX_SHARD_BYTES)) throw new MalformedFrameError('shard request.length', 'must be a non-negative integer')
  return { cid: v.cid, offset, ...(length !== undefined ? { length } : {}) }
}

export function decodeShardResponseHeader (bytes: Uint8Array): ShardResponseHeader {
  const v = decodeJsonObject(bytes, 'shard response', MAX_SHARD_REQUEST_BYTES)
  if (v.ok === true) {
    if (typeof v.size !== 'number' || !Number.isInteger(v.size) || v.size < 0 || v.size > MAX_SHARD_BYTES) throw new MalformedFrameError('shard response.size', `must be an integer in 0..${MAX_SHARD_BYTES}`)
    const total = typeof v.total === 'number' && Number.isInteger(v.total) && v.total >= v.size ? v.total : v.size
    return { ok: true, size: v.size, total }
  }
  return { ok: false, code: v.code === 'NOT_FOUND' ? 'NOT_FOUND' : 'BAD_REQUEST', message: typeof v.message === 'string' ? v.message : 'error' }
}
