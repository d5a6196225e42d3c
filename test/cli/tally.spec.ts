/**
 * The swarm's tally (node/swarm/jobs.ts): each result against its reference,
 * whole-model output and text. A result with its reference's very bytes is
 * taken as it is (difference 0, the reference's text); any other is compared
 * element by element and decoded itself.
 */
import assert from 'node:assert/strict'
import { textOf } from '../../node/client/inputs.ts'
import type { InferResult } from '../../node/client/pipeline.ts'
import type { Manifest } from '../../node/models/manifest.ts'
import { dictionaryOf } from '../../node/models/output-modes.ts'
import { Tally } from '../../node/swarm/jobs.ts'
import { float32Tensor, sameTensor } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'

const manifest = { name: 'rec', outputs: [{ name: 'y' }], task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' } } as unknown as Manifest
const C = dictionaryOf(manifest).length

/** CTC probabilities [1, T, C] whose greedy decode picks `classes`, one per step. */
function probs (classes: number[]): Tensor {
  const p = new Float32Array(classes.length * C).fill(0.01)
  classes.forEach((c, t) => { p[t * C + c] = 0.9 })
  return float32Tensor('y', [1, classes.length, C], p)
}
const result = (outputs: Tensor[]): InferResult => ({ manifest: 'm', outputs, route: ['a', 'b'], hops: [{ ms: 3 }, { ms: 4 }], ms: 12, attempts: 1 }) as unknown as InferResult

describe('swarm tally', () => {
  const reference = probs([5, 0, 9, 9, 0, 12])
  // what the decoder itself reads, not what the tally under test says
  const referenceText = textOf(manifest, [reference])!.text

  it('sameTensor: same dtype, shape and bytes, wherever the bytes sit', () => {
    const copy = new Uint8Array(reference.data.byteLength + 8)
    copy.set(reference.data, 8)
    assert.ok(sameTensor(reference, { ...reference, data: copy.subarray(8) }), 'a copy at another offset')
    const changed = new Uint8Array(reference.data); changed[100] ^= 1
    assert.ok(!sameTensor(reference, { ...reference, data: changed }), 'one bit changed')
    assert.ok(!sameTensor(reference, { ...reference, dims: [1, 3, 2 * C] }), 'another shape')
    assert.ok(!sameTensor(reference, { ...reference, dtype: 'int32' }), 'another dtype')
  })

  it('a result with the reference\'s bytes: difference 0, the reference\'s text', () => {
    const tally = new Tally(manifest)
    const job = { label: 'r', input: reference, reference, expected: referenceText }
    const check = tally.add(job, result([{ ...reference, data: new Uint8Array(reference.data) }]))
    assert.deepEqual(check, { diff: 0, text: referenceText, correct: true, wrong: false })
    assert.equal(referenceText.length, 3, `three characters: ${referenceText}`)
  })

  it('any other result is compared element by element and decoded itself', () => {
    const tally = new Tally(manifest)
    const job = { label: 'r', input: reference, reference, expected: referenceText }
    // a small difference that keeps the text
    const close = new Float32Array(reference.data.buffer.slice(0)); close[1] += 1e-6
    const a = tally.add(job, result([float32Tensor('y', reference.dims, close)]))
    assert.ok(a.diff > 0 && a.diff < 1e-4, `diff ${a.diff}`)
    assert.deepEqual([a.text, a.correct, a.wrong], [referenceText, true, false])
    // another character at the last step: the text is the result's own, and wrong
    const other = probs([5, 0, 9, 9, 0, 13])
    const b = tally.add(job, result([other]))
    assert.ok(Math.abs(b.diff - 0.89) < 1e-6, `diff ${b.diff}`)
    assert.notEqual(b.text, referenceText)
    assert.deepEqual([b.correct, b.wrong], [false, true])
    assert.deepEqual([tally.completed, tally.correct, tally.wrong], [2, 1, 1])
  })

  it('the time beside the stages is taken job by job: the median of each job\'s latency less its own stage runs', () => {
    const tally = new Tally(manifest)
    const job = { label: 'r', input: reference, reference, expected: referenceText }
    // [latency, stage runs]: beside them 2, 3 and 15 ms; the medians' difference would say 20 - 8 = 12
    for (const [ms, runs] of [[10, [4, 4]], [30, [20, 7]], [20, [2, 3]]] as const) {
      tally.add(job, { ...result([reference]), ms, hops: runs.map(r => ({ peer: 'p', stage: 0, ms: r })) })
    }
    assert.deepEqual([tally.p(50), tally.computeP50(), tally.overheadP50()], [20, 8, 3])
  })
})
