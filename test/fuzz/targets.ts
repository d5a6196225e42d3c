/**
 * Fuzz targets: every decoder of bytes from the network (protocols/), the
 * manifest decoder and the gateway's request parsing. Each is fed random
 * bytes and mutations of valid encodings (the golden wire fixtures and
 * fresh samples); it must return or throw one of the typed errors, within a
 * time bound. Used by test/fuzz/decoders.spec.ts (a short run) and
 * bench/fuzz.ts (10,000 cases per target).
 */
import { readFileSync, readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import type { Arbitrary } from 'fast-check'
import { decodeHeartbeat, openCapacityRecord } from '../../protocols/capacity.ts'
import { FrameTooLargeError, MalformedFrameError } from '../../protocols/errors.ts'
import { decodeInferHeader } from '../../protocols/infer.ts'
import { decodeJobsMessage, openModelRecord } from '../../protocols/jobs.ts'
import { NotAMemberError, decodeEnrollRequest, decodeEnrollResponse, decodeProof, encodeEnrollRequest, encodeEnrollResponse, encodeProof, openCertificate, openGrant, openRevocations, verifyChain } from '../../protocols/membership.ts'
import { decodeOfferMessage } from '../../protocols/offer.ts'
import { decodePunchMessage } from '../../protocols/punch.ts'
import { openReceipt, sealReceipt } from '../../protocols/receipt.ts'
import { decodeShardRequest, decodeShardResponse } from '../../protocols/shard.ts'
import { tensorFromOip } from '../../protocols/oip.ts'
import { MAX_HEADER_BYTES, MAX_INFER_FRAME_BYTES } from '../../protocols/limits.ts'
import { checkDescriptors, tensorsFromPayload } from '../../protocols/tensor.ts'
import { parseInferBody } from '../../node/gateway/infer.ts'
import { HttpError } from '../../node/gateway/repository.ts'
import { InvalidManifestError, decodeManifest } from '../../node/models/manifest.ts'
import { createFleet } from '../../node/membership/credentials.ts'

const FIXTURES = fileURLToPath(new URL('../fixtures/wire/', import.meta.url))

/** The errors a decoder may throw on bad input. */
export function isTypedError (err: unknown): boolean {
  return err instanceof MalformedFrameError || err instanceof FrameTooLargeError || err instanceof NotAMemberError ||
    err instanceof InvalidManifestError || err instanceof HttpError
}

export interface FuzzTarget {
  name: string
  /** Valid encodings to mutate. */
  seeds: Uint8Array[]
  run: (bytes: Uint8Array) => unknown
}

const fixture = (name: string): Uint8Array[] => readdirSync(FIXTURES).filter(f => f.startsWith(name) && f.endsWith('.bin')).map(f => new Uint8Array(readFileSync(FIXTURES + f)))
/** An infer frame's header bytes (a fixture without its length prefix and payload). */
const headerOf = (frame: Uint8Array): Uint8Array => {
  let n = 0; let i = 0
  for (; i < 5; i++) { n += (frame[i] & 0x7f) * 2 ** (7 * i); if ((frame[i] & 0x80) === 0) break }
  return frame.subarray(i + 1, i + 1 + n)
}
const text = (s: string): Uint8Array => new TextEncoder().encode(s)
// valid signed records to mutate: a fleet of its own, a receipt, a certificate chain, a grant, revocations
const { authority, trust: TRUST } = await createFleet('fuzz')
const CHAIN = await authority.issue('12D3KooWJ9zrzMJTDRcprbm1C6yGaJXJozAvCXfFcDNnmVDfnsG7', { roles: ['vehicle'] })
const GRANT = await authority.grant('vehicle')
const REVOKED = await authority.revocations({ seq: 1, issuedAt: Date.now(), peers: ['p'], serials: ['s'] })
const RECEIPT = await sealReceipt({ job: 'j', manifest: 'm', stage: 1, input: new Uint8Array(32), output: new Uint8Array(32).fill(1), ms: 2 }, authority.key)
const MANIFEST = text(JSON.stringify({ format: 'fleetmesh-manifest/1', name: 'm', version: '1', source: 'x', inputs: [{ name: 'x', dtype: 'float32', shape: [null, 3], max: [8, 3] }], outputs: [], probeShapes: { x: [1, 3] }, balancedBy: 'flops', stages: [{ index: 0, cid: 'c', inputs: [], outputs: [], maxInputBytes: 10 }] }))
const OIP = text(JSON.stringify({ id: 'a', inputs: [{ name: 'x', shape: [1, 2], datatype: 'FP32', data: [1, 2] }], outputs: [{ name: 'y', parameters: { binary_data: true } }] }))

/** A whole infer frame as a hop reads it: length, header, descriptors checked against the limit, then the payload's tensors. */
function readFrame (b: Uint8Array): unknown {
  let n = 0; let i = 0
  for (; ; i++) {
    if (i >= 3 || i >= b.byteLength) throw new MalformedFrameError('header', 'length prefix')
    n += (b[i] & 0x7f) * 2 ** (7 * i)
    if ((b[i] & 0x80) === 0) break
  }
  if (n > MAX_HEADER_BYTES) throw new FrameTooLargeError('header', n, MAX_HEADER_BYTES)
  const { tensors, taps } = decodeInferHeader(b.subarray(i + 1, i + 1 + n))
  const size = checkDescriptors(tensors, MAX_INFER_FRAME_BYTES)
  const payload = b.subarray(i + 1 + n)
  if (payload.byteLength < size) return 'waits for more bytes'
  return { tensors: tensorsFromPayload(tensors, payload.subarray(0, size)), taps }
}

export const TARGETS: FuzzTarget[] = [
  { name: 'infer frame', seeds: fixture('infer-'), run: readFrame },
  { name: 'infer header', seeds: fixture('infer-').map(headerOf), run: b => decodeInferHeader(b) },
  { name: 'heartbeat', seeds: fixture('heartbeat'), run: b => decodeHeartbeat(b) },
  { name: 'capacity record', seeds: fixture('capacity-record'), run: async b => await openCapacityRecord(b) },
  { name: 'jobs message', seeds: fixture('jobs-'), run: b => decodeJobsMessage(b) },
  { name: 'model record', seeds: fixture('model-record'), run: async b => await openModelRecord(b) },
  { name: 'offer message', seeds: fixture('offer-'), run: b => decodeOfferMessage(b) },
  { name: 'punch message', seeds: fixture('punch-'), run: b => decodePunchMessage(b) },
  { name: 'shard request', seeds: fixture('shard-request'), run: b => decodeShardRequest(b) },
  { name: 'shard response', seeds: [...fixture('shard-ok'), ...fixture('shard-error')], run: b => decodeShardResponse(b) },
  { name: 'hop receipt', seeds: [RECEIPT], run: async b => await openReceipt(b) },
  { name: 'member certificate', seeds: CHAIN, run: async b => await openCertificate(b) },
  { name: 'certificate chain', seeds: [encodeProof(CHAIN)], run: async b => await verifyChain(TRUST, decodeProof(b).chain, { now: Date.now() }) },
  { name: 'enrollment grant', seeds: [GRANT], run: async b => await openGrant(b) },
  { name: 'revocation list', seeds: [REVOKED], run: async b => await openRevocations(b, TRUST) },
  { name: 'membership proof', seeds: [encodeProof(CHAIN, REVOKED)], run: b => decodeProof(b) },
  { name: 'enroll request', seeds: [encodeEnrollRequest({ grant: GRANT }), encodeEnrollRequest({ renew: CHAIN })], run: b => decodeEnrollRequest(b) },
  { name: 'enroll response', seeds: [encodeEnrollResponse({ issued: CHAIN }), encodeEnrollResponse({ refused: 'no' })], run: b => decodeEnrollResponse(b) },
  { name: 'manifest', seeds: [MANIFEST], run: b => decodeManifest(b) },
  {
    name: 'gateway infer body',
    seeds: [OIP],
    run: b => parseInferBody(Buffer.from(b), {})
  },
  {
    name: 'gateway binary body',
    seeds: [new Uint8Array([...text('{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}'), 0, 0, 128, 63])],
    run: b => parseInferBody(Buffer.from(b), { 'inference-header-content-length': String(Math.min(b.byteLength, 86)) })
  },
  { name: 'OIP tensor JSON', seeds: [text('{"name":"x","shape":[2],"datatype":"INT64","data":[1,2]}')], run: b => { let v: unknown; try { v = JSON.parse(new TextDecoder().decode(b)) } catch { return } return tensorFromOip(v) } }
]

/** Random bytes, and random edits of a seed (byte flips, truncation, insertion, splices). */
export function inputs (t: FuzzTarget): Arbitrary<Uint8Array> {
  const random = fc.uint8Array({ maxLength: 4096 })
  if (t.seeds.length === 0) return random
  const mutated = fc.tuple(fc.constantFrom(...t.seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('flip', 'cut', 'insert', 'set')), { maxLength: 8 }))
    .map(([seed, edits]) => {
      let b = Uint8Array.from(seed)
      for (const [at, value, op] of edits) {
        const i = b.byteLength === 0 ? 0 : at % b.byteLength
        if (op === 'flip') b[i] ^= 1 << (value % 8)
        else if (op === 'set') b[i] = value
        else if (op === 'cut') b = b.subarray(0, i)
        else b = Uint8Array.from([...b.subarray(0, i), value, ...b.subarray(i)])
      }
      return b
    })
  return fc.oneof(random, mutated, mutated)
}

