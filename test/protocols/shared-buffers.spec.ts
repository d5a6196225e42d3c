/**
 * Shared buffers kept for reuse (protocols/shared-buffers.ts): a buffer given
 * back is the next one of its size, what is kept stays bounded whatever
 * sizes arrive, a run's inputs go back unless an output passes them on, and
 * a tensor copied into a reused buffer holds its own bytes, none left over.
 */
import assert from 'node:assert/strict'
import { Uint8ArrayList } from 'uint8arraylist'
import { MAX_KEPT, MAX_KEPT_BYTES, dropKept, giveBackInputs, giveBackShared, sharedKept, takeShared } from '../../protocols/shared-buffers.ts'
import { describeTensors, float32Tensor, tensorsFromPayload } from '../../protocols/tensor.ts'

describe('shared buffers kept for reuse', () => {
  // in-process meshes of other tests leave buffers of their sizes
  beforeEach(dropKept)
  after(dropKept)

  it('gives a buffer given back to the next taker of its size, and only once', () => {
    const a = takeShared(4096)
    giveBackShared(a)
    giveBackShared(a)
    assert.deepEqual(sharedKept(), { buffers: 1, bytes: 4096 })
    assert.notEqual(takeShared(40), a, 'another size gets a new buffer')
    assert.equal(takeShared(4096), a)
    assert.notEqual(takeShared(4096), a, 'taken once, it is not kept twice')
    assert.deepEqual(sharedKept(), { buffers: 0, bytes: 0 })
  })

  it('keeps at most MAX_KEPT buffers and MAX_KEPT_BYTES, dropping the oldest', () => {
    const first = takeShared(40)
    giveBackShared(first)
    for (let i = 0; i < MAX_KEPT + 3; i++) giveBackShared(new SharedArrayBuffer(24))
    assert.equal(sharedKept().buffers, MAX_KEPT)
    assert.notEqual(takeShared(40), first, 'the oldest went first')
    dropKept()
    const big = Array.from({ length: 7 }, () => new SharedArrayBuffer(6 << 20))
    for (const b of big) giveBackShared(b)
    assert.ok(sharedKept().bytes <= MAX_KEPT_BYTES, `${sharedKept().bytes} bytes kept`)
    assert.equal(sharedKept().buffers, Math.floor(MAX_KEPT_BYTES / (6 << 20)))
    assert.equal(takeShared(6 << 20), big[big.length - 1], 'the latest stays')
    giveBackShared(new SharedArrayBuffer(MAX_KEPT_BYTES + 1))
    assert.ok(sharedKept().bytes <= MAX_KEPT_BYTES, 'a buffer over the bound is not kept')
  })

  it('takes back a run\'s inputs, but not one an output passes on, a view or memory not shared', () => {
    const consumed = new Uint8Array(takeShared(12))
    const passed = new Uint8Array(takeShared(24))
    const view = new Uint8Array(new SharedArrayBuffer(40), 8, 16)
    const own = new Uint8Array(4096)
    giveBackInputs([{ data: consumed }, { data: passed }, { data: view }, { data: own }], [{ data: passed }, { data: new Uint8Array(8) }])
    assert.deepEqual(sharedKept(), { buffers: 1, bytes: 12 })
    assert.equal(takeShared(12), consumed.buffer)
  })

  it('a tensor copied into a reused buffer holds its own bytes, none of the last one\'s', () => {
    const t = float32Tensor('x', [2, 3], Float32Array.from([1, 2, 3, 4, 5, 6]))
    const d = describeTensors([t])
    const stale = takeShared(t.data.byteLength)
    new Uint8Array(stale).fill(0xff)
    giveBackShared(stale)
    // the payload as it arrives: in two pieces
    const payload = new Uint8ArrayList(t.data.subarray(0, 10), t.data.subarray(10))
    const [back] = tensorsFromPayload(d.descriptors, payload, { shared: true })
    assert.equal(back.data.buffer, stale, 'the kept buffer is reused')
    assert.deepEqual([...new Float32Array(back.data.buffer, back.data.byteOffset, 6)], [1, 2, 3, 4, 5, 6])
  })
})
