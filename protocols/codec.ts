/**
 * Protobuf messages as bytes: one size-limited decoder for every schema, and
 * the checks decoders share. Unknown fields are skipped, so a message from a
 * newer peer that carries more fields still decodes here.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import type { DescMessage, MessageInitShape, MessageShape } from '@bufbuild/protobuf'
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'
import { MAX_CREDENTIAL_BYTES } from './limits.ts'

/** Encodes `init` as a `schema` message. */
export function encodeMessage<D extends DescMessage> (schema: D, init: MessageInitShape<D>): Uint8Array {
  return toBinary(schema, create(schema, init))
}

/** Decodes a `schema` message of at most `limit` bytes; errors name `what`. */
export function decodeMessage<D extends DescMessage> (schema: D, bytes: Uint8Array, what: string, limit: number): MessageShape<D> {
  if (bytes.byteLength > limit) throw new FrameTooLargeError(what, bytes.byteLength, limit)
  try {
    return fromBinary(schema, bytes, { readUnknownFields: false })
  } catch (err) {
    throw new MalformedFrameError(what, `not a valid message (${(err as Error).message})`)
  }
}

/** A string of `min..max` characters. */
export function text (v: string, field: string, max: number, min = 1): string {
  if (v.length < min || v.length > max) throw new MalformedFrameError(field, min > 0 ? `must be a string of ${min}..${max} chars` : `must be at most ${max} chars`)
  return v
}

/** A number within `min..max` (integers only when `integer`). */
export function num (v: number, field: string, min: number, max: number, integer = true): number {
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) throw new MalformedFrameError(field, `must be ${integer ? 'an integer' : 'a number'} in ${min}..${max}`)
  return v
}

/** An epoch-ms time (an integer, not negative, before the year 10000). */
export function time (v: number, field: string): number {
  return num(v, field, 0, 253_402_300_800_000)
}

/** A list of at most `max` items. */
export function list<T> (v: T[], field: string, max: number): T[] {
  if (v.length > max) throw new MalformedFrameError(field, `has ${v.length} entries, at most ${max} allowed`)
  return v
}

/** A non-negative float; values a peer cannot mean (NaN, negative, infinite) become 0. */
export function measure (v: number): number {
  return Number.isFinite(v) && v > 0 ? v : 0
}

/** A certificate chain carried in a message: at most 2 certificates of at most MAX_CREDENTIAL_BYTES. */
export function chainIn (chain: Uint8Array[], field: string): Uint8Array[] | undefined {
  list(chain, field, 2).forEach((c, i) => { if (c.byteLength > MAX_CREDENTIAL_BYTES) throw new FrameTooLargeError(`${field}[${i}]`, c.byteLength, MAX_CREDENTIAL_BYTES) })
  return chain.length > 0 ? chain : undefined
}
