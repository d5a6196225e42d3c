/**
 * `fleetmesh sim`: a day (or more) of a large fleet, simulated. Cars live
 * random commuter days judged by the real eligibility policy (fleet.ts);
 * cells of `cellSize` cars get their stages from the real placement
 * (placeStages); sampled jobs are routed by the real router (chooseRoute,
 * routeMs) among the eligible cars of a cell, or of the next cell when the
 * first cannot serve every stage; control bytes per car come from the real
 * message sizes and cadences (control.ts). Per hour it reports cars
 * eligible, usable stage sessions, jobs completed and failed, p50/p95
 * latency and control bytes per car.
 */
import { placeStages } from '../scheduler/placement.ts'
import { NoRouteError, chooseRoute, inNearestCell, routeMs } from '../scheduler/router.ts'
import type { Candidate, RouteCosts } from '../scheduler/router.ts'
import { DEFAULT_POLICY } from '../vehicle/policy.ts'
import { carDays, eligibleAt, eligibleSeconds } from './fleet.ts'
import { carTraffic, realModel } from './control.ts'
import { rng } from '../util/random.ts'
import type { ControlModel } from './control.ts'

export interface SimInit {
  vehicles: number
  hours: number
  cellSize: number
  stages: number
  /** Jobs per hour across the fleet; at most `sampleJobs` of them are routed one by one, the rest counted alike. */
  jobsPerHour: number
  sampleJobs?: number
  seed: number
  /** Compute per stage, ms; hand-off bytes between stages (the shipped recognition model's, by default). */
  stageMs?: number[]
  handOffBytes?: number[]
  /** Round trip inside a cell and to the next cell, ms. */
  cellRttMs?: number
  neighbourRttMs?: number
  onProgress?: (done: number) => void
}

export interface SimHour {
  hour: number
  eligible: number
  usableSessions: number
  jobs: number
  completed: number
  failed: number
  p50Ms: number
  p95Ms: number
  controlInPerVehiclePerS: number
  controlOutPerVehiclePerS: number
}

export interface SimResult {
  vehicles: number
  hours: number
  cellSize: number
  cells: number
  hourly: SimHour[]
  controlBytesPerVehiclePerS: number
  controlInOut: { in: number, out: number }
  jobsCompleted: number
  jobsFailed: number
  model: ControlModel
  wallS: number
}

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return 0
  const s = [...xs].sort((a, b) => a - b)
  return Math.round(s[Math.min(s.length - 1, Math.floor(p * s.length))] * 10) / 10
}

