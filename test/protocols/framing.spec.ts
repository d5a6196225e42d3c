import assert from 'node:assert/strict'
import { streamPair } from '@libp2p/utils'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { FrameTooLargeError, MalformedFrameError } from '../../protocols/errors.ts'
import { frameStream, frameTaps, frameTensors } from '../../protocols/framing.ts'
import { encodeInferHeader } from '../../protocols/infer.ts'
import type { InferMessage, InferRequest } from '../../protocols/infer.ts'
import { MAX_ROUTE_HOPS, MAX_TENSORS } from '../../protocols/limits.ts'
import { asFloat32, describeTensors, float32Tensor, tensorsFromPayload } from '../../protocols/tensor.ts'
import type { Tensor, TensorDescriptor } from '../../protocols/tensor.ts'
import { tensorFromOip, tensorToOip } from '../../protocols/oip.ts'

const request: InferRequest = { job: 'j1', manifest: 'bafk', stage: 0, route: [], deadline: 1 }
const req: InferMessage = { kind: 'request', request }

/** Writes raw bytes on one end of a stream pair and reads a frame on the other. */
async function readRaw (bytes: Uint8Array, limit?: number): Promise<unknown> {
  const [a, b] = await streamPair()
  a.send(bytes)
  await a.close()
  return await frameStream(b, limit).read({ signal: AbortSignal.timeout(2000) })
}

/** `uvarint(n) | header` for a message with these descriptors, and a payload. */
function rawFrame (m: InferMessage, descriptors: TensorDescriptor[], payload: Uint8Array): Uint8Array {
  const h = encodeInferHeader(m, descriptors)
  return new Uint8ArrayList(varint.encode(h.byteLength), h, payload).subarray()
}

describe('infer frames on a stream', () => {
  it('round-trip tensors of every shape kind and several dtypes', async () => {
    const tensors: Tensor[] = [
      float32Tensor('x', [2, 3], new Float32Array([1, -2, 3.5, 0, 1e-7, -1e9])),
      { name: 'ids', dtype: 'int64', dims: [3], data: new Uint8Array(new BigInt64Array([1n, -2n, 9007199254740993n]).buffer) },
      { name: 'scalar', dtype: 'float32', dims: [], data: new Uint8Array(new Float32Array([42]).buffer) },
      { name: 'empty', dtype: 'uint8', dims: [0, 4], data: new Uint8Array(0) },
      { name: 'mask', dtype: 'bool', dims: [2], data: new Uint8Array([1, 0]) },
      { name: 'ünïcode/名前', dtype: 'float16', dims: [1, 1], data: new Uint8Array([0x00, 0x3c]) }
    ]
    const [a, b] = await streamPair()
    await frameStream(a).write(req, tensors)
    const f = await frameStream(b).read()
    assert.deepEqual(f.message, req)
    const back = frameTensors(f)
    assert.equal(back.length, tensors.length)
    tensors.forEach((t, i) => {
      assert.equal(back[i].name, t.name)
      assert.equal(back[i].dtype, t.dtype)
      assert.deepEqual(back[i].dims, t.dims)
      assert.deepEqual([...back[i].data], [...t.data])
    })
  })

  it('relays a payload under a new header without decoding it', async () => {
    const [a, b] = await streamPair()
    const [c, d] = await streamPair()
    const x = float32Tensor('x', [4], new Float32Array([1, 2, 3, 4]))
    const t1 = float32Tensor('h1', [2], new Float32Array([5, 6]))
    const t0 = float32Tensor('h0', [1], new Float32Array([7]))
    await frameStream(a).write({ kind: 'result', result: { job: 'j', receipts: [new Uint8Array([2])] } }, [x], { taps: [{ stage: 1, tensors: [t1] }] })
    const got = await frameStream(b).read()
    await frameStream(c).relay({ kind: 'result', result: { job: 'j', receipts: [new Uint8Array([1]), new Uint8Array([2])] } }, got, { taps: [{ stage: 0, tensors: [t0] }] })
    const relayed = await frameStream(d).read()
    assert.equal(relayed.message.kind === 'result' && relayed.message.result.receipts.length, 2)
    assert.equal(frameTensors(relayed).length, 1, 'taps are not among the result tensors')
    assert.deepEqual([...frameTensors(relayed)[0].data], [...x.data])
    const taps = frameTaps(relayed)
    assert.deepEqual([...taps.keys()], [1, 0], 'downstream taps first, then the relaying hop\'s')
    assert.deepEqual([...taps.get(1)![0].data], [...t1.data])
    assert.deepEqual([...taps.get(0)![0].data], [...t0.data])
  })

  it('refuse frames over the size limit with FrameTooLargeError, both ways', async () => {
    const big = float32Tensor('x', [1024], new Float32Array(1024))
    const [a] = await streamPair()
    await assert.rejects(frameStream(a, 1000).write(req, [big]), (e: unknown) => e instanceof FrameTooLargeError && e.limit === 1000)
    const { descriptors, parts } = describeTensors([big])
    await assert.rejects(readRaw(rawFrame(req, descriptors, parts[0]), 1000), FrameTooLargeError)
    // a header length past the header limit
    await assert.rejects(readRaw(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x08])), (e: unknown) => e instanceof FrameTooLargeError && e.field === 'header')
  })

  it('refuse malformed frames with MalformedFrameError naming the field', async () => {
    const good = describeTensors([float32Tensor('x', [2], new Float32Array([1, 2]))])
    const d = good.descriptors[0]
    const cases: Array<[string, Uint8Array, string]> = [
      ['header not protobuf', new Uint8Array([3, 0xff, 0xff, 0xff]), 'header'],
      ['unknown frame kind', new Uint8Array([2, 0x4a, 0x00]), 'header.kind'],
      ['dtype', rawFrame(req, [{ ...d, dtype: 200 as never }], good.parts[0]), 'tensors[0].dtype'],
      ['encoding', rawFrame(req, [{ ...d, encoding: 7 as never }], good.parts[0]), 'tensors[0].encoding'],
      ['byte length', rawFrame(req, [{ ...d, encodedLength: 4 }], good.parts[0].subarray(0, 4)), 'tensors[0].data'],
      ['empty job', rawFrame({ kind: 'request', request: { ...request, job: '' } }, [], new Uint8Array()), 'header.job'],
      ['route too long', rawFrame({ kind: 'request', request: { ...request, route: Array.from({ length: MAX_ROUTE_HOPS + 1 }, () => ({ peer: 'p', addrs: [] })) } }, [], new Uint8Array()), 'header.route'],
      ['too many addrs', rawFrame({ kind: 'request', request: { ...request, route: [{ peer: 'p', addrs: Array.from({ length: 17 }, () => '/ip4/1.2.3.4/tcp/1') }] } }, [], new Uint8Array()), 'header.route[0].addrs']
    ]
    for (const [what, bytes, field] of cases) {
      await assert.rejects(readRaw(bytes), (e: unknown) => {
        assert.ok(e instanceof MalformedFrameError, `${what}: got ${String(e)}`)
        assert.equal(e.field, field, what)
        assert.equal(e.code, 'ERR_MALFORMED_FRAME')
        return true
      })
    }
  })

  it('limit the tensor count and check tensors before writing', async () => {
    const [a] = await streamPair()
    const many = Array.from({ length: MAX_TENSORS + 1 }, (_, i) => float32Tensor(`t${i}`, [1], new Float32Array(1)))
    await assert.rejects(frameStream(a).write(req, many), FrameTooLargeError)
    await assert.rejects(frameStream(a).write(req, [{ name: 'x', dtype: 'float32', dims: [3], data: new Uint8Array(4) }]), (e: unknown) => e instanceof MalformedFrameError && e.field === 'tensors[0].data')
  })
})

