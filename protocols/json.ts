/**
 * JSON messages as bytes, with a size limit and errors that name the message.
 */
import { fromString, toString } from 'uint8arrays'
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'

export function encodeJson (v: unknown, pretty = false): Uint8Array {
  return fromString(pretty ? JSON.stringify(v, null, 2) + '\n' : JSON.stringify(v))
}

/** Parses a JSON object of at most `limit` bytes; `field` names it in errors. */
export function decodeJsonObject (bytes: Uint8Array, field: string, limit: number): Record<string, any> {
  if (bytes.byteLength > limit) throw new FrameTooLargeError(field, bytes.byteLength, limit)
  let v: unknown
  try { v = JSON.parse(toString(bytes)) } catch (err) {
    throw new MalformedFrameError(field, `not JSON (${(err as Error).message})`)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new MalformedFrameError(field, 'must be an object')
  return v as Record<string, any>
}
