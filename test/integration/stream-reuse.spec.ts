/**
 * Kept infer streams (INFER_REUSE_PROTOCOL, node/runtime/hop-call.ts): jobs
 * one after another travel on the streams of earlier jobs, each result still
 * the whole model's; the old protocol still gets one job a stream; a kept
 * stream takes requests one after another and closes on a bad frame only;
 * callHop's onSent runs once the request is written, not after the answer;
 * the shared copies of requests' tensors are reused by later jobs, and an
 * input handed on to the next stage is not.
 */
import assert from 'node:assert/strict'
import type { Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { createSession, runSession } from '../../node/models/ort.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { sampleTensor } from '../../node/models/specs.ts'
import { PeerDialer } from '../../node/dial.ts'
import { createHost } from '../../node/host.ts'
import { IDLE_STREAM_MS, callHop, hopStreams } from '../../node/runtime/hop-call.ts'
import { frameStream } from '../../protocols/framing.ts'
import { sharedKept } from '../../protocols/shared-buffers.ts'
import { INFER_PROTOCOL, INFER_REUSE_PROTOCOL } from '../../protocols/ids.ts'
import { INFER_IDLE_MS } from '../../protocols/limits.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { buildTestMlp } from '../utils/onnx-builder.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { until } from '../utils/until.ts'

const maxAbsDiff = (a: Tensor, b: Tensor): number => {
  const x = new Float32Array(a.data.buffer, a.data.byteOffset, a.data.byteLength / 4)
  const y = new Float32Array(b.data.buffer, b.data.byteOffset, b.data.byteLength / 4)
  return x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i])), 0)
}

/** Counts the infer streams a dialer opens. */
function countInferDials (dialer: PeerDialer): { count: () => number } {
  let n = 0
  const dial = dialer.dialProtocol.bind(dialer)
  dialer.dialProtocol = async (peer, protocol, opts) => {
    if ([protocol].flat().some(p => p === INFER_PROTOCOL || p === INFER_REUSE_PROTOCOL)) n++
    return await dial(peer, protocol, opts)
  }
  return { count: () => n }
}