describe('tensor bytes at any offset', () => {
  it('payload tensors at odd offsets (inside Node Buffers) come out aligned and intact', () => {
    const values = new Float32Array([1.5, -2, 3])
    const pool = Buffer.alloc(64)
    Buffer.from(values.buffer).copy(pool, 3)
    const { descriptors } = describeTensors([float32Tensor('x', [3], values)])
    const [t] = tensorsFromPayload(descriptors, pool.subarray(3, 15))
    assert.equal(t.data.byteOffset % 8, 0)
    assert.deepEqual([...asFloat32(t)], [...values])
    assert.deepEqual(tensorToOip({ ...t, data: pool.subarray(3, 15) }).data, [1.5, -2, 3])
  })

  it('shared: raw tensors spread over many chunks come out whole, in memory threads share; encoded ones as before', () => {
    const a = float32Tensor('a', [1000], Float32Array.from({ length: 1000 }, (_, i) => i / 7))
    const b = float32Tensor('b', [3], new Float32Array([1, 2, 3]))
    const c = float32Tensor('c', [500], Float32Array.from({ length: 500 }, (_, i) => -i))
    const { descriptors, parts } = describeTensors([a, b, c], { float16: false })
    // the payload as a stream hands it up: odd-sized chunks that cut through tensors
    const bytes = new Uint8Array(Buffer.concat(parts))
    const list = new Uint8ArrayList()
    for (let at = 0; at < bytes.byteLength; at += 333) list.append(bytes.subarray(at, Math.min(at + 333, bytes.byteLength)))
    const shared = tensorsFromPayload(descriptors, list, { shared: true })
    const plain = tensorsFromPayload(descriptors, list)
    for (const [i, t] of shared.entries()) {
      assert.ok(t.data.buffer instanceof SharedArrayBuffer, t.name)
      assert.equal(t.data.byteLength, t.data.buffer.byteLength)
      assert.deepEqual([...asFloat32(t)], [...asFloat32(plain[i])], t.name)
    }
    assert.ok(!(plain[0].data.buffer instanceof SharedArrayBuffer))
    // float16 travels encoded: decoded into memory of its own, as without `shared`
    const half = describeTensors([a], { float16: true })
    const [h] = tensorsFromPayload(half.descriptors, new Uint8ArrayList(...half.parts), { shared: true })
    assert.ok(!(h.data.buffer instanceof SharedArrayBuffer))
    assert.ok(Math.abs(asFloat32(h)[700] - 100) < 0.1)
  })
})

describe('Open Inference Protocol JSON tensors', () => {
  it('round-trip and name bad fields', () => {
    const t = tensorFromOip({ name: 'x', shape: [2, 2], datatype: 'FP32', data: [[1, 2], [3, 4.5]] })
    assert.deepEqual(tensorToOip(t), { name: 'x', datatype: 'FP32', shape: [2, 2], data: [1, 2, 3, 4.5] })
    assert.deepEqual(tensorToOip(tensorFromOip({ name: 'i', shape: [2], datatype: 'INT64', data: [7, -1] })).data, [7, -1])
    assert.throws(() => tensorFromOip({ name: 'x', shape: [3], datatype: 'FP32', data: [1] }), (e: unknown) => e instanceof MalformedFrameError && e.field === 'tensor.data')
    assert.throws(() => tensorFromOip({ name: 'x', shape: [1], datatype: 'BYTES', data: ['a'] }), (e: unknown) => e instanceof MalformedFrameError && e.field === 'tensor.datatype')
  })
})
