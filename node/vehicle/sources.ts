/**
 * Where vehicle state comes from.
 *
 * - `always`: a laptop or server; always parked, plugged in and willing.
 * - `json:<path|url>`: the car's telematics writes the state as JSON to a
 *   file or serves it on a local HTTP endpoint; re-read on change (file) or
 *   polled (URL). `updatedAt` (epoch ms or ISO) in the JSON says when it was
 *   true; without it the file's mtime or the fetch time counts.
 * - `sim:<schedule.json>` / `sim:random:<seed>`: a simulated car following a
 *   schedule of parking sessions, possibly on a faster clock.
 * - `teslamate:`, `evcc:`, `mqtt:`: what TeslaMate, evcc or any tool
 *   publishes over MQTT (mqtt.ts).
 */
import { watch } from 'node:fs'
import type { FSWatcher } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { InvalidStateError, ALWAYS_ON_STATE, parseVehicleState } from './state.ts'
import type { NetworkKind, StateReading, VehicleState } from './state.ts'
import { repeatingTask } from '@libp2p/utils'
import type { RepeatingTask } from '@libp2p/utils'
import { rng } from '../util/random.ts'
import { mqttSourceFromSpec } from './mqtt.ts'

export interface StateSource {
  /** e.g. `always`, `json:/run/car.json`, `sim:random:7`. */
  readonly description: string
  /** Now on this source's clock (epoch ms; a simulation may run faster than the wall). */
  now: () => number
  /** The latest reading, or undefined when there is none. */
  read: () => StateReading | undefined
  /** The last problem reading the state, if any. */
  readonly lastError?: string
  start: () => Promise<void>
  stop: () => Promise<void>
}

export class AlwaysOnSource implements StateSource {
  readonly description = 'always'
  now (): number { return Date.now() }
  read (): StateReading { return { state: ALWAYS_ON_STATE, at: Date.now() } }
  async start (): Promise<void> {}
  async stop (): Promise<void> {}
}

function readingFrom (doc: unknown, fallbackAt: number): StateReading {
  const state = parseVehicleState(doc)
  const u = (doc as Record<string, unknown>).updatedAt
  const at = typeof u === 'number' ? u : typeof u === 'string' ? Date.parse(u) : fallbackAt
  if (!Number.isFinite(at)) throw new InvalidStateError('updatedAt', 'must be epoch ms or an ISO date')
  return { state, at }
}

export class JsonSource implements StateSource {
  readonly description: string
  private readonly target: string
  private readonly pollMs: number
  private reading?: StateReading
  private readonly poller: RepeatingTask
  private watcher?: FSWatcher
  private lastMtime = 0
  lastError?: string

  constructor (target: string, opts: { pollMs?: number } = {}) {
    this.target = target
    this.description = `json:${target}`
    this.pollMs = opts.pollMs ?? 1000
    this.poller = repeatingTask(async () => { await this.refresh() }, this.pollMs, { debounce: 10 })
  }

