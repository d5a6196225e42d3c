import assert from 'node:assert/strict'
import { lpStream, streamPair } from '@libp2p/utils'
import { BatchRunner } from '../../node/client/batch.ts'
import type { ResolvedModel } from '../../node/client/resolver.ts'
import { chooseMicroBatch, concatBatch, splitBatch } from '../../node/client/microbatch.ts'
import { asFloat32, float32Tensor } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { TEXT_OUTPUT } from '../../node/models/output-modes.ts'
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

  it('count the mesh\'s own cost of a job, paid once per micro-batch: pp-ocrv4-rec\'s timings pay with it, a batch that runs much slower does not', () => {
    const offer = (s: Array<[number, number, number]>): Offer => ({ type: 'offer', job: 'j', maxInFlight: 4, stages: s.map(([stage, ms, b]) => ({ stage, msPerItem: ms, batchMsPerItem: b })) })
    // rec in two on the bench machine: 18 + 13 ms an item alone, about 13% more per item at batch 4
    const rec = [offer([[0, 18, 20.3], [1, 13, 14.7]])]
    assert.equal(chooseMicroBatch(rec, 2), 1, 'compute alone: no gain')
    assert.equal(chooseMicroBatch(rec, 2, 0.9, 3), 1, 'a mesh job that costs little')
    assert.equal(chooseMicroBatch(rec, 2, 0.9, 12), 4, 'the 10-13 ms a job measured here')
    assert.equal(chooseMicroBatch([offer([[0, 18, 30], [1, 13, 22]])], 2, 0.9, 12), 1, 'batched items 1.7x as dear')
  })
})

describe('micro-batches on auto, decided again from the first jobs', () => {
  /** A batch of `n` items on a 2-stage model whose vehicles run no cheaper batched, through a stand-in for the mesh that costs `meshMs` a job beside 10 ms per item per stage. */
  const run = async (meshMs: number, n = 40, outputs = (inputs: Tensor[]): Tensor[] => inputs): Promise<{ groups: number[], r: Awaited<ReturnType<BatchRunner['run']>> }> => {
    const groups: number[] = []
    const [a] = await streamPair()
    const offer: Offer = { type: 'offer', job: 'j', maxInFlight: 4, stages: [0, 1].map(stage => ({ stage, msPerItem: 10, batchMsPerItem: 10 })) }
    const model = { cid: 'm', manifest: { stages: [{ index: 0 }, { index: 1 }], inputs: [{ name: 'x', shape: [null, 4] }] } } as unknown as ResolvedModel
    const runner = new BatchRunner({
      pubsub: { publish: async () => ({ recipients: [] }), subscribe: () => {} } as never,
      addresses: { getMultiaddrs: () => [] },
      offers: { listen: async (_job, handle) => { setImmediate(() => { void handle({ stream: a, from: 'v', offer, lp: lpStream(a) }) }); return async () => {} } },
      pipeline: {
        infer: async (_m, inputs) => {
          const items = inputs[0].dims[0]
          groups.push(items)
          await new Promise(resolve => setImmediate(resolve))
          return { manifest: 'm', outputs: outputs(inputs), route: ['v', 'v'], hops: [0, 1].map(stage => ({ peer: 'v', stage, ms: 10 * items })), ms: meshMs + 20 * items, attempts: 1 }
        }
      }
    }, model, { offerWaitMs: 200 })
    const r = await runner.run(Array.from({ length: n }, (_, i) => [float32Tensor('x', [1, 4], new Float32Array(4).fill(i))]))
    await a.close().catch(() => {})
    return { groups, r }
  }

  it('a mesh that costs more than batching saves goes to groups of 4 after 8 jobs alone; each item comes back once, its own', async () => {
    const { groups, r } = await run(20)
    assert.deepEqual(groups.slice(0, 8), [1, 1, 1, 1, 1, 1, 1, 1])
    assert.ok(groups.filter(g => g === 4).length >= 7, `${groups}`)
    assert.deepEqual([r.done, r.failed, r.duplicates, r.microBatch, r.meshMs], [40, 0, 0, 4, 20])
    r.results.forEach((x, i) => { assert.ok(!(x instanceof Error) && x !== undefined && asFloat32(x.outputs[0])[0] === i, `item ${i}`) })
  })

  it('an item\'s text comes back as it would alone, without its group\'s padding', async () => {
    // the last hop's text for a group: one row per item, padded to the longest (item i reads i % 5 + 1 letters)
    const texts = (inputs: Tensor[]): Tensor[] => {
      const rows = asFloat32(inputs[0]).filter((_, k) => k % 4 === 0).map(v => v % 5 + 1)
      const width = Math.max(...rows)
      const data = new Uint8Array(rows.length * width)
      rows.forEach((len, r) => { data.fill(97, r * width, r * width + len) })
      return [{ name: TEXT_OUTPUT, dtype: 'uint8', dims: [rows.length, width], data }]
    }
    const { groups, r } = await run(20, 40, texts)
    assert.ok(groups.some(g => g === 4))
    r.results.forEach((x, i) => { assert.ok(!(x instanceof Error) && x !== undefined && x.outputs[0].dims[1] === i % 5 + 1, `item ${i}: [${x instanceof Error ? x.message : x?.outputs[0].dims}]`) })
  })

  it('a mesh that costs little keeps items alone', async () => {
    const { groups, r } = await run(2)
    assert.ok(groups.every(g => g === 1))
    assert.deepEqual([r.done, r.microBatch, r.meshMs], [40, 1, 2])
  })
})
