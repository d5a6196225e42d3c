import assert from 'node:assert/strict'
import { FrameTooLargeError, MalformedFrameError } from '../../protocols/errors.ts'
import { FrameKind, parseErrorHeader, parseRequestHeader } from '../../protocols/infer.ts'
import { MAX_TENSORS } from '../../protocols/limits.ts'
import { decodeFrame, encodeFrame, float32Tensor } from '../../protocols/tensor-codec.ts'
import type { Tensor } from '../../protocols/tensor-codec.ts'
import { decodeHeartbeat, encodeHeartbeat } from '../../protocols/capacity.ts'
import { tensorFromOip, tensorToOip } from '../../protocols/oip.ts'

const header = { job: 'j1', manifest: 'bafk', stage: 0, route: [], deadline: 1 }

function frameWith (tensors: Tensor[]): Uint8Array {
  return encodeFrame({ kind: FrameKind.REQUEST, header, tensors })
}

describe('tensor codec', () => {
  it('round-trips tensors of every shape kind and several dtypes', () => {
    const tensors: Tensor[] = [
      float32Tensor('x', [2, 3], new Float32Array([1, -2, 3.5, 0, 1e-7, -1e9])),
      { name: 'ids', dtype: 'int64', dims: [3], data: new Uint8Array(new BigInt64Array([1n, -2n, 9007199254740993n]).buffer) },
      { name: 'scalar', dtype: 'float32', dims: [], data: new Uint8Array(new Float32Array([42]).buffer) },
      { name: 'empty', dtype: 'uint8', dims: [0, 4], data: new Uint8Array(0) },
      { name: 'mask', dtype: 'bool', dims: [2], data: new Uint8Array([1, 0]) },
      { name: 'ünïcode/名前', dtype: 'float16', dims: [1, 1], data: new Uint8Array([0x00, 0x3c]) }
    ]
    const back = decodeFrame(frameWith(tensors))
    assert.equal(back.kind, FrameKind.REQUEST)
    assert.deepEqual(back.header, header)
    assert.equal(back.tensors.length, tensors.length)
    tensors.forEach((t, i) => {
      assert.equal(back.tensors[i].name, t.name)
      assert.equal(back.tensors[i].dtype, t.dtype)
      assert.deepEqual(back.tensors[i].dims, t.dims)
      assert.deepEqual([...back.tensors[i].data], [...t.data])
    })
  })

  it('rejects a frame over the size limit with FrameTooLargeError, both ways', () => {
    const big = float32Tensor('x', [1024], new Float32Array(1024))
    assert.throws(() => encodeFrame({ kind: 1, header, tensors: [big] }, 1000), (e: unknown) => e instanceof FrameTooLargeError && e.field === 'frame' && e.limit === 1000)
    const bytes = frameWith([big])
    assert.throws(() => decodeFrame(bytes, 1000), FrameTooLargeError)
  })

  it('rejects malformed frames with MalformedFrameError naming the field', () => {
    const good = frameWith([float32Tensor('x', [2], new Float32Array([1, 2]))])
    const cases: Array<[string, Uint8Array, string]> = [
      ['truncated data', good.subarray(0, good.byteLength - 3), 'tensors[0].data'],
      ['trailing bytes', new Uint8Array([...good, 0]), 'frame'],
      ['empty', new Uint8Array(0), 'kind']
    ]
    // header that is not JSON
    const badJson = new Uint8Array(good); badJson[5] = 0x7b; badJson[6] = 0x7b
    cases.push(['header not JSON', badJson, 'header'])
    // unknown dtype code: find the dtype byte after the name
    const hlen = new DataView(good.buffer, good.byteOffset).getUint32(1, true)
    const dtypeAt = 1 + 4 + hlen + 2 + 2 + 1
    const badDtype = new Uint8Array(good); badDtype[dtypeAt] = 200
    cases.push(['dtype', badDtype, 'tensors[0].dtype'])
    // byte length that does not match dims
    const lenAt = dtypeAt + 2 + 4
    const badLen = new Uint8Array(good); new DataView(badLen.buffer).setUint32(lenAt, 4, true)
    cases.push(['byte length', badLen, 'tensors[0].data'])
    for (const [what, bytes, field] of cases) {
      assert.throws(() => decodeFrame(bytes), (e: unknown) => {
        assert.ok(e instanceof MalformedFrameError, `${what}: got ${String(e)}`)
        assert.equal(e.field, field, what)
        assert.equal(e.code, 'ERR_MALFORMED_FRAME')
        return true
      })
    }
  })

  it('limits the tensor count and checks tensors before encoding', () => {
    const many = Array.from({ length: MAX_TENSORS + 1 }, (_, i) => float32Tensor(`t${i}`, [1], new Float32Array(1)))
    assert.throws(() => frameWith(many), FrameTooLargeError)
    assert.throws(() => frameWith([{ name: 'x', dtype: 'float32', dims: [3], data: new Uint8Array(4) }]), (e: unknown) => e instanceof MalformedFrameError && e.field === 'tensors[0].data')
  })
})

describe('infer headers', () => {
  it('accepts a valid request and ignores unknown fields', () => {
    const h = parseRequestHeader({ ...header, route: [{ peer: '12D3KooW', addrs: ['/ip4/127.0.0.1/tcp/1'] }], extra: true })
    assert.equal(h.route[0].peer, '12D3KooW')
    assert.equal((h as any).extra, undefined)
  })

  it('names the bad field', () => {
    const bad: Array<[unknown, string]> = [
      [null, 'header'],
      [{ ...header, job: '' }, 'header.job'],
      [{ ...header, stage: -1 }, 'header.stage'],
      [{ ...header, stage: 1.5 }, 'header.stage'],
      [{ ...header, route: 'x' }, 'header.route'],
      [{ ...header, route: [{ peer: 'p', addrs: [1] }] }, 'header.route[0].addrs'],
      [{ ...header, deadline: 'soon' }, 'header.deadline']
    ]
    for (const [h, field] of bad) {
      assert.throws(() => parseRequestHeader(h), (e: unknown) => e instanceof MalformedFrameError && e.field === field, field)
    }
    assert.throws(() => parseErrorHeader({ stage: 0 }), (e: unknown) => e instanceof MalformedFrameError && e.field === 'header.code')
  })
})

describe('capacity heartbeats', () => {
  it('round-trip and reject bad ones', () => {
    const hb = { v: 1 as const, ts: 5, seq: 2, eligible: true, load: 0, slots: 4, stages: [{ manifest: 'm', stage: 1, cid: 'c', msPerItem: 3 }], models: { a: 'm' }, addrs: ['/ip4/127.0.0.1/tcp/1'] }
    assert.deepEqual(decodeHeartbeat(encodeHeartbeat(hb)), { ...hb, leaving: false })
    assert.throws(() => decodeHeartbeat(new TextEncoder().encode('{"v":2}')), (e: unknown) => e instanceof MalformedFrameError && e.field === 'heartbeat.v')
    assert.throws(() => decodeHeartbeat(new TextEncoder().encode(JSON.stringify({ ...hb, eligible: 'yes' }))), (e: unknown) => e instanceof MalformedFrameError && e.field === 'heartbeat.eligible')
    assert.throws(() => decodeHeartbeat(new Uint8Array(20_000)), FrameTooLargeError)
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
