/**
 * float16 hand-offs on the wire (TensorEncoding FLOAT16): the conversions
 * are exact where they must be and round to nearest even where they cannot
 * be; a frame carries float32 tensors in half the bytes; descriptors that
 * lie about the encoding are refused naming the field.
 */
import assert from 'node:assert/strict'
import { streamPair } from '@libp2p/utils'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { MalformedFrameError } from '../../protocols/errors.ts'
import { decodeFloat16, encodeFloat16, roundToFloat16 } from '../../protocols/float16.ts'
import { frameStream, frameTensors } from '../../protocols/framing.ts'
import { TensorEncoding } from '../../protocols/gen/tensor_pb.ts'
import { encodeInferHeader } from '../../protocols/infer.ts'
import type { InferMessage } from '../../protocols/infer.ts'
import { asFloat32, checkDescriptors, dtypeCode, float32Tensor } from '../../protocols/tensor.ts'
import { MANIFEST_FORMAT, decodeManifest, encodeManifest } from '../../node/models/manifest.ts'
import type { Manifest } from '../../node/models/manifest.ts'

const halves = (xs: number[]): number[] => [...new Uint16Array(encodeFloat16(new Uint8Array(new Float32Array(xs).buffer)).buffer)]
const floats = (hs: number[]): number[] => [...new Float32Array(decodeFloat16(new Uint8Array(new Uint16Array(hs).buffer)).buffer)]
const req: InferMessage = { kind: 'request', request: { job: 'j', manifest: 'm', stage: 1, route: [], deadline: 1 } }

