/**
 * Tensors compressed on the wire where it pays (TENSOR_ENCODING_ZSTD,
 * protocols/compression.ts): lossless, only when it shrinks them far, and a
 * receiver that allows a compressed tensor exactly the bytes its dims need.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { zstdCompressSync } from 'node:zlib'
import { streamPair } from '@libp2p/utils'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { COMPRESS_MAX_RATIO, COMPRESS_MIN_BYTES, compressIfItPays, compressionFor, decompressExactly } from '../../protocols/compression.ts'
import { FrameTooLargeError, MalformedFrameError, OverBudgetError } from '../../protocols/errors.ts'
import { frameStream, frameTensors } from '../../protocols/framing.ts'
import { TensorEncoding } from '../../protocols/gen/tensor_pb.ts'
import { encodeInferHeader } from '../../protocols/infer.ts'
import type { InferMessage } from '../../protocols/infer.ts'
import { checkDescriptors, dtypeCode, float32Tensor, tensorsFromPayload } from '../../protocols/tensor.ts'
import type { Tensor, TensorDescriptor } from '../../protocols/tensor.ts'
import { sampleLine } from '../utils/samples.ts'

const req: InferMessage = { kind: 'request', request: { job: 'z', manifest: 'bafk', stage: 0, route: [], deadline: 1 } }

/** Writes `tensors` with `compress` on one end of a stream pair; the frame read on the other. */
async function carried (tensors: Tensor[], opts: { compress?: number, float16?: boolean } = {}): Promise<Awaited<ReturnType<ReturnType<typeof frameStream>['read']>>> {
  const [a, b] = await streamPair()
  const reading = frameStream(b).read({ signal: AbortSignal.timeout(5000) })
  await frameStream(a).write(req, tensors, opts)
  return await reading
}

/** A float32 descriptor of `elements` carried as `encodedLength` bytes of Zstandard. */
const zstdDescriptor = (elements: number, encodedLength: number): TensorDescriptor =>
  ({ name: 'x', dtype: dtypeCode('float32'), dims: [1, elements], encoding: TensorEncoding.ZSTD, encodedLength })

