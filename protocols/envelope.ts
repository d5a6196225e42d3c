/**
 * Signed records: every record fleetmesh signs travels in a libp2p
 * RecordEnvelope (@libp2p/peer-record). The signature covers a domain string,
 * a payload type and the payload, so a signature made for one kind of record
 * can never pass as another, and the signer's public key travels with it.
 */
import { createPrivateKey, sign } from 'node:crypto'
import { RecordEnvelope } from '@libp2p/peer-record'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { fromString, toString } from 'uint8arrays'
import type { PrivateKey } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
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

/** Each Ed25519 key as it signs here: the same key, its signing done with a Node KeyObject made once. */
const signers = new WeakMap<PrivateKey, PrivateKey>()

/**
 * `key`, signing with a KeyObject made once: @libp2p/crypto's Ed25519 key
 * imports itself from a JWK for every signature, half of the signature's
 * cost (a receipt's record: 99 us a seal, 48 with the KeyObject; Ed25519
 * signatures are deterministic, so the bytes are the same). Other key types
 * sign as they are.
 */
export function fastSigner (key: PrivateKey): PrivateKey {
  if (key.type !== 'Ed25519') return key
  let signer = signers.get(key)
  if (signer === undefined) {
    // an Ed25519 key's raw bytes are its 32-byte seed, then its public key
    const own = createPrivateKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', d: toString(key.raw.subarray(0, 32), 'base64url'), x: toString(key.publicKey.raw, 'base64url') } })
    const signWith = (data: Uint8Array | Uint8ArrayList): Uint8Array => sign(null, data instanceof Uint8Array ? data : data.subarray(), own)
    signer = Object.create(key, { sign: { value: signWith } }) as PrivateKey
    signers.set(key, signer)
  }
  return signer
}

/** Seals `payload` as a record of `kind`, signed by `key`. */
export async function sealRecord (kind: RecordKind, payload: Uint8Array, key: PrivateKey): Promise<Uint8Array> {
  const env = await RecordEnvelope.seal({
    domain: kind.domain,
    codec: fromString(kind.payloadType),
    marshal: () => payload,
    equals: () => false
  }, fastSigner(key))
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
