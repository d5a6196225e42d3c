import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { TensorProto_DataType } from 'onnx-buf'
import { decodeHeartbeat, encodeHeartbeat, openCapacityRecord, sealCapacityRecord } from '../../protocols/capacity.ts'
import type { CapacityRecord, Heartbeat } from '../../protocols/capacity.ts'
import { fastSigner, openRecord, sealRecord } from '../../protocols/envelope.ts'
import { FrameTooLargeError, MalformedFrameError } from '../../protocols/errors.ts'
import { CAPACITY_RECORD, MODEL_RECORD } from '../../protocols/ids.ts'
import { decodeJobsMessage, openModelRecord, sealModelRecord } from '../../protocols/jobs.ts'
import { MAX_CAPACITY_RECORD_TTL_MS, MAX_HEARTBEAT_BYTES } from '../../protocols/limits.ts'
import { decodeOfferMessage } from '../../protocols/offer.ts'
import { dtypeCode, float32Tensor, maxAbsDiff } from '../../protocols/tensor.ts'
import type { DType } from '../../protocols/tensor.ts'
import { WIRE_CASES } from '../fixtures/wire-cases.ts'

const FIXTURES = fileURLToPath(new URL('../fixtures/wire/', import.meta.url))
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const execFileP = promisify(execFile)

/** Every field of `expected` is in `actual` with the same value (later versions may add fields). */
function assertContains (actual: unknown, expected: unknown, path = ''): void {
  if (expected !== null && typeof expected === 'object') {
    assert.ok(actual !== null && typeof actual === 'object', `${path}: expected an object`)
    for (const [k, v] of Object.entries(expected)) assertContains((actual as Record<string, unknown>)[k], v, `${path}.${k}`)
    return
  }
  assert.deepEqual(actual, expected, path)
}

/** `bytes` with one more field a future version might send: field 99, varint 1. */
const withAddedField = (bytes: Uint8Array): Uint8Array => new Uint8Array([...bytes, 0x98, 0x06, 0x01])