describe('tensors compressed where it pays', () => {
  it('a text line\'s input travels in a few KB and reads back bit for bit', async () => {
    const x = sampleLine('01.png')
    const frame = await carried([x], { compress: COMPRESS_MAX_RATIO })
    const [d] = frame.tensors
    assert.equal(d.encoding, TensorEncoding.ZSTD)
    assert.ok(d.encodedLength < x.data.byteLength / 20, `${d.encodedLength} of ${x.data.byteLength} bytes`)
    assert.equal(frame.payload.byteLength, d.encodedLength)
    const [back] = frameTensors(frame)
    assert.deepEqual([back.name, back.dtype, back.dims], [x.name, x.dtype, x.dims])
    assert.ok(Buffer.from(back.data).equals(x.data), 'the same bytes')
    assert.equal(back.data.byteOffset % 8, 0, 'aligned for typed-array views')
  })

  it('tensors that do not shrink far, small ones, float16 ones and writes without `compress` go as they are', async () => {
    const noise = { name: 'h', dtype: 'float32' as const, dims: [1, 115_200], data: new Uint8Array(randomBytes(460_800)) }
    const small = float32Tensor('s', [1024], new Float32Array(1024))
    assert.ok(small.data.byteLength < COMPRESS_MIN_BYTES)
    const frame = await carried([noise, small], { compress: COMPRESS_MAX_RATIO })
    assert.deepEqual(frame.tensors.map(d => d.encoding), [TensorEncoding.RAW, TensorEncoding.RAW])
    const x = sampleLine('02.png')
    assert.equal((await carried([x])).tensors[0].encoding, TensorEncoding.RAW, 'compression is asked for, never assumed')
    assert.equal((await carried([x], { compress: COMPRESS_MAX_RATIO, float16: true })).tensors[0].encoding, TensorEncoding.FLOAT16, 'float16 wins')
    // half compressible: the sample says no before the whole is tried
    const half = new Uint8Array(200_000); half.set(randomBytes(100_000), 0)
    assert.equal(compressIfItPays(half), undefined)
  })

  it('the link decides how far a tensor must shrink: not at all on this host or a fast link, far when not measured, a little on a slow one', () => {
    assert.equal(compressionFor('auto', { sameHost: true }), undefined)
    assert.equal(compressionFor('auto', { sameHost: false, bytesPerMs: 400_000 }), undefined, 'a link faster than compressing')
    assert.equal(compressionFor('auto', { sameHost: false }), COMPRESS_MAX_RATIO, 'not measured yet')
    assert.equal(compressionFor('auto', { sameHost: false, bytesPerMs: 2_500 }), 0.9, '20 Mbit/s')
    assert.equal(compressionFor('auto', { sameHost: false, bytesPerMs: 100_000 }), 0.5)
    assert.equal(compressionFor('always', { sameHost: true }), COMPRESS_MAX_RATIO)
    assert.equal(compressionFor('off', { sameHost: false, bytesPerMs: 2_500 }), undefined)
    // an activation-like tensor (two bytes in four vary, as a real hand-off comes to 0.62-0.74): compressed over the slow link only
    const noise = randomBytes(200_000)
    const act = new Uint8Array(400_000); for (let i = 0; i < act.length; i += 4) { act[i] = noise[i >> 1]; act[i + 1] = noise[(i >> 1) + 1]; act[i + 3] = 0x3f }
    assert.equal(compressIfItPays(act, compressionFor('auto', { sameHost: false })), undefined)
    const packed = compressIfItPays(act, compressionFor('auto', { sameHost: false, bytesPerMs: 2_500 }))
    assert.ok(packed !== undefined && packed.byteLength < act.byteLength * 0.9, `${packed?.byteLength} bytes`)
  })

  it('a compressed length at or above the raw one, or zero, is malformed; what all tensors decode to is bounded too', () => {
    assert.throws(() => checkDescriptors([zstdDescriptor(1000, 4000)], 1 << 20), (e: Error) => e instanceof MalformedFrameError && /tensors\[0\]\.data/.test(e.message) && /compressed must be fewer/.test(e.message))
    assert.throws(() => checkDescriptors([zstdDescriptor(1000, 0)], 1 << 20), MalformedFrameError)
    assert.equal(checkDescriptors([zstdDescriptor(1000, 100)], 1 << 20), 100)
    // 100 bytes on the wire that would be 4 MB: over a 1 MiB limit before a byte is read
    assert.throws(() => checkDescriptors([zstdDescriptor(1_000_000, 100)], 1 << 20), (e: Error) => e instanceof FrameTooLargeError && /tensors decoded/.test(e.message))
    assert.throws(() => checkDescriptors([{ ...zstdDescriptor(10, 8), encoding: 7 as TensorEncoding }], 1 << 20), /unknown encoding 7/)
  })

  it('a tensor that inflates past its dims stops there; one short of them or not Zstandard is refused, naming the tensor', () => {
    // 64 MiB of zeros in about 2 KB: a tensor of 1,024 floats may take 4,096 bytes of it and no more
    const bomb = zstdCompressSync(new Uint8Array(64 << 20))
    assert.ok(bomb.byteLength < 8192)
    assert.throws(() => tensorsFromPayload([zstdDescriptor(1024, bomb.byteLength)], bomb), (e: Error) => e instanceof MalformedFrameError && /tensor x/.test(e.message) && /more than the 4096 bytes/.test(e.message))
    const short = zstdCompressSync(new Uint8Array(4000))
    assert.throws(() => decompressExactly(short, 4096, 'tensor x'), /decompresses to 4000 bytes, its dims need 4096/)
    assert.throws(() => decompressExactly(new Uint8Array(100).fill(9), 4096, 'tensor x'), /tensor x: is not a Zstandard frame/)
  })

  it('a frame\'s memory budget counts what its compressed tensors decode to', async () => {
    const x = sampleLine('03.png')
    const packed = compressIfItPays(x.data)!
    const h = encodeInferHeader(req, [{ name: 'x', dtype: dtypeCode('float32'), dims: x.dims, encoding: TensorEncoding.ZSTD, encodedLength: packed.byteLength }])
    const asked: number[] = []
    const [a, b] = await streamPair()
    a.send(new Uint8ArrayList(varint.encode(h.byteLength), h, packed).subarray())
    const reading = frameStream(b).read({ signal: AbortSignal.timeout(2000), reserve: bytes => { asked.push(bytes); return bytes < 100_000 } })
    await assert.rejects(reading, OverBudgetError)
    assert.deepEqual(asked, [packed.byteLength + x.data.byteLength])
  })
})