/** Runs `runs` cases of a target; returns what broke: a case that threw an untyped error or took too long. */
export async function fuzz (t: FuzzTarget, runs: number, seed?: number, boundMs = 1000): Promise<{ failure?: string, slowestMs: number }> {
  let slowest = 0
  let first: string | undefined
  const fail = (why: string, bytes: Uint8Array): never => {
    first ??= `${why} (input ${bytes.byteLength} bytes: ${Buffer.from(bytes.subarray(0, 48)).toString('hex')}${bytes.byteLength > 48 ? '...' : ''})`
    throw new Error(why)
  }
  try {
    await fc.assert(fc.asyncProperty(inputs(t), async (bytes) => {
      const t0 = performance.now()
      try { await t.run(bytes) } catch (err) {
        if (!isTypedError(err)) fail(`${t.name}: untyped ${(err as Error)?.name ?? typeof err}: ${(err as Error)?.message ?? String(err)}`, bytes)
      }
      const ms = performance.now() - t0
      slowest = Math.max(slowest, ms)
      if (ms > boundMs) fail(`${t.name}: took ${ms.toFixed(0)} ms`, bytes)
    }), { numRuns: runs, ...(seed !== undefined ? { seed } : {}) })
    return { slowestMs: slowest }
  } catch (err) {
    return { failure: `${first ?? (err as Error).message} [fast-check: ${(err as Error).message.split('\n')[0]}]`, slowestMs: slowest }
  }
}