describe('wire formats (protobuf, protocols/*.proto)', () => {
  it('protocols/gen is what `npm run proto` generates from the schemas (and they pass buf lint)', async function () {
    this.timeout(30_000)
    const out = await mkdtemp(join(tmpdir(), 'fm-proto-'))
    const env = { ...process.env, PATH: `${join(ROOT, 'node_modules', '.bin')}:${process.env.PATH ?? ''}` }
    try {
      await execFileP('buf', ['generate', '-o', out], { cwd: join(ROOT, 'protocols'), env })
      await execFileP('buf', ['lint'], { cwd: join(ROOT, 'protocols'), env })
      const files = (await readdir(join(ROOT, 'protocols', 'gen'))).sort()
      assert.deepEqual((await readdir(join(out, 'gen'))).sort(), files)
      for (const f of files) assert.equal(await readFile(join(out, 'gen', f), 'utf8'), await readFile(join(ROOT, 'protocols', 'gen', f), 'utf8'), `${f} is stale: run npm run proto`)
    } finally { await rm(out, { recursive: true, force: true }) }
  })

  it('golden fixtures written by earlier versions still decode to what they meant', async () => {
    const names = (await readdir(FIXTURES)).filter(f => f.endsWith('.bin')).map(f => f.slice(0, -4))
    assert.ok(names.length >= WIRE_CASES.length, `${names.length} fixtures for ${WIRE_CASES.length} cases`)
    for (const name of names) {
      const c = WIRE_CASES.find(x => x.name === name)
      assert.ok(c !== undefined, `no decoder for fixture ${name}`)
      const decoded = await c.decode(new Uint8Array(await readFile(`${FIXTURES}${name}.bin`)))
      assertContains(JSON.parse(JSON.stringify(decoded)), JSON.parse(await readFile(`${FIXTURES}${name}.json`, 'utf8')), name)
    }
  })

  it('what this version encodes decodes to the same as the fixtures say', async () => {
    for (const c of WIRE_CASES) {
      assertContains(JSON.parse(JSON.stringify(await c.decode(await c.encode()))), JSON.parse(await readFile(`${FIXTURES}${c.name}.json`, 'utf8')), c.name)
    }
  })

  it('a message carrying a field this version does not know still decodes', async () => {
    const heartbeat = WIRE_CASES.find(c => c.name === 'heartbeat')!
    const hb = await heartbeat.encode()
    assert.deepEqual(await heartbeat.decode(withAddedField(hb)), await heartbeat.decode(hb))
    for (const name of ['jobs-job', 'offer-lease', 'shard-request', 'shard-ok']) {
      const c = WIRE_CASES.find(x => x.name === name)!
      const bytes = await c.encode()
      assert.deepEqual(await c.decode(withAddedField(bytes)), await c.decode(bytes), name)
    }
  })

  it('a message of a kind this version does not know is skipped, not an error', () => {
    // oneof field 9 (a future kind) holding an empty message
    const future = new Uint8Array([0x4a, 0x00])
    assert.deepEqual(decodeOfferMessage(future), { type: 'unknown' })
    assert.deepEqual(decodeJobsMessage(future), { kind: 'unknown' })
  })

  it('tensor dtypes travel as ONNX TensorProto.DataType numbers', () => {
    const onnx: Record<DType, number> = {
      float32: TensorProto_DataType.FLOAT,
      uint8: TensorProto_DataType.UINT8,
      int8: TensorProto_DataType.INT8,
      uint16: TensorProto_DataType.UINT16,
      int16: TensorProto_DataType.INT16,
      int32: TensorProto_DataType.INT32,
      int64: TensorProto_DataType.INT64,
      bool: TensorProto_DataType.BOOL,
      float16: TensorProto_DataType.FLOAT16,
      float64: TensorProto_DataType.DOUBLE,
      uint32: TensorProto_DataType.UINT32,
      uint64: TensorProto_DataType.UINT64
    }
    for (const [dtype, code] of Object.entries(onnx)) assert.equal(dtypeCode(dtype as DType), code, dtype)
  })

  it('heartbeats round-trip; bad ones name the field; big ones are refused', () => {
    const hb: Heartbeat = { ts: 5, seq: 2, eligible: true, load: 0, slots: 4, stages: [{ manifest: 'm', stage: 1, cid: 'c', msPerItem: 3 }], addrs: ['/ip4/127.0.0.1/tcp/1'], leaving: false }
    assert.deepEqual(decodeHeartbeat(encodeHeartbeat(hb)), hb)
    assert.throws(() => decodeHeartbeat(encodeHeartbeat({ ...hb, stages: [{ ...hb.stages[0], cid: '' }] })), (e: unknown) => e instanceof MalformedFrameError && e.field === 'heartbeat.stages[0].cid')
    assert.throws(() => decodeHeartbeat(new Uint8Array([0xff, 0xff])), (e: unknown) => e instanceof MalformedFrameError && e.field === 'heartbeat')
    assert.throws(() => decodeHeartbeat(new Uint8Array(MAX_HEARTBEAT_BYTES + 1)), FrameTooLargeError)
  })
})

