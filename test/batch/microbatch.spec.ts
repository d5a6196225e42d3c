import assert from 'node:assert/strict'
import { chooseMicroBatch, concatBatch, splitBatch } from '../../node/client/microbatch.ts'
import { float32Tensor } from '../../protocols/tensor.ts'
import type { Offer } from '../../protocols/offer.ts'

describe('micro-batches', () => {
  it('concatenate along the batch dimension and split back exactly', () => {
    const items = [1, 2, 3].map(k => [float32Tensor('x', [1, 2, 2], new Float32Array([k, k + 0.5, -k, 0]))])
    const [b] = concatBatch(items)
    assert.deepEqual(b.dims, [3, 2, 2])
    const back = splitBatch([b], [1, 1, 1])
    back.forEach((item, i) => { assert.deepEqual([...item[0].data], [...items[i][0].data]) })
    assert.throws(() => concatBatch([items[0], [float32Tensor('x', [1, 3], new Float32Array(3))]]), /cannot batch/)
    assert.throws(() => splitBatch([b], [1, 1]), /expected 2/)
  })

  it('are chosen only when every stage runs cheaper per item batched', () => {
    const offer = (s: Array<[number, number, number?]>): Offer => ({ type: 'offer', job: 'j', maxInFlight: 4, stages: s.map(([stage, ms, b]) => ({ stage, msPerItem: ms, ...(b !== undefined ? { batchMsPerItem: b } : {}) })) })
    assert.equal(chooseMicroBatch([offer([[0, 10, 5], [1, 10, 6]])], 2), 4)
    assert.equal(chooseMicroBatch([offer([[0, 10, 9.8], [1, 10, 9.9]])], 2), 1, 'no gain')
    assert.equal(chooseMicroBatch([offer([[0, 10, 5]]), offer([[1, 10]])], 2), 1, 'a stage without batched timings')
    assert.equal(chooseMicroBatch([offer([[0, 10, 5]])], 2), 1, 'a stage nobody offers')
  })
})
