/**
 * Vehicle state from MQTT (node/vehicle/mqtt.ts) through a real broker (aedes, on loopback): a
 * publisher sends what TeslaMate and evcc publish (their topics, plain-text payloads, retained), and
 * a vehicle's governor takes and stops work as the car plugs in, drives off, or the grid's tariff and
 * the solar surplus move.
 */
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import type { AddressInfo, Server } from 'node:net'
import { Aedes } from 'aedes'
import { defaultLogger } from '@libp2p/logger'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { FleetMetrics } from '../../node/metrics.ts'
import { StageRuntime } from '../../node/runtime/stage-runtime.ts'
import { VehicleGovernor } from '../../node/vehicle/governor.ts'
import type { PolicyConfig } from '../../node/vehicle/policy.ts'
import { sourceFromSpec, UsageSourceError } from '../../node/vehicle/sources.ts'
import { until } from '../utils/until.ts'

describe('vehicle state from MQTT (TeslaMate, evcc, any topics) through a real broker', function () {
  this.timeout(30_000)
  let broker: Aedes
  let server: Server
  let url: string
  let pub: MqttClient
  const stops: Array<() => Promise<void>> = []

  before(async () => {
    broker = await Aedes.createBroker()
    server = createServer(broker.handle)
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    url = `mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`
    pub = await mqtt.connectAsync(url)
  })
  afterEach(async () => { for (const s of stops.splice(0)) await s() })
  after(async () => {
    await pub?.endAsync(true)
    await new Promise<void>(resolve => { broker?.close(() => { resolve() }) })
    await new Promise<void>(resolve => { server?.close(() => { resolve() }) })
  })

  /** Publishes retained values, as TeslaMate and evcc do. */
  const publish = async (values: Record<string, string>): Promise<void> => {
    for (const [topic, payload] of Object.entries(values)) await pub.publishAsync(topic, payload, { retain: true, qos: 1 })
  }

  /** A governor over a real stage runtime, reading `spec`. */
  const vehicle = async (spec: string, policy: Partial<PolicyConfig> = {}): Promise<{ gov: VehicleGovernor, runtime: StageRuntime }> => {
    const logger = defaultLogger()
    const runtime = new StageRuntime({ logger, metrics: new FleetMetrics() })
    const gov = new VehicleGovernor({ logger, runtime }, { source: await sourceFromSpec(spec), policy: { minHoldMs: 0, ...policy }, tickMs: 50, drainMs: 100 })
    await gov.start()
    stops.push(async () => { await gov.stop(); await runtime.stop() })
    return { gov, runtime }
  }
  const reasons = (gov: VehicleGovernor): string => gov.decision?.reasons.join('; ') ?? ''

  it('teslamate: a parked, plugged-in, charged car works; it stops when it drives off or unplugs', async () => {
    const car = 'teslamate/cars/7'
    await publish({ [`${car}/state`]: 'charging', [`${car}/shift_state`]: 'P', [`${car}/plugged_in`]: 'true', [`${car}/battery_level`]: '81', [`${car}/charger_power`]: '11', [`${car}/inside_temp`]: '24.5', [`${car}/display_name`]: 'Blue' })
    const { gov, runtime } = await vehicle(`teslamate:${url}/7`)
    await until(() => runtime.isAccepting, 5000, `the car takes work (${reasons(gov)})`)
    const s = gov.summary()
    assert.deepEqual([s.socPct, s.chargerKw, s.computeTempC, s.pluggedIn, s.parked], [81, 11, 24.5, true, true])
    assert.equal(s.source, `teslamate:${url}/7`)
    await publish({ [`${car}/plugged_in`]: 'false', [`${car}/charger_power`]: '0' })
    await until(() => !runtime.isAccepting, 5000, 'stops when unplugged')
    assert.match(reasons(gov), /not plugged in/)
    await publish({ [`${car}/plugged_in`]: 'true', [`${car}/charger_power`]: '11' })
    await until(() => runtime.isAccepting, 5000, 'works again when plugged in')
    await publish({ [`${car}/state`]: 'driving', [`${car}/shift_state`]: 'D' })
    await until(() => !runtime.isAccepting, 5000, 'stops when it drives')
    assert.match(reasons(gov), /not parked/)
    // another car's topics change nothing
    await publish({ 'teslamate/cars/8/state': 'online', 'teslamate/cars/8/shift_state': 'P' })
    await new Promise(resolve => setTimeout(resolve, 200))
    assert.equal(runtime.isAccepting, false)
  })

  it('evcc: a connected loadpoint works; maxTariff and minSurplusW follow the site\'s energy', async () => {
    await publish({ 'evcc/loadpoints/1/connected': 'true', 'evcc/loadpoints/1/charging': 'true', 'evcc/loadpoints/1/vehicleSoc': '64', 'evcc/loadpoints/1/chargePower': '7400', 'evcc/site/pvPower': '5200', 'evcc/site/gridPower': '-1800', 'evcc/site/tariffGrid': '0.18' })
    const { gov, runtime } = await vehicle(`evcc:${url}/1`, { maxTariff: 0.2, minSurplusW: 500 })
    await until(() => runtime.isAccepting, 5000, `the car takes work (${reasons(gov)})`)
    assert.equal(gov.summary().chargerKw, 7.4)
    assert.equal(gov.summary().surplusW, 1800)
    await publish({ 'evcc/site/tariffGrid': '0.31' })
    await until(() => !runtime.isAccepting, 5000, 'stops above the tariff')
    assert.match(reasons(gov), /grid tariff 0.31 above 0.2/)
    await publish({ 'evcc/site/tariffGrid': '0.12', 'evcc/site/gridPower': '300' })
    await until(() => /solar surplus 0 W below 500 W/.test(reasons(gov)), 5000, 'importing: no surplus')
    assert.equal(runtime.isAccepting, false)
    await publish({ 'evcc/site/gridPower': '-900' })
    await until(() => runtime.isAccepting, 5000, 'works again on surplus under the tariff')
    await publish({ 'evcc/loadpoints/1/connected': 'false' })
    await until(() => !runtime.isAccepting, 5000, 'stops when the car leaves the charger')
    assert.match(reasons(gov), /not parked/)
  })

  it('mqtt: any topics map to fields; payloads may be JSON; the state ages once the broker is gone', async () => {
    await publish({ 'garage/soc': '{"v":1}', 'garage/plugged': 'true', 'garage/parked': 'true', 'garage/kw': '7.4' })
    const spec = `mqtt:${url}/?socPct=garage/soc&pluggedIn=garage/plugged&parked=garage/parked&chargerKw=garage/kw&network=wifi`
    const { gov, runtime } = await vehicle(spec, { staleMs: 400 })
    // a malformed value keeps the car out, named
    await until(() => /socPct/.test(reasons(gov)) || /no vehicle state/.test(reasons(gov)), 5000, 'refused without a valid SoC')
    await publish({ 'garage/soc': '77' })
    await until(() => runtime.isAccepting, 5000, `the car takes work (${reasons(gov)})`)
    // the broker connection drops: the last reading goes stale
    await gov.source.stop()
    await until(() => !runtime.isAccepting, 5000, 'stale once disconnected')
    assert.match(reasons(gov), /stale/)
  })

  it('bad specs are usage errors that say what to write', async () => {
    await assert.rejects(sourceFromSpec('teslamate:mqtt://127.0.0.1:1883/'), (e: Error) => e instanceof UsageSourceError && /car id/.test(e.message))
    await assert.rejects(sourceFromSpec('evcc:http://127.0.0.1/1'), /not an MQTT URL/)
    await assert.rejects(sourceFromSpec('mqtt:mqtt://127.0.0.1:1883/?speed=car/v'), /unknown field "speed"/)
    await assert.rejects(sourceFromSpec('mqtt:mqtt://127.0.0.1:1883/'), /map topics to fields/)
    await assert.rejects(sourceFromSpec('teslamate:mqtt://127.0.0.1:1883/1?network=5g'), /network=5g/)
  })
})