  private get isUrl (): boolean { return /^https?:\/\//.test(this.target) }

  now (): number { return Date.now() }
  read (): StateReading | undefined { return this.reading }

  /** Reads the file or URL once; keeps the last good reading on error. */
  async refresh (): Promise<void> {
    try {
      if (this.isUrl) {
        const res = await fetch(this.target, { signal: AbortSignal.timeout(Math.max(500, this.pollMs)) })
        if (!res.ok) throw new Error(`HTTP ${res.status}`)
        this.reading = readingFrom(await res.json(), Date.now())
      } else {
        const st = await stat(this.target)
        if (st.mtimeMs === this.lastMtime && this.reading !== undefined) return
        const doc = JSON.parse(await readFile(this.target, 'utf8'))
        this.reading = readingFrom(doc, st.mtimeMs)
        this.lastMtime = st.mtimeMs
      }
      this.lastError = undefined
    } catch (err) {
      this.lastError = `${this.target}: ${(err as Error).message}`
    }
  }

  async start (): Promise<void> {
    await this.refresh()
    this.poller.start()
    if (!this.isUrl) {
      try {
        this.watcher = watch(this.target, () => { this.poller.run() })
        this.watcher.unref()
      } catch { /* polling still works */ }
    }
  }

  async stop (): Promise<void> {
    this.poller.stop()
    this.watcher?.close()
  }
}

/** One stay of a simulated car; times in seconds from the start of the simulation. */
export interface ParkingSession {
  arrive: number
  depart: number
  /** @default arrive */
  plugIn?: number
  /** @default depart */
  unplug?: number
  socAtArrival: number
  /** @default 7.4 */
  chargerKw?: number
  /** @default 'wifi' */
  network?: NetworkKind
  /** @default 45 */
  computeTempC?: number
}

export interface SimSchedule {
  /** Simulated seconds per wall-clock second. @default 1 */
  speed?: number
  /** Simulated clock at simulated second 0, epoch ms or ISO. @default the wall clock at `wallStart` */
  start?: number | string
  /** Wall-clock epoch ms that simulated second 0 corresponds to (may be in the future). @default when the source starts */
  wallStart?: number
  /** @default 75 */
  batteryKwh?: number
  /** @default 90 */
  socLimitPct?: number
  /** @default true */
  ownerOptIn?: boolean
  sessions: ParkingSession[]
  /** Optional SoC override: [seconds, percent] points, linearly interpolated. */
  soc?: Array<[number, number]>
}

export class InvalidScheduleError extends Error {
  readonly name = 'InvalidScheduleError'
  readonly code = 'ERR_INVALID_SCHEDULE'
}

export function parseSchedule (v: any): SimSchedule {
  if (v === null || typeof v !== 'object' || !Array.isArray(v.sessions)) throw new InvalidScheduleError('schedule needs a "sessions" array')
  v.sessions.forEach((s: any, i: number) => {
    for (const f of ['arrive', 'depart', 'socAtArrival']) {
      if (typeof s?.[f] !== 'number' || !Number.isFinite(s[f])) throw new InvalidScheduleError(`sessions[${i}].${f} must be a number`)
    }
    if (s.depart <= s.arrive) throw new InvalidScheduleError(`sessions[${i}]: depart must come after arrive`)
  })
  if (v.speed !== undefined && (typeof v.speed !== 'number' || v.speed <= 0)) throw new InvalidScheduleError('speed must be a positive number')
  return v as SimSchedule
}

/** State of a scheduled car `t` simulated seconds after the start (pure). */
export function simulatedState (sch: SimSchedule, t: number, startMs: number): VehicleState {
  const battery = sch.batteryKwh ?? 75
  const limit = sch.socLimitPct ?? 90
  const s = sch.sessions.find(x => x.arrive <= t && t < x.depart)
  const upcoming = sch.sessions.filter(x => x.depart > t).sort((a, b) => a.depart - b.depart)[0]
  let soc: number
  if (s === undefined) {
    const prev = sch.sessions.filter(x => x.depart <= t).sort((a, b) => b.depart - a.depart)[0]
    soc = prev !== undefined ? Math.min(limit, prev.socAtArrival) : 50
  } else {
    const from = s.plugIn ?? s.arrive
    const to = Math.min(t, s.unplug ?? s.depart)
    const hours = Math.max(0, to - from) / 3600
    soc = Math.min(Math.max(limit, s.socAtArrival), s.socAtArrival + (s.chargerKw ?? 7.4) * hours / battery * 100)
  }
  if (sch.soc !== undefined && sch.soc.length > 0) soc = interpolate(sch.soc, t)
  const plugged = s !== undefined && (s.plugIn ?? s.arrive) <= t && t < (s.unplug ?? s.depart)
  return {
    parked: s !== undefined,
    pluggedIn: plugged,
    socPct: Math.round(soc * 10) / 10,
    chargerKw: plugged ? (s?.chargerKw ?? 7.4) : 0,
    computeTempC: Math.round((s?.computeTempC ?? 45) * 10) / 10,
    nextDepartureAt: upcoming !== undefined ? startMs + upcoming.depart * 1000 : null,
    ownerOptIn: sch.ownerOptIn ?? true,
    network: s !== undefined ? (s.network ?? 'wifi') : 'cellular'
  }
}

function interpolate (points: Array<[number, number]>, t: number): number {
  const p = [...points].sort((a, b) => a[0] - b[0])
  if (t <= p[0][0]) return p[0][1]
  for (let i = 1; i < p.length; i++) {
    if (t <= p[i][0]) {
      const [t0, v0] = p[i - 1]; const [t1, v1] = p[i]
      return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    }
  }
  return p[p.length - 1][1]
}

/**
 * A random commuter day from a seed. Distributions (times in hours of the day):
 * - home overnight from 0 until leaving at N(7.0, 0.5), plugged in, wifi, SoC U(50, 90);
 * - with probability 0.6 parked at work from leaving + U(0.3, 1.0) until N(17.0, 0.75),
 *   plugged with probability 0.5 at 11 kW, cellular network, SoC on arrival = home SoC - U(5, 15);
 * - home again from work departure + U(0.3, 1.0) (or N(18, 1) without work) until 24, plugged,
 *   wifi, charger 7.4 or 11 kW (even odds), SoC on arrival U(20, 60);
 * - compute temperature U(35, 55) °C per stay.
 */
export function randomDay (seed: number, speed = 1): SimSchedule {
  const r = rng(seed)
  const normal = (mu: number, sd: number): number => mu + sd * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r())
  const h = 3600
  const leave = Math.max(5, normal(7, 0.5))
  const homeSoc = 50 + 40 * r()
  const sessions: ParkingSession[] = [{ arrive: 0, depart: leave * h, socAtArrival: homeSoc, chargerKw: r() < 0.5 ? 7.4 : 11, network: 'wifi', computeTempC: 35 + 20 * r() }]
  let back: number
  if (r() < 0.6) {
    const arrive = leave + 0.3 + 0.7 * r()
    const depart = Math.max(arrive + 1, normal(17, 0.75))
    const plugged = r() < 0.5
    sessions.push({ arrive: arrive * h, depart: depart * h, ...(plugged ? {} : { plugIn: depart * h, unplug: depart * h }), socAtArrival: homeSoc - 5 - 10 * r(), chargerKw: 11, network: 'cellular', computeTempC: 35 + 20 * r() })
    back = depart + 0.3 + 0.7 * r()
  } else {
    back = Math.max(leave + 1, normal(18, 1))
  }
  sessions.push({ arrive: back * h, depart: 24 * h, socAtArrival: 20 + 40 * r(), chargerKw: r() < 0.5 ? 7.4 : 11, network: 'wifi', computeTempC: 35 + 20 * r() })
  return { speed, sessions }
}

