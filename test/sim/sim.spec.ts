/**
 * `fleetmesh sim` (issue 12): simulated cars judged by the real eligibility policy, jobs routed by the
 * real router, control bytes from the real encoders; what a car pays grows with its cell, not with the
 * fleet.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { encodeHeartbeat } from '../../protocols/capacity.ts'
import { carTraffic, realModel, walkQueries, CONNECTIONS_PER_PEER } from '../../node/sim/control.ts'
import { VEHICLE_MAX_CONNECTIONS } from '../../node/network.ts'
import { carDays, eligibleAt, eligibleSeconds } from '../../node/sim/fleet.ts'
import { runSim } from '../../node/sim/run.ts'
import { daySvg } from '../../node/sim/svg.ts'

const CLI = fileURLToPath(new URL('../../node/cli/main.ts', import.meta.url))

describe('fleetmesh sim', function () {
  this.timeout(120_000)

  it('a car is judged by the real policy: home at night on wifi and charging, not while away or on cellular', () => {
    let home = 0; let noon = 0; let n = 0
    for (let seed = 1; seed <= 200; seed++) {
      const d = carDays(seed, 1)
      assert.equal(d.eligible.length % 2, 0, 'intervals come in pairs')
      for (let i = 1; i < d.eligible.length; i++) assert.ok(d.eligible[i] >= d.eligible[i - 1], 'in order')
      if (eligibleAt(d.eligible, 2 * 3600)) home++
      if (eligibleAt(d.eligible, 12 * 3600)) noon++
      n++
      assert.ok(eligibleSeconds(d.eligible, 0, 86_400) <= 86_400)
    }
    // at 2 am nearly every car is home, plugged in, on wifi; at noon they are away or at work (cellular: not allowed)
    assert.ok(home / n > 0.8, `${home} of ${n} eligible at 2 am`)
    assert.ok(noon / n < 0.1, `${noon} of ${n} eligible at noon`)
  })

  it('message sizes come from the real encoders, and DHT walks grow as log N', async () => {
    const m = await realModel(32, 1_000_000)
    // a car keeps connections to the peers it talked to, up to its cap: a small fleet's every car, a large one's cap
    assert.equal(m.connections, VEHICLE_MAX_CONNECTIONS)
    assert.equal((await realModel(5, 5)).connections, Math.round(6 * CONNECTIONS_PER_PEER))
    const bare = encodeHeartbeat({ ts: 1, seq: 1, eligible: true, load: 0, slots: 1, stages: [], addrs: [] }).byteLength
    assert.ok(m.heartbeatBytes > bare + 300, `heartbeat ${m.heartbeatBytes} B on the wire`)
    // a walk queries at least K peers, and a few more per doubling of the fleet
    assert.ok(walkQueries(5) === 4 && walkQueries(50) >= 20 && walkQueries(1_000_000) > walkQueries(1000) && walkQueries(1_000_000) < 3 * walkQueries(1000))
    assert.ok(m.keepAliveBytes < m.heartbeatBytes * 0.6, `keep-alives ${m.keepAliveBytes} B on average, full heartbeats ${m.heartbeatBytes} B`)
    const small = carTraffic(m, 3600, 1000, 32, { keepAlives: 32 * 30, changes: 10 }, 0.1)
    const big = carTraffic(m, 3600, 1_000_000, 32, { keepAlives: 32 * 30, changes: 10 }, 0.1)
    assert.ok(big.in < small.in * 1.3, `a thousand times the fleet costs a car little more (longer DHT walks only): ${small.in} -> ${big.in} B`)
  })

  it('control bytes per car follow the cell size, not the fleet size; jobs are routed by the real router', async () => {
    const base = { hours: 24, stages: 3, jobsPerHour: 500, sampleJobs: 200, seed: 7 }
    const small = await runSim({ ...base, vehicles: 2000, cellSize: 32 })
    const large = await runSim({ ...base, vehicles: 50_000, cellSize: 32 })
    const crowded = await runSim({ ...base, vehicles: 2000, cellSize: 256 })
    const rel = Math.abs(large.controlBytesPerVehiclePerS - small.controlBytesPerVehiclePerS) / small.controlBytesPerVehiclePerS
    assert.ok(rel < 0.15, `25x the fleet: ${small.controlBytesPerVehiclePerS} -> ${large.controlBytesPerVehiclePerS} B/s per car`)
    assert.ok(crowded.controlBytesPerVehiclePerS > 2 * small.controlBytesPerVehiclePerS, 'cells of 256 cost far more than cells of 32')
    assert.equal(small.hourly.length, 24)
    const night = small.hourly[2]; const noon = small.hourly[12]
    assert.ok(night.eligible > noon.eligible && night.completed > noon.completed)
    assert.ok(night.p50Ms > 0 && night.p95Ms >= night.p50Ms)
    assert.ok(noon.failed > 0, 'at noon the cells cannot serve every stage')
    const svg = daySvg(small)
    assert.match(svg, /^<svg[^>]+xmlns="http:\/\/www.w3.org\/2000\/svg"/)
    assert.equal((svg.match(/<polyline/g) ?? []).length, 2)
  })

  it('the command prints JSON with controlBytesPerVehiclePerS and wallS and draws the day', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fm-sim-'))
    try {
      const svg = join(dir, 'day.svg')
      const out = execFileSync(process.execPath, [CLI, 'sim', '--vehicles', '3000', '--hours', '24', '--svg', svg, '--json'], { encoding: 'utf8' })
      const r = JSON.parse(out.trim().split('\n').at(-1)!) as { controlBytesPerVehiclePerS: number, wallS: number, hourly: unknown[] }
      // a car of a fleet this size holds its cap of connections; their upkeep and its cell's gossip: a few KB/s
      assert.ok(r.controlBytesPerVehiclePerS > 500 && r.controlBytesPerVehiclePerS < 8192, String(r.controlBytesPerVehiclePerS))
      assert.ok(r.wallS >= 0 && r.hourly.length === 24)
      assert.match(readFileSync(svg, 'utf8'), /<svg/)
    } finally { rmSync(dir, { recursive: true, force: true }) }
  })
})
