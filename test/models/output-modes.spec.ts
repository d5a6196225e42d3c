/**
 * Output modes as functions (node/models/output-modes.ts) and on the wire
 * (InferRequest.output): top-k against a full sort, the CLI spelling, the
 * bounds a hostile request cannot pass.
 */
import assert from 'node:assert/strict'
import { MalformedFrameError } from '../../protocols/errors.ts'
import { decodeInferHeader, encodeInferHeader, MAX_TOP_K } from '../../protocols/infer.ts'
import type { InferRequest } from '../../protocols/infer.ts'
import { float32Tensor } from '../../protocols/tensor.ts'
import type { Manifest } from '../../node/models/manifest.ts'
import { applyOutputMode, formatOutputMode, outputFormProblem, OutputModeError, parseOutputMode } from '../../node/models/output-modes.ts'

const classifier = { name: 'cls', outputs: [{ name: 'probs', dtype: 'float32', shape: [null, 10] }] } as unknown as Manifest

describe('output modes', () => {
  it('top-k keeps the k largest of every row, largest first, with their indices', () => {
    const rows = 7; const C = 10; const k = 3
    const x = new Float32Array(rows * C).map((_, i) => Math.sin(i * 12.9898) * 43758.5453 % 1)
    const [values, indices] = applyOutputMode(classifier, { kind: 'top-k', k }, [float32Tensor('probs', [rows, C], x)])
    assert.equal(values.name, 'probs.values')
    assert.deepEqual(indices.dims, [rows, k])
    const v = new Float32Array(values.data.buffer); const ix = new BigInt64Array(indices.data.buffer)
    for (let r = 0; r < rows; r++) {
      const want = [...x.subarray(r * C, (r + 1) * C)].map((val, c) => ({ val, c })).sort((a, b) => b.val - a.val).slice(0, k)
      assert.deepEqual([...v.subarray(r * k, (r + 1) * k)], want.map(w => Math.fround(w.val)))
      assert.deepEqual([...ix.subarray(r * k, (r + 1) * k)].map(Number), want.map(w => w.c))
    }
    assert.equal(outputFormProblem({ kind: 'top-k', k }, [values, indices]), undefined)
    assert.match(outputFormProblem({ kind: 'top-k', k: 4 }, [values, indices]) ?? '', /not top-4/)
    assert.match(outputFormProblem({ kind: 'top-k', k }, [float32Tensor('probs', [rows, C], x)]) ?? '', /not top-3/)
  })

  it('asking for more entries than a row has, or text of a model without a CTC task, is a typed error', () => {
    assert.throws(() => applyOutputMode(classifier, { kind: 'top-k', k: 11 }, [float32Tensor('probs', [1, 10], new Float32Array(10))]), OutputModeError)
    assert.throws(() => applyOutputMode(classifier, { kind: 'ctc-text' }, []), /needs a CTC text model/)
  })

  it('parses the CLI spelling and says what it accepts', () => {
    assert.equal(parseOutputMode('raw'), undefined)
    assert.deepEqual(parseOutputMode('text'), { kind: 'ctc-text' })
    assert.deepEqual(parseOutputMode('top-k=5'), { kind: 'top-k', k: 5 })
    assert.equal(formatOutputMode(parseOutputMode('top-k=5')), 'top-k=5')
    assert.throws(() => parseOutputMode('top-k=0'), /1\.\.1024/)
    assert.throws(() => parseOutputMode('softmax'), /use raw, text .* or top-k=K/)
  })

  it('travels in the request; a k out of bounds is a malformed frame naming the field', () => {
    const request: InferRequest = { job: 'j', manifest: 'm', stage: 0, route: [], deadline: 1, output: { kind: 'top-k', k: 5 } }
    const back = decodeInferHeader(encodeInferHeader({ kind: 'request', request }, []))
    assert.deepEqual(back.message.kind === 'request' && back.message.request.output, { kind: 'top-k', k: 5 })
    for (const k of [0, MAX_TOP_K + 1]) {
      const bad = encodeInferHeader({ kind: 'request', request: { ...request, output: { kind: 'top-k', k } } }, [])
      assert.throws(() => decodeInferHeader(bad), (err: MalformedFrameError) => err instanceof MalformedFrameError && err.message.includes('header.output.k'))
    }
  })
})