export class SimSource implements StateSource {
  readonly description: string
  readonly schedule: SimSchedule
  private wallStart = 0
  private simStart = 0

  constructor (schedule: SimSchedule, description: string) {
    this.schedule = schedule
    this.description = description
  }

  get speed (): number { return this.schedule.speed ?? 1 }
  now (): number { return this.simStart + (Date.now() - this.wallStart) * this.speed }
  /** Simulated seconds since the start. */
  elapsed (): number { return (this.now() - this.simStart) / 1000 }
  read (): StateReading {
    return { state: simulatedState(this.schedule, this.elapsed(), this.simStart), at: this.now() }
  }

  async start (): Promise<void> {
    this.setWallStart(this.schedule.wallStart ?? Date.now())
  }

  /** Moves simulated second 0 to wall-clock `wallStart` (epoch ms), e.g. when a swarm is ready. */
  setWallStart (wallStart: number): void {
    this.wallStart = wallStart
    const s = this.schedule.start
    this.simStart = s === undefined ? wallStart : typeof s === 'number' ? s : Date.parse(s)
  }

  async stop (): Promise<void> {}
}

export class UsageSourceError extends Error {
  readonly name = 'UsageSourceError'
  readonly code = 'ERR_VEHICLE_SOURCE'
}

/** Parses `--vehicle`: always | json:<path|url> | sim:<schedule.json> | sim:random:<seed> | teslamate:, evcc:, mqtt: (mqtt.ts). */
export async function sourceFromSpec (spec: string, opts: { speed?: number } = {}): Promise<StateSource> {
  if (spec === 'always') return new AlwaysOnSource()
  try {
    const fromMqtt = mqttSourceFromSpec(spec)
    if (fromMqtt !== undefined) return fromMqtt
  } catch (err) { throw new UsageSourceError((err as Error).message) }
  if (spec.startsWith('json:')) {
    const target = spec.slice(5)
    if (target === '') throw new UsageSourceError('json: needs a file path or an http:// URL')
    return new JsonSource(target)
  }
  if (spec.startsWith('sim:random:')) {
    const seed = Number(spec.slice(11))
    if (!Number.isInteger(seed)) throw new UsageSourceError(`sim:random: needs an integer seed, got "${spec.slice(11)}"`)
    return new SimSource(randomDay(seed, opts.speed ?? 1), spec)
  }
  if (spec.startsWith('sim:')) {
    let doc: unknown
    try { doc = JSON.parse(await readFile(spec.slice(4), 'utf8')) } catch (err) {
      throw new UsageSourceError(`cannot read schedule ${spec.slice(4)}: ${(err as Error).message}`)
    }
    const sch = parseSchedule(doc)
    if (opts.speed !== undefined) sch.speed = opts.speed
    return new SimSource(sch, spec)
  }
  throw new UsageSourceError(`unknown vehicle source "${spec}": use always, json:<path|url>, sim:<schedule.json>, sim:random:<seed>, teslamate:mqtt://<broker>/<car id>, evcc:mqtt://<broker>/<loadpoint> or mqtt:mqtt://<broker>/?<field>=<topic>&...`)
}