describe('kept infer streams', function () {
  this.timeout(90_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  const x = (seed: number): Tensor => sampleTensor(sharded.manifest.inputs[0], [1, 8], seed)
  /** What stage 1 takes for input `seed`: stage 0's outputs, and the input itself where stage 1 uses it too. */
  const hidden = async (seed: number): Promise<Tensor[]> => {
    const out = await runSession(await createSession(sharded.shards.get(sharded.manifest.stages[0].cid)!), [x(seed)])
    return out.some(t => t.name === 'x') ? out : [...out, x(seed)]
  }

  before(async () => {
    sharded = await shardModel(buildTestMlp(), { stages: 2, name: 'mlp', probeShapes: { x: [1, 8] }, measure: false })
    mesh = await startMesh(sharded, [[0], [1]], { fleet: 'reuse-test' })
  })
  after(async () => { await mesh?.stop() })

  it('jobs one after another travel on the streams of earlier jobs, each result the whole model\'s', async () => {
    const whole = await createSession(buildTestMlp())
    const client = countInferDials(mesh.client.components.dialer)
    const hop = countInferDials(mesh.vehicles[0].components.dialer)
    const model = { cid: sharded.manifestCid, manifest: sharded.manifest }
    await mesh.client.infer(model, [x(1)], { verify: 'off' })
    const [c0, h0] = [client.count(), hop.count()]
    for (let i = 2; i < 12; i++) {
      const r = await mesh.client.infer(model, [x(i)], { verify: 'off' })
      assert.deepEqual(r.route, mesh.vehicles.map(v => v.peerId))
      assert.ok(maxAbsDiff(r.outputs[0], (await runSession(whole, [x(i)]))[0]) <= 1e-4, `job ${i} equals the whole model`)
    }
    assert.ok(client.count() - c0 <= 1, `10 more jobs: the client opened ${client.count() - c0} infer streams`)
    assert.ok(hop.count() - h0 <= 1, `10 more jobs: the first vehicle opened ${hop.count() - h0} infer streams to the second`)
    assert.equal(hopStreams(mesh.client.components.dialer).idleCount(mesh.vehicles[0].peerId), 1, 'the stream waits for the next job')
    await whole.release()
  })

  it('jobs at once each get the whole model\'s result while their requests\' shared copies are reused', async () => {
    const whole = await createSession(buildTestMlp())
    const model = { cid: sharded.manifestCid, manifest: sharded.manifest }
    // stage 0 hands its input x on to stage 1 (a skip connection): that copy must not be reused while it travels
    assert.ok(sharded.manifest.stages[0].outputs.some(o => o.name === 'x'), 'stage 0 passes x on')
    for (let round = 0; round < 3; round++) {
      const seeds = Array.from({ length: 16 }, (_, i) => 100 + round * 16 + i)
      const results = await Promise.all(seeds.map(async s => await mesh.client.infer(model, [x(s)], { verify: 'off' })))
      for (const [i, r] of results.entries()) assert.ok(maxAbsDiff(r.outputs[0], (await runSession(whole, [x(seeds[i])]))[0]) <= 1e-4, `job ${seeds[i]} equals the whole model`)
    }
    assert.ok(sharedKept().buffers > 0, 'the vehicles gave their requests\' copies back for reuse')
    await whole.release()
  })

  it('a kept stream takes requests one after another; the old protocol gets one a stream', async () => {
    const target = peerIdFromString(mesh.vehicles[1].peerId)
    const request = (job: string): Parameters<ReturnType<typeof frameStream>['write']>[0] => ({ kind: 'request', request: { job, manifest: sharded.manifestCid, stage: 1, route: [], deadline: Date.now() + 10_000 } })
    const kept = frameStream(await mesh.client.host.dialProtocol(target, INFER_REUSE_PROTOCOL))
    for (const job of ['a', 'b', 'c']) {
      await kept.write(request(job), await hidden(5))
      const answer = await kept.read()
      assert.equal(answer.message.kind, 'result', `job ${job} answered on the kept stream: ${JSON.stringify(answer.message)}`)
    }
    const old: Stream = await mesh.client.host.dialProtocol(target, INFER_PROTOCOL)
    const once = frameStream(old)
    await once.write(request('d'), await hidden(5))
    assert.equal((await once.read()).message.kind, 'result')
    assert.equal(await once.next({ signal: AbortSignal.timeout(5000) }), undefined, 'the vehicle closed the old protocol\'s stream after its job')
  })

  it('an idle kept stream is closed: by its caller after its idle time, by the vehicle after its own', async () => {
    const pool = hopStreams(mesh.client.components.dialer)
    const model = { cid: sharded.manifestCid, manifest: sharded.manifest }
    // streams kept by earlier jobs idle for IDLE_STREAM_MS: closed first
    pool.closeIdle()
    assert.equal(pool.idleCount(), 0)
    pool.idleMs = 300
    try {
      await mesh.client.infer(model, [x(8)], { verify: 'off' })
      // the job ends on the last hop's result and the receipts sent ahead; its stream is kept once the chain's answer is read
      await until(() => pool.idleCount(mesh.vehicles[0].peerId) > 0, 5000, 'the stream kept').catch(() => {})
      assert.equal(pool.idleCount(mesh.vehicles[0].peerId), 1, 'kept after the job')
      await until(() => pool.idleCount(mesh.vehicles[0].peerId) === 0, 5000, 'the idle stream closed').catch(() => {})
      assert.equal(pool.idleCount(mesh.vehicles[0].peerId), 0, 'closed by the client after 300 ms idle')
    } finally {
      pool.idleMs = IDLE_STREAM_MS
    }
    const vehicle = mesh.vehicles[1].infer
    vehicle.idleMs = 300
    try {
      const fs = frameStream(await mesh.client.host.dialProtocol(peerIdFromString(mesh.vehicles[1].peerId), INFER_REUSE_PROTOCOL))
      await fs.write({ kind: 'request', request: { job: 'idle', manifest: sharded.manifestCid, stage: 1, route: [], deadline: Date.now() + 10_000 } }, await hidden(9))
      assert.equal((await fs.read()).message.kind, 'result')
      const t0 = Date.now()
      assert.equal(await fs.next({ signal: AbortSignal.timeout(5000) }), undefined, 'the vehicle closed the idle stream')
      assert.ok(Date.now() - t0 < 3000, `closed after ${Date.now() - t0} ms, not at the 5 s read limit`)
    } finally {
      vehicle.idleMs = INFER_IDLE_MS
    }
  })

  it('a bad frame on a kept stream closes that stream only', async () => {
    const target = peerIdFromString(mesh.vehicles[1].peerId)
    const stream = await mesh.client.host.dialProtocol(target, INFER_REUSE_PROTOCOL)
    const fs = frameStream(stream)
    await fs.write({ kind: 'request', request: { job: 'ok', manifest: sharded.manifestCid, stage: 1, route: [], deadline: Date.now() + 10_000 } }, await hidden(6))
    assert.equal((await fs.read()).message.kind, 'result')
    stream.send(new Uint8Array([3, 0xff, 0xff, 0xff]))
    const e = await fs.read()
    assert.equal(e.message.kind, 'error')
    await assert.rejects(fs.read({ signal: AbortSignal.timeout(5000) }), 'the stream is closed')
    const r = await mesh.client.infer({ cid: sharded.manifestCid, manifest: sharded.manifest }, [x(7)], { verify: 'off' })
    assert.equal(r.outputs.length, 1, 'the vehicle still serves')
  })

  it('callHop runs onSent once the request is written, before the answer (a hop that answers only after it ran)', async () => {
    // two plain hosts: the fleet's own nodes dial members only
    const [hop, caller] = [await createHost({ fleet: 'reuse-test' }), await createHost({ fleet: 'reuse-test' })]
    try {
      let sent!: () => void
      const onSent = new Promise<void>(resolve => { sent = resolve })
      const order: string[] = []
      await hop.handle(INFER_REUSE_PROTOCOL, (stream) => {
        void (async () => {
          const fs = frameStream(stream)
          const req = await fs.read()
          order.push(`read ${req.payload.byteLength} bytes`)
          await Promise.race([onSent, new Promise(resolve => setTimeout(resolve, 3000))])
          order.push('answered')
          await fs.write({ kind: 'result', result: { job: 'sent', receipts: [] } }, [])
        })()
      })
      const answer = await callHop(new PeerDialer(caller), { peer: hop.peerId.toString(), addrs: hop.getMultiaddrs().map(String) },
        { job: 'sent', manifest: sharded.manifestCid, stage: 1, route: [], deadline: Date.now() + 10_000 }, await hidden(3),
        { onSent: () => { order.push('onSent'); sent() } })
      assert.equal(answer.message.kind, 'result')
      assert.equal(order.length, 3, order.join(', '))
      assert.ok(order.includes('read 96 bytes'), order.join(', '))
      assert.ok(order.indexOf('onSent') < order.indexOf('answered'), `onSent ran before the answer came (the hop waited for it): ${order.join(', ')}`)
    } finally {
      await Promise.all([hop.stop(), caller.stop()])
    }
  })
})
