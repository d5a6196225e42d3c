/**
 * Output modes (issue 13): the last hop reduces the result (CTC text, top-k)
 * so the 1 MB of probabilities never travels; the reduced result equals the
 * whole model's, reduced the same way, and a last hop cannot answer another
 * question than the one asked. Real libp2p nodes, real onnxruntime.
 */
import assert from 'node:assert/strict'
import { textOf } from '../../node/client/inputs.ts'
import type { InferenceError } from '../../node/client/pipeline.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { applyOutputMode, outputsDiff } from '../../node/models/output-modes.ts'
import { frameTensors } from '../../protocols/framing.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { startRogue } from '../utils/rogue.ts'
import type { Rogue } from '../utils/rogue.ts'
import { sampleLine as image, recMesh } from '../utils/samples.ts'

describe('output modes: the last hop returns text or the top k, not the probabilities', function () {
  this.timeout(120_000)
  const rec = recMesh(2, [[0], [1]], { mesh: { verify: 'off' } })
  let rogue: Rogue | undefined
  const bytes = (ts: Tensor[]): number => ts.reduce((n, t) => n + t.data.byteLength, 0)

  afterEach(async () => { await rogue?.stop(); rogue = undefined })
  it('text: the answer is the decoded text, a few bytes, straight from the last hop', async () => {
    const { taken, ahead } = rec.mesh.client.inbox.stats
    const x = image('03.png')
    const r = await rec.mesh.client.infer(rec.model(), [x], { output: { kind: 'ctc-text' } })
    assert.deepEqual(r.outputs.map(t => `${t.name}:${t.dtype}`), ['text:uint8', 'confidence:float32'])
    assert.ok(bytes(r.outputs) < 256, `the result is ${bytes(r.outputs)} bytes`)
    assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get('03.png'))
    // the same text as the whole model's probabilities decoded here
    const reference = applyOutputMode(rec.sharded.manifest, { kind: 'ctc-text' }, await runSession(rec.whole, [x]))
    assert.equal(outputsDiff(reference, r.outputs) <= 1e-4, true)
    assert.equal(rec.mesh.client.inbox.stats.taken, taken + 1, 'the text came over the result protocol')
    assert.equal(rec.mesh.client.inbox.stats.ahead, ahead + 1, 'the job ended on it and the first hop\'s receipt sent ahead, before the chain\'s answer')
    assert.equal(r.attempts, 1)
  })

  it('small results of jobs in flight together on one machine come back along the chain; a job alone comes straight', async () => {
    const files = ['01.png', '02.png', '03.png', '04.png', '05.png', '06.png']
    const before = { taken: rec.mesh.client.inbox.stats.taken, groups: rec.mesh.client.coalesced.groups }
    const texts = await Promise.all(files.map(async f => await rec.mesh.client.infer(rec.model(), [image(f)], { output: { kind: 'ctc-text' } })))
    texts.forEach((r, i) => { assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get(files[i]), files[i]) })
    const groups = rec.mesh.client.coalesced.groups - before.groups
    const straight = rec.mesh.client.inbox.stats.taken - before.taken
    // the first mesh job may start alone, and the last may end alone: every other one had company
    assert.ok(groups >= 3, `${files.length} jobs went as ${groups} mesh jobs`)
    assert.ok(straight <= 2, `${straight} of ${groups} mesh jobs in flight together came straight from the last hop`)
    const alone = rec.mesh.client.inbox.stats.taken
    const r = await rec.mesh.client.infer(rec.model(), [image('07.png')], { output: { kind: 'ctc-text' } })
    assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get('07.png'))
    assert.equal(rec.mesh.client.inbox.stats.taken, alone + 1, 'a job alone came straight')
  })

  it('top-k: the k largest probabilities of every time step, equal to the whole model\'s', async () => {
    const x = image('05.png')
    const r = await rec.mesh.client.infer(rec.model(), [x], { output: { kind: 'top-k', k: 5 } })
    const [values, indices] = r.outputs
    assert.deepEqual(values.dims, [1, 40, 5])
    assert.equal(indices.dtype, 'int64')
    const reference = applyOutputMode(rec.sharded.manifest, { kind: 'top-k', k: 5 }, await runSession(rec.whole, [x]))
    assert.ok(outputsDiff(reference, r.outputs) <= 1e-4, `top-5 differs from the whole model's by ${outputsDiff(reference, r.outputs)}`)
    const v = new Float32Array(values.data.buffer, values.data.byteOffset, 200)
    for (let i = 0; i < 200; i++) if (i % 5 !== 0) assert.ok(v[i] <= v[i - 1], 'largest first')
    // the first index of each time step is the greedy choice: the text reads the same
    assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get('05.png'))
  })

  it('jobs waiting for room go together (coalesce): fewer mesh jobs, each its own text, each raw result the whole model\'s', async () => {
    const files = ['01.png', '02.png', '03.png', '04.png', '05.png', '06.png', '07.png', '08.png']
    const before = { ...rec.mesh.client.coalesced }
    const texts = await Promise.all(files.map(async f => await rec.mesh.client.infer(rec.model(), [image(f)], { output: { kind: 'ctc-text' } })))
    texts.forEach((r, i) => { assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get(files[i]), files[i]) })
    const raws = await Promise.all(files.slice(0, 4).map(async f => await rec.mesh.client.infer(rec.model(), [image(f)])))
    for (const [i, r] of raws.entries()) {
      assert.deepEqual(r.outputs[0].dims, [1, 40, 6625])
      const d = outputsDiff(await runSession(rec.whole, [image(files[i])]), r.outputs)
      assert.ok(d <= 1e-4, `${files[i]}: differs from the whole model's by ${d}`)
    }
    const after = rec.mesh.client.coalesced
    assert.equal(after.items - before.items, 12)
    // two go at once (one per stage), the others wait and go together
    assert.ok(after.groups - before.groups <= 8, `${after.items - before.items} jobs went as ${after.groups - before.groups} mesh jobs`)
  })

  it('a mode the model has no task for is refused before anything runs', async () => {
    const plain = { cid: rec.sharded.manifestCid, manifest: { ...rec.sharded.manifest, task: undefined } }
    await assert.rejects(rec.mesh.client.infer(plain, [image('01.png')], { output: { kind: 'ctc-text' } }), (err: InferenceError) => err.code === 'BAD_INPUT' && /needs a CTC text model/.test(err.message))
  })

  it('a last hop of an earlier version, which ignores the mode and answers raw, is taken: the client reduces the answer', async () => {
    const stage1 = await createSession(rec.sharded.shards.get(rec.sharded.manifest.stages[1].cid)!)
    try {
      rogue = await startRogue(rec.mesh, async (fs, frame, r) => {
        const req = frame.message.request
        const input = frameTensors(frame)
        const out = await runSession(stage1, input)
        await fs.write({ kind: 'result', result: { job: req.job, receipts: [await r.receipt(req, req.stage, input, out)] } }, out)
      })
      rogue.claim(rec.sharded.manifestCid, [1])
      const r = await rec.mesh.client.infer(rec.model(), [image('06.png')], { output: { kind: 'ctc-text' }, prefer: new Set([rogue.peer, rec.mesh.vehicles[0].peerId]) })
      assert.equal(r.route[1], rogue.peer, 'the old vehicle\'s raw answer was taken')
      assert.deepEqual(r.outputs.map(t => t.name), ['text', 'confidence'])
      assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get('06.png'))
      assert.equal(rec.mesh.client.locator.bans.isBanned(rogue.peer), false)
    } finally { await stage1.release() }
  })

  it('a last hop asked for text that answers with the probabilities (attested) is refused and banned', async () => {
    rogue = await startRogue(rec.mesh, async (fs, frame, r) => {
      const req = frame.message.request
      const input = frameTensors(frame)
      const out = [{ name: 'softmax', dtype: 'float32' as const, dims: [1, 40, 6625], data: new Uint8Array(40 * 6625 * 4) }]
      await fs.write({ kind: 'result', result: { job: req.job, receipts: [await r.receipt(req, req.stage, input, out)] } }, out)
    })
    rogue.claim(rec.sharded.manifestCid, [1])
    const r = await rec.mesh.client.infer(rec.model(), [image('02.png')], { output: { kind: 'ctc-text' }, prefer: new Set([rogue.peer, rec.mesh.vehicles[0].peerId]) })
    assert.ok(rogue.requests.some(q => q.output?.kind === 'ctc-text'), 'the rogue was asked for text')
    assert.notEqual(r.route[1], rogue.peer)
    assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get('02.png'))
    assert.ok(rec.mesh.client.locator.bans.isBanned(rogue.peer) || rec.mesh.client.locator.bans.isSuspect(rogue.peer), 'the rogue is held to account')
  })
})