describe('signed records (RecordEnvelope with domain separation)', () => {
  it('capacity records verify; tampering, a foreign signer, long lifetimes, expiry and a wrong key are refused', async () => {
    const key = await generateKeyPair('Ed25519')
    const peer = peerIdFromPrivateKey(key).toString()
    const now = Date.now()
    const r: CapacityRecord = { peer, seq: 1, issuedAt: now, expiresAt: now + 30_000, eligible: true, stages: [], slots: 2, reasons: [] }
    const bytes = await sealCapacityRecord(r, key)
    assert.deepEqual(await openCapacityRecord(bytes), r)
    const tampered = new Uint8Array(bytes); tampered[tampered.length - 70] ^= 1
    await assert.rejects(openCapacityRecord(tampered), (e: unknown) => e instanceof MalformedFrameError)
    const other = await generateKeyPair('Ed25519')
    await assert.rejects(openCapacityRecord(await sealCapacityRecord(r, other)), (e: unknown) => e instanceof MalformedFrameError && e.field === 'capacity record.peer')
    await assert.rejects(openCapacityRecord(await sealCapacityRecord({ ...r, expiresAt: now + MAX_CAPACITY_RECORD_TTL_MS + 1 }, key)), /lifetime/)
    await assert.rejects(openCapacityRecord(bytes, { now: now + 40_000 }), /expired/)
    await assert.rejects(openCapacityRecord(bytes, { key: new TextEncoder().encode('/fmcap/someone-else') }), /does not match/)
  })

  it('a signature made for one kind of record never passes as another', async () => {
    const key = await generateKeyPair('Ed25519')
    const publisher = peerIdFromPrivateKey(key).toString()
    const model = await sealModelRecord({ name: 'm', versions: { 1: 'bafk' }, publisher, publishedAt: 1 }, key)
    assert.equal((await openModelRecord(model)).publisher, publisher)
    // the model record's envelope offered as a capacity record: wrong payload type
    await assert.rejects(openCapacityRecord(model), (e: unknown) => e instanceof MalformedFrameError && e.field === 'capacity record.payloadType')
    // the right payload type, but signed under the model records' domain: the signature fails
    const payload = (await import('@libp2p/peer-record')).RecordEnvelope.createFromProtobuf(await sealCapacityRecord({ peer: publisher, seq: 1, issuedAt: Date.now(), expiresAt: Date.now() + 1000, eligible: true, stages: [], slots: 1, reasons: [] }, key)).payload
    const crossDomain = await sealRecord({ domain: MODEL_RECORD.domain, payloadType: CAPACITY_RECORD.payloadType }, payload, key)
    await assert.rejects(openCapacityRecord(crossDomain), (e: unknown) => e instanceof MalformedFrameError && e.field === 'capacity record.signature')
  })

  it('records are signed with a KeyObject made once per Ed25519 key: the same bytes as the library signs, other key types as they are', async () => {
    const { RecordEnvelope } = await import('@libp2p/peer-record')
    const kind = { domain: 'fleetmesh-test', payloadType: '/fleetmesh/test/1' }
    const payload = new TextEncoder().encode('what this hop ran')
    const library = async (key: Awaited<ReturnType<typeof generateKeyPair>>): Promise<Uint8Array> =>
      (await RecordEnvelope.seal({ domain: kind.domain, codec: new TextEncoder().encode(kind.payloadType), marshal: () => payload, equals: () => false }, key)).marshal()
    const key = await generateKeyPair('Ed25519')
    assert.equal(fastSigner(key), fastSigner(key), 'made once per key')
    assert.notEqual(fastSigner(key).sign, key.sign)
    // Ed25519 is deterministic: a signature by the same key over the same bytes is the same signature
    const sealed = await sealRecord(kind, payload, key)
    assert.deepEqual(sealed, await library(key))
    assert.deepEqual(await openRecord(kind, sealed, 'record', 1024), { signer: peerIdFromPrivateKey(key).toString(), payload })
    // two keys never share a signer
    const other = await generateKeyPair('Ed25519')
    assert.deepEqual(await sealRecord(kind, payload, other), await library(other))
    assert.notDeepEqual(await sealRecord(kind, payload, other), sealed)
    // another key type signs through the library, and still opens
    const k1 = await generateKeyPair('secp256k1')
    assert.equal(fastSigner(k1), k1)
    assert.equal((await openRecord(kind, await sealRecord(kind, payload, k1), 'record', 1024)).signer, peerIdFromPrivateKey(k1).toString())
  })
})

describe('tensors', () => {
  it('maxAbsDiff: the largest element-wise difference; a NaN anywhere counts as Infinity; shapes must match', () => {
    const t = (xs: number[]): ReturnType<typeof float32Tensor> => float32Tensor('x', [xs.length], new Float32Array(xs))
    assert.equal(maxAbsDiff(t([1, 2, 3]), t([1, 2, 3])), 0)
    assert.equal(maxAbsDiff(t([1, -2, 3]), t([1.5, 2, 2])), 4)
    assert.equal(maxAbsDiff(t([NaN, 2, 3]), t([1, 2, 3])), Infinity, 'NaN first')
    assert.equal(maxAbsDiff(t([1, 9, 3]), t([1, 2, NaN])), Infinity, 'NaN after a larger difference')
    assert.equal(maxAbsDiff(t([1, 2, Infinity]), t([1, 2, 3])), Infinity)
    assert.throws(() => maxAbsDiff(t([1, 2]), t([1, 2, 3])), RangeError)
  })
})