export async function runSim (o: SimInit): Promise<SimResult> {
  const t0 = performance.now()
  const days = Math.ceil(o.hours / 24)
  const n = o.vehicles
  const cells = Math.ceil(n / o.cellSize)
  // every car's eligible intervals, flat: car i's are data[offsets[i] .. offsets[i + 1])
  const offsets = new Int32Array(n + 1)
  let data = new Float64Array(Math.max(16, n * 6))
  const budget = new Float32Array(n)
  const transitionsPerHour = new Float64Array(o.hours)
  let used = 0
  for (let i = 0; i < n; i++) {
    const day = carDays(o.seed * 1_000_003 + i, days)
    if (used + day.eligible.length > data.length) { const more = new Float64Array(data.length * 2); more.set(data); data = more }
    data.set(day.eligible, used)
    used += day.eligible.length
    offsets[i + 1] = used
    budget[i] = day.budgetW
    for (const t of day.transitions) { const h = Math.floor(t / 3600); if (h < o.hours) transitionsPerHour[h]++ }
    if (i % 100_000 === 99_999) o.onProgress?.(i + 1)
  }
  const car = (i: number): Float64Array => data.subarray(offsets[i], offsets[i + 1])
  // stages per car: the real placement inside each cell
  const placements = new Map<number, number[][]>()
  const stagesOf = (i: number): number[] => {
    const cell = Math.floor(i / o.cellSize)
    const size = Math.min(o.cellSize, n - cell * o.cellSize)
    let p = placements.get(size)
    // a last cell of one car cannot hold several stages without holding all: it holds the first
    if (p === undefined) { p = size >= 2 || o.stages < 2 ? placeStages(size, o.stages) : [[0]]; placements.set(size, p) }
    return p[i - cell * o.cellSize] ?? []
  }
  const model = await realModel(Math.min(o.cellSize, n), o.vehicles)
  const costs: RouteCosts = {
    stageMs: o.stageMs ?? Array.from({ length: o.stages }, () => 5),
    handOffBytes: o.handOffBytes ?? Array.from({ length: o.stages - 1 }, () => 900_000),
    rttMs: o.cellRttMs ?? 2,
    bytesPerMs: 12_500, // 100 Mbit/s inside a depot
    inputBytes: 184_000,
    outputBytes: 1_060_000,
    returnAlongChain: false
  }
  const random = rng(o.seed)
  const sample = Math.min(o.jobsPerHour, o.sampleJobs ?? 2000)
  const hourly: SimHour[] = []
  let completedAll = 0; let failedAll = 0
  for (let h = 0; h < o.hours; h++) {
    let eligibleS = 0; let sessionsS = 0
    for (let i = 0; i < n; i++) {
      const s = eligibleSeconds(car(i), h * 3600, (h + 1) * 3600)
      eligibleS += s
      sessionsS += s * Math.floor(budget[i] / DEFAULT_POLICY.wattsPerSession)
    }
    const latencies: number[] = []
    let failed = 0
    for (let j = 0; j < sample; j++) {
      const t = (h + random()) * 3600
      const home = Math.floor(random() * cells)
      // the client listens to its cell and a neighbour; the real router keeps the route in the nearest cell that holds every stage
      const near = [home, (home + 1) % cells]
      const candidates: Candidate[][] = Array.from({ length: o.stages }, () => [])
      for (const cell of new Set(near)) {
        for (let i = cell * o.cellSize; i < Math.min(n, (cell + 1) * o.cellSize); i++) {
          if (!eligibleAt(car(i), t)) continue
          for (const s of stagesOf(i)) candidates[s].push({ peer: String(i), addrs: [], load: 0, msPerItem: costs.stageMs[s], cell: String(cell) })
        }
      }
      let ms: number | undefined
      try {
        const route = chooseRoute(inNearestCell(candidates, near.map(String)), costs, 0, random)
        ms = routeMs(route, costs) + (route.some(c => c.cell !== String(home)) ? o.neighbourRttMs ?? 40 : 0)
      } catch (err) {
        if (!(err instanceof NoRouteError)) throw err
      }
      if (ms === undefined) failed++
      else latencies.push(ms)
    }
    const scale = o.jobsPerHour / Math.max(1, sample)
    // cars per cell on average (a fleet smaller than a cell is one cell of all of them)
    const perCell = n / cells
    const beats = { keepAlives: perCell * 3600 / model.keepAliveS, changes: transitionsPerHour[h] / cells }
    const traffic = carTraffic(model, 3600, n, perCell, beats, transitionsPerHour[h] / n)
    const completed = Math.round(latencies.length * scale); const failedJobs = Math.round(failed * scale)
    completedAll += completed; failedAll += failedJobs
    hourly.push({
      hour: h,
      eligible: Math.round(eligibleS / 3600),
      usableSessions: Math.round(sessionsS / 3600),
      jobs: completed + failedJobs,
      completed,
      failed: failedJobs,
      p50Ms: pct(latencies, 0.5),
      p95Ms: pct(latencies, 0.95),
      controlInPerVehiclePerS: Math.round(traffic.in / 3600),
      controlOutPerVehiclePerS: Math.round(traffic.out / 3600)
    })
  }
  const mean = (k: 'controlInPerVehiclePerS' | 'controlOutPerVehiclePerS'): number => Math.round(hourly.reduce((s, x) => s + x[k], 0) / Math.max(1, hourly.length))
  const io = { in: mean('controlInPerVehiclePerS'), out: mean('controlOutPerVehiclePerS') }
  return { vehicles: n, hours: o.hours, cellSize: o.cellSize, cells, hourly, controlBytesPerVehiclePerS: io.in + io.out, controlInOut: io, jobsCompleted: completedAll, jobsFailed: failedAll, model, wallS: Math.round((performance.now() - t0) / 100) / 10 }
}
