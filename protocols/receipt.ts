/**
 * Hop receipts (schema: HopReceipt in protocols/infer.proto): what one hop
 * attests for one stage run of a job, signed with its peer key in a libp2p
 * RecordEnvelope. A receipt binds the job and model to digests of the
 * stage's input and output tensors, so whoever holds the receipts of a job
 * can check that each stage ran on what the previous one produced, that the
 * tensors handed back or returned are the ones a named peer produced, and can
 * prove later which peer produced a wrong output.
 *
 * The digest of a list of tensors is sha256 over, for each tensor, its
 * encoded TensorDescriptor (length-prefixed) followed by its payload bytes:
 * a hop computes it over a frame's payload as received, without decoding it.
 */
import { createHash } from 'node:crypto'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { equals } from 'uint8arrays'
import type { PrivateKey } from '@libp2p/interface'
import { decodeMessage, encodeMessage, num, text } from './codec.ts'
import { openRecord, sealRecord } from './envelope.ts'
import type { RecordKind } from './envelope.ts'
import { MalformedFrameError } from './errors.ts'
import { HopReceiptSchema } from './gen/receipt_pb.ts'
import { TensorDescriptorSchema } from './gen/tensor_pb.ts'
import { MAX_RECEIPT_BYTES } from './limits.ts'
import type { TensorDescriptor } from './tensor.ts'

export const HOP_RECEIPT: RecordKind = { domain: 'fleetmesh-hop-receipt', payloadType: '/fleetmesh/hop-receipt/1' }

const DIGEST_BYTES = 32

export interface HopReceipt {
  job: string
  /** Manifest CID. */
  manifest: string
  stage: number
  /** sha256 digest of the stage's input tensors. */
  input: Uint8Array
  /** sha256 digest of its output tensors. */
  output: Uint8Array
  ms: number
}

/** A receipt opened and verified: who signed it, what it says, and its bytes as they travel. */
export interface SignedReceipt extends HopReceipt {
  signer: string
  bytes: Uint8Array
}

/** The digest receipts use for tensors described by `descriptors` whose bytes are `payload`. */
export function digestTensors (descriptors: TensorDescriptor[], payload: Uint8ArrayList | Uint8Array[]): Uint8Array {
  const h = createHash('sha256')
  for (const d of descriptors) {
    const bytes = encodeMessage(TensorDescriptorSchema, d)
    h.update(varint.encode(bytes.byteLength))
    h.update(bytes)
  }
  const parts = payload instanceof Uint8ArrayList ? [...payload] : payload
  let total = 0
  const want = descriptors.reduce((s, d) => s + d.encodedLength, 0)
  for (const p of parts) { h.update(p); total += p.byteLength }
  if (total !== want) throw new MalformedFrameError('payload', `is ${total} bytes, its descriptors declare ${want}`)
  return h.digest()
}

export async function sealReceipt (r: HopReceipt, key: PrivateKey): Promise<Uint8Array> {
  return await sealRecord(HOP_RECEIPT, encodeMessage(HopReceiptSchema, r), key)
}

/** Opens and verifies a receipt; errors name `what`. */
export async function openReceipt (bytes: Uint8Array, what = 'receipt'): Promise<SignedReceipt> {
  const { signer, payload } = await openRecord(HOP_RECEIPT, bytes, what, MAX_RECEIPT_BYTES)
  const r = decodeMessage(HopReceiptSchema, payload, what, MAX_RECEIPT_BYTES)
  if (r.input.byteLength !== DIGEST_BYTES) throw new MalformedFrameError(`${what}.input`, `must be a ${DIGEST_BYTES}-byte digest`)
  if (r.output.byteLength !== DIGEST_BYTES) throw new MalformedFrameError(`${what}.output`, `must be a ${DIGEST_BYTES}-byte digest`)
  return {
    job: text(r.job, `${what}.job`, 128),
    manifest: text(r.manifest, `${what}.manifest`, 128),
    stage: num(r.stage, `${what}.stage`, 0, 1024),
    input: r.input,
    output: r.output,
    ms: Number.isFinite(r.ms) && r.ms >= 0 ? r.ms : 0,
    signer,
    bytes
  }
}

/** Why receipts of stages `first`, `first+1`, ... for `job` do not chain from `input`, or undefined when they do. */
export function chainProblem (receipts: SignedReceipt[], expect: { job: string, manifest: string, first: number, input?: Uint8Array, peers?: string[] }): string | undefined {
  let prev = expect.input
  for (let i = 0; i < receipts.length; i++) {
    const r = receipts[i]
    const stage = expect.first + i
    if (r.job !== expect.job || r.manifest !== expect.manifest) return `receipt ${i} is for another job or model`
    if (r.stage !== stage) return `receipt ${i} is for stage ${r.stage}, expected ${stage}`
    if (expect.peers?.[i] !== undefined && r.signer !== expect.peers[i]) return `stage ${stage} was signed by ${r.signer.slice(-8)}, not the peer it was sent to (${expect.peers[i].slice(-8)})`
    if (prev !== undefined && !equals(prev, r.input)) return `stage ${stage}'s input is not stage ${stage - 1}'s output`
    prev = r.output
  }
  return undefined
}

/** Whether `digest` equals a receipt's output digest. */
export function sameDigest (a: Uint8Array, b: Uint8Array): boolean { return equals(a, b) }