describe('float16 hand-offs', () => {
  it('every half value decodes to a float32 that encodes back to it; positive halves in order', () => {
    const all = new Uint16Array(65536).map((_, i) => i)
    const f = new Float32Array(decodeFloat16(new Uint8Array(all.buffer)).buffer)
    const back = new Uint16Array(encodeFloat16(new Uint8Array(f.buffer)).buffer)
    for (let h = 0; h < 65536; h++) {
      const nan = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0
      if (nan) assert.ok(Number.isNaN(f[h]), `0x${h.toString(16)} is NaN`)
      else assert.equal(back[h], h, `0x${h.toString(16)} -> ${f[h]} -> 0x${back[h].toString(16)}`)
    }
    for (let h = 1; h <= 0x7c00; h++) assert.ok(f[h] > f[h - 1], `0x${h.toString(16)} follows 0x${(h - 1).toString(16)}`)
    assert.deepEqual(floats([0x3c00, 0x7bff, 0x0001, 0xc000, 0x7c00, 0x8000]), [1, 65504, 2 ** -24, -2, Infinity, -0])
  })

  it('rounds to the nearest half, ties to even; too large is infinity; NaN stays NaN', () => {
    assert.deepEqual(halves([0.1, 65519, 65520, 1e6, -1e6, 2 ** -25, 2 ** -25 * 1.0001, 3 * 2 ** -25]), [0x2e66, 0x7bff, 0x7c00, 0x7c00, 0xfc00, 0x0000, 0x0001, 0x0002])
    // midpoints between neighbours go to the even one, in normal and subnormal ranges
    const f = (h: number): number => floats([h])[0]
    for (const h of [0x0002, 0x0101, 0x3c00, 0x3c01, 0x5555, 0x7bfe]) {
      const mid = (f(h) + f(h + 1)) / 2
      assert.equal(halves([mid])[0], (h & 1) === 0 ? h : h + 1, `midpoint after 0x${h.toString(16)}`)
    }
    assert.ok(Number.isNaN(floats(halves([NaN]))[0]))
    // rounding in place equals encoding then decoding
    const x = new Float32Array(1000).map((_, i) => Math.sin(i) * 10 ** ((i % 9) - 4))
    assert.deepEqual([...new Float32Array(roundToFloat16(new Uint8Array(x.buffer)).buffer)], floats(halves([...x])))
  })

  it('agrees with plain arithmetic on random floats, any length, any alignment, across chunks', () => {
    // the nearest half by arithmetic on numbers: scale to an integer count of half-ulps, round ties to even
    const nearest = (f: number): number => {
      const a = Math.abs(f)
      if (a >= 65520) return Math.sign(f) * Infinity
      let e = Math.max(Math.floor(Math.log2(a)), -14)
      if (2 ** e > a) e--
      if (2 ** (e + 1) <= a) e++
      const ulp = 2 ** (Math.max(e, -14) - 10)
      const q = a / ulp
      const r = Math.floor(q)
      const up = q - r > 0.5 || (q - r === 0.5 && r % 2 === 1)
      return (f < 0 || Object.is(f, -0) ? -1 : 1) * (up ? r + 1 : r) * ulp
    }
    for (const n of [1, 7, 9, 4099, 32768 + 13]) {
      const bits = new Uint32Array(n).map(() => (Math.random() * 2 ** 32) >>> 0)
      // a third of them small (subnormal halves and below), a third in the normal range
      for (let i = 0; i < n; i += 3) bits[i] = (bits[i] & 0x80ffffff) | ((95 + (i % 25)) << 23)
      for (let i = 1; i < n; i += 3) bits[i] = (bits[i] & 0x80ffffff) | ((110 + (i % 35)) << 23)
      const raw = new Uint8Array(bits.buffer)
      const odd = new Uint8Array(raw.byteLength + 1).subarray(1)
      odd.set(raw)
      const f = new Float32Array(bits.buffer)
      const want = halves([...f].map(x => Number.isNaN(x) ? NaN : nearest(x)))
      const got = [...new Uint16Array(encodeFloat16(odd).slice().buffer)]
      for (let i = 0; i < n; i++) {
        if (Number.isNaN(f[i])) assert.equal(got[i] & 0x7e00, 0x7e00, `NaN at ${i} stays NaN`)
        else assert.equal(got[i], want[i], `${n} elements, [${i}] = ${f[i]}`)
      }
      const rounded = roundToFloat16(odd)
      assert.deepEqual(rounded, decodeFloat16(encodeFloat16(odd)), `${n} elements: rounding is encoding then decoding`)
      assert.deepEqual(encodeFloat16(rounded), encodeFloat16(raw), 'the rounded copy sends the same halves')
    }
  })

  it('a frame carries float32 tensors as float16 in half the bytes, and they read back as float32', async () => {
    const x = new Float32Array(4096).map((_, i) => Math.cos(i))
    const rounded = float32Tensor('h', [64, 64], new Float32Array(roundToFloat16(new Uint8Array(x.buffer)).buffer))
    const ids = { name: 'ids', dtype: 'int64' as const, dims: [2], data: new Uint8Array(16) }
    const [a, b] = await streamPair()
    const reading = frameStream(b).read({ signal: AbortSignal.timeout(2000) })
    const write = frameStream(a).write(req, [rounded, ids], { float16: true })
    const frame = await reading
    await write
    assert.deepEqual(frame.tensors.map(d => [d.encoding, d.encodedLength]), [[TensorEncoding.FLOAT16, 4096 * 2], [TensorEncoding.RAW, 16]])
    assert.equal(frame.payload.byteLength, 4096 * 2 + 16)
    const [h] = frameTensors(frame)
    assert.equal(h.dtype, 'float32')
    assert.deepEqual(asFloat32(h), asFloat32(rounded), 'exact for values already rounded to float16')
  })

  it('a descriptor that says float16 for a tensor that is not float32, or the wrong length, is malformed', async () => {
    const bad = (d: object): () => number => () => checkDescriptors([{ name: 't', dims: [4], encodedLength: 8, ...d } as never], 1 << 20)
    assert.throws(bad({ dtype: dtypeCode('int64'), encoding: TensorEncoding.FLOAT16 }), (e: MalformedFrameError) => e instanceof MalformedFrameError && /tensors\[0\]\.encoding/.test(e.message) && /float32 tensors only/.test(e.message))
    assert.throws(bad({ dtype: dtypeCode('float32'), encoding: TensorEncoding.FLOAT16, encodedLength: 16 }), /declares 16 bytes/)
    assert.equal(bad({ dtype: dtypeCode('float32'), encoding: TensorEncoding.FLOAT16 })(), 8)
    // and on a stream: the frame is refused with a typed error
    const h = encodeInferHeader(req, [{ name: 't', dtype: dtypeCode('int32'), dims: [2], encoding: TensorEncoding.FLOAT16, encodedLength: 4 }])
    const [a, b] = await streamPair()
    a.send(new Uint8ArrayList(varint.encode(h.byteLength), h, new Uint8Array(4)).subarray())
    await a.close()
    await assert.rejects(frameStream(b).read({ signal: AbortSignal.timeout(2000) }), MalformedFrameError)
  })

  it('a manifest states its fp16 hand-offs with a measured error, or is refused', () => {
    const base: Manifest = { format: MANIFEST_FORMAT, name: 'm', version: '1', source: 's', inputs: [], outputs: [], probeShapes: {}, balancedBy: 'flops', stages: [{ index: 0, cid: 'c', bytes: 1, nodes: 1, params: 0, flops: 0, estMs: 0, share: 1, inputs: [], outputs: [], handOffBytes: 0 }] } as unknown as Manifest
    assert.equal(decodeManifest(encodeManifest({ ...base, handOff: { encoding: 'fp16', maxError: 0.002 } })).handOff?.maxError, 0.002)
    assert.throws(() => decodeManifest(encodeManifest({ ...base, handOff: { encoding: 'int4' as 'fp16', maxError: 0 } })), /handOff/)
    assert.throws(() => decodeManifest(encodeManifest({ ...base, handOff: { encoding: 'fp16', maxError: -1 } })), /handOff/)
  })
})
