import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defaultLogger } from '@libp2p/logger'
import { FleetMetrics } from '../../node/metrics.ts'
import { StageRuntime } from '../../node/runtime/stage-runtime.ts'
import { VehicleGovernor } from '../../node/vehicle/governor.ts'
import { EligibilityPolicy } from '../../node/vehicle/policy.ts'
import { JsonSource, SimSource, parseSchedule, randomDay, simulatedState, sourceFromSpec, UsageSourceError, InvalidScheduleError } from '../../node/vehicle/sources.ts'
import { InvalidStateError, parseVehicleState } from '../../node/vehicle/state.ts'

const state = { parked: true, pluggedIn: true, socPct: 70, chargerKw: 7.4, computeTempC: 45, nextDepartureAt: null, ownerOptIn: true, network: 'wifi' }
const until = async (cond: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms
  while (!cond()) { if (Date.now() > end) throw new Error('condition not met in time'); await new Promise(resolve => setTimeout(resolve, 20)) }
}

describe('vehicle state sources', function () {
  this.timeout(20_000)
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'fm-src-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('json: a written file changes the state; staleness makes the car ineligible', async () => {
    const file = join(dir, 'car.json')
    await writeFile(file, JSON.stringify({ ...state, updatedAt: Date.now() }))
    const src = new JsonSource(file, { pollMs: 100 })
    await src.start()
    try {
      const policy = new EligibilityPolicy({ staleMs: 1000, minHoldMs: 0 })
      assert.equal(policy.evaluate(src.read(), Date.now()).eligible, true)
      await writeFile(file, JSON.stringify({ ...state, pluggedIn: false, updatedAt: Date.now() }))
      await until(() => src.read()?.state.pluggedIn === false)
      assert.match(policy.evaluate(src.read(), Date.now()).reasons.join(), /not plugged in/)
      await writeFile(file, JSON.stringify({ ...state, updatedAt: Date.now() }))
      await until(() => src.read()?.state.pluggedIn === true)
      assert.equal(policy.evaluate(src.read(), Date.now()).eligible, true)
      // the telematics writer stops: no fresh state for over staleMs
      await new Promise(resolve => setTimeout(resolve, 1200))
      assert.match(policy.evaluate(src.read(), Date.now()).reasons.join(), /stale/)
      // a broken write keeps the last good reading and reports the problem
      await writeFile(file, '{"parked": tru')
      await until(() => src.lastError !== undefined)
      assert.equal(src.read()?.state.pluggedIn, true)
    } finally { await src.stop() }
  })

  it('json: a loopback HTTP endpoint changes the state and goes stale when it stops updating', async () => {
    let doc: Record<string, unknown> = { ...state, updatedAt: Date.now() }
    const server = createServer((_req, res) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(doc)) })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/state`
    const src = await sourceFromSpec(`json:${url}`)
    const policy = new EligibilityPolicy({ staleMs: 1500, minHoldMs: 0 })
    await src.start()
    try {
      assert.equal(policy.evaluate(src.read(), Date.now()).eligible, true)
      doc = { ...state, socPct: 20, updatedAt: Date.now() }
      await until(() => src.read()?.state.socPct === 20, 3000)
      assert.match(policy.evaluate(src.read(), Date.now()).reasons.join(), /state of charge 20%/)
      doc = { ...state, updatedAt: Date.now() - 10_000 }
      await until(() => (src.read()?.at ?? 0) < Date.now() - 5000, 3000)
      assert.match(policy.evaluate(src.read(), Date.now()).reasons.join(), /stale/)
    } finally {
      await src.stop()
      server.close()
    }
  })

  it('rejects bad state documents, naming the field', () => {
    assert.throws(() => parseVehicleState({ ...state, socPct: 130 }), (e: unknown) => e instanceof InvalidStateError && e.field === 'socPct')
    assert.throws(() => parseVehicleState({ ...state, network: '5g' }), (e: unknown) => e instanceof InvalidStateError && e.field === 'network')
    assert.throws(() => parseVehicleState({ ...state, parked: 'yes' }), (e: unknown) => e instanceof InvalidStateError && e.field === 'parked')
    assert.equal(parseVehicleState({ ...state, nextDepartureAt: '2026-12-01T07:00:00Z' }).nextDepartureAt, Date.parse('2026-12-01T07:00:00Z'))
  })

  it('sim: a schedule drives parking, plugging, charging and departures', () => {
    const sch = parseSchedule({ sessions: [{ arrive: 0, plugIn: 600, unplug: 7200, depart: 7800, socAtArrival: 40, chargerKw: 7.5 }], batteryKwh: 75 })
    const t0 = 1_000_000
    assert.deepEqual(simulatedState(sch, 300, t0), { ...simulatedState(sch, 300, t0), parked: true, pluggedIn: false, chargerKw: 0 })
    const charging = simulatedState(sch, 600 + 3600, t0)
    assert.equal(charging.pluggedIn, true)
    assert.equal(charging.socPct, 50) // 7.5 kW for an hour into 75 kWh: +10%
    assert.equal(charging.nextDepartureAt, t0 + 7800 * 1000)
    const driving = simulatedState(sch, 8000, t0)
    assert.equal(driving.parked, false)
    assert.equal(driving.network, 'cellular')
    assert.throws(() => parseSchedule({ sessions: [{ arrive: 10, depart: 5, socAtArrival: 1 }] }), InvalidScheduleError)
  })

  it('sim: a seeded random day is deterministic, and runs on a faster clock', async () => {
    assert.deepEqual(randomDay(7), randomDay(7))
    assert.notDeepEqual(randomDay(7), randomDay(8))
    const day = randomDay(3)
    assert.ok(day.sessions[0].arrive === 0 && day.sessions.at(-1)!.depart === 24 * 3600)
    const src = new SimSource({ ...randomDay(3), speed: 3600 }, 'sim:random:3')
    await src.start()
    await new Promise(resolve => setTimeout(resolve, 50))
    assert.ok(src.elapsed() >= 150 && src.elapsed() < 3600, `simulated ${src.elapsed()} s in 50 ms`)
    await assert.rejects(sourceFromSpec('sim:random:x'), UsageSourceError)
    await assert.rejects(sourceFromSpec('carrier-pigeon'), UsageSourceError)
  })

  it('a car kept from work says why as it starts, and again when the kind of reason changes: a missing file named', async () => {
    const file = join(dir, 'later.json')
    const logger = defaultLogger()
    const runtime = new StageRuntime({ logger, metrics: new FleetMetrics() })
    const gov = new VehicleGovernor({ logger, runtime }, { source: new JsonSource(file, { pollMs: 50 }), policy: { minHoldMs: 0 }, tickMs: 20 })
    const said: string[][] = []
    gov.addEventListener('waiting', e => { said.push(e.detail.reasons) })
    await gov.start()
    try {
      assert.equal(said.length, 1)
      assert.match(said[0].join(), new RegExp(`^no vehicle state: ${file}: ENOENT`))
      await writeFile(file, JSON.stringify({ ...state, socPct: 30, updatedAt: Date.now() }))
      await until(() => said.length === 2)
      assert.deepEqual(said[1], ['state of charge 30% below 50%'])
      // the same reason with another number is not said again
      await writeFile(file, JSON.stringify({ ...state, socPct: 31, updatedAt: Date.now() }))
      await until(() => gov.summary().socPct === 31)
      await new Promise(resolve => setTimeout(resolve, 100))
      assert.equal(said.length, 2)
      await writeFile(file, JSON.stringify({ ...state, updatedAt: Date.now() }))
      await until(() => gov.isEligible)
      assert.equal(said.length, 2)
    } finally { await gov.stop(); await runtime.stop() }
  })
})
