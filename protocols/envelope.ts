/**
 * Signed records: every record fleetmesh signs travels in a libp2p
 * RecordEnvelope (@libp2p/peer-record). The signature covers a domain string,
 * a payload type and the payload, so a signature made for one kind of record
 * can never pass as another, and the signer's public key travels with it.
 */
import { RecordEnvelope } from '@libp2p/peer-record'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { fromString } from 'uint8arrays'
import type { PrivateKey } from '@libp2p/interface'
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'

/** A kind of signed record: its signing domain and payload type. */
export interface RecordKind {
  /** Signing domain (domain separation). */
  domain: string
  /** Payload type, versioned: a breaking change to the payload gets a new one. */
  payloadType: string
}

export interface OpenedRecord {
  /** Peer id (string) of the signer, derived from the envelope's public key. */
  signer: string
  payload: Uint8Array
}

/** Seals `payload` as a record of `kind`, signed by `key`. */
export async function sealRecord (kind: RecordKind, payload: Uint8Array, key: PrivateKey): Promise<Uint8Array> {
  const env = await RecordEnvelope.seal({
    domain: kind.domain,
    codec: fromString(kind.payloadType),
    marshal: () => payload,
    equals: () => false
  }, key)
  return env.marshal()
}

/**
 * Opens an envelope of at most `limit` bytes: checks its payload type and its
 * signature under `kind`'s domain, and names the signer. Errors name `what`.
 */
export async function openRecord (kind: RecordKind, bytes: Uint8Array, what: string, limit: number): Promise<OpenedRecord> {
  if (bytes.byteLength > limit) throw new FrameTooLargeError(what, bytes.byteLength, limit)
  let env: RecordEnvelope
  try { env = RecordEnvelope.createFromProtobuf(bytes) } catch (err) {
    throw new MalformedFrameError(what, `not a signed envelope (${(err as Error).message})`)
  }
  const type = new TextDecoder().decode(env.payloadType)
  if (type !== kind.payloadType) throw new MalformedFrameError(`${what}.payloadType`, `is ${JSON.stringify(type.slice(0, 64))}, expected ${kind.payloadType}`)
  let valid = false
  try { valid = await env.validate(kind.domain) } catch { valid = false }
  if (!valid) throw new MalformedFrameError(`${what}.signature`, `does not verify for domain ${kind.domain}`)
  return { signer: peerIdFromPublicKey(env.publicKey).toString(), payload: env.payload }
}
