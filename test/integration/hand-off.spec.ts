/**
 * fp16 hand-offs (issue 13), opt-in per model: the manifest states the error
 * measured when sharding, the activation between two vehicles travels as
 * float16 (half the bytes), and every result stays within the stated bound
 * of the whole model's. Real libp2p nodes, real onnxruntime.
 */
import assert from 'node:assert/strict'
import { textOf } from '../../node/client/inputs.ts'
import { BUILTIN_MODELS, sampleInputs } from '../../node/models/catalog.ts'
import { resultTolerance } from '../../node/models/manifest.ts'
import { runSession } from '../../node/models/ort.ts'
import { TensorEncoding } from '../../protocols/gen/tensor_pb.ts'
import { InferErrorCode } from '../../protocols/infer.ts'
import { maxAbsDiff } from '../../protocols/tensor.ts'
import type { TensorDescriptor } from '../../protocols/tensor.ts'
import { startRogue } from '../utils/rogue.ts'
import { sampleLine, recMesh } from '../utils/samples.ts'

describe('fp16 hand-offs: half the bytes between vehicles, within the stated error', function () {
  this.timeout(120_000)
  const rec = recMesh(2, [[0], [1]], { shard: { handOff: 'fp16', handOffInputs: sampleInputs(BUILTIN_MODELS['pp-ocrv4-rec'], 'x') }, mesh: { verify: 'off' } })

  it('the manifest states the error fp16 makes, measured on the sample lines', () => {
    const e = rec.sharded.manifest.handOff?.maxError ?? -1
    assert.ok(e > 0 && e < 0.1, `maxError ${e}`)
  })

  it('results are within twice the stated error of the whole model, and read the same text', async () => {
    let worst = 0
    for (const f of ['01.png', '04.png', '07.png']) {
      const x = sampleLine(f)
      const r = await rec.mesh.client.infer(rec.model(), [x])
      const diff = maxAbsDiff((await runSession(rec.whole, [x]))[0], r.outputs[0])
      assert.ok(diff <= resultTolerance(rec.sharded.manifest), `${f}: ${diff} > ${resultTolerance(rec.sharded.manifest)}`)
      assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get(f))
      worst = Math.max(worst, diff)
    }
    assert.ok(worst > 0, 'the hand-off was rounded (a lossless run would differ by 0)')
  })

  it('the activation travels as float16: the next hop gets half the bytes', async () => {
    const seen: TensorDescriptor[][] = []
    const rogue = await startRogue(rec.mesh, async (fs, frame) => {
      seen.push(frame.tensors)
      await fs.write({ kind: 'error', error: { job: frame.message.request.job, code: InferErrorCode.RUN_FAILED, message: 'not today', stage: frame.message.request.stage, peer: '', receipts: [] } }, [])
    })
    try {
      rogue.claim(rec.sharded.manifestCid, [1])
      const x = sampleLine('02.png')
      const r = await rec.mesh.client.infer(rec.model(), [x], { prefer: new Set([rogue.peer, rec.mesh.vehicles[0].peerId]) })
      assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get('02.png'), 'the job completed on the honest vehicle')
      assert.ok(seen.length >= 1, 'the vehicle of stage 0 called the rogue')
      const [d] = seen[0]
      const elements = d.dims.reduce((a, b) => a * b, 1)
      assert.deepEqual([d.encoding, d.encodedLength], [TensorEncoding.FLOAT16, elements * 2])
    } finally { await rogue.stop() }
  })
})
