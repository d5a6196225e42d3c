/**
 * Vehicle state from MQTT, where owners' own tools already publish it:
 *
 * - `teslamate:mqtt://host:1883/<car id>`: TeslaMate's `teslamate/cars/<id>/...`
 *   topics (`state`, `shift_state`, `plugged_in`, `battery_level`,
 *   `charger_power` in kW, `inside_temp`);
 * - `evcc:mqtt://host:1883/<loadpoint>`: evcc's `evcc/loadpoints/<n>/...`
 *   (`connected`, `vehicleSoc`, `chargePower` in W) and its site's energy
 *   (`evcc/site/gridPower`: negative while exporting, so surplus = -gridPower;
 *   `evcc/site/tariffGrid` per kWh), which `--policy maxTariff=`/`minSurplusW=` use;
 * - `mqtt:mqtt://host:1883/?socPct=<topic>&pluggedIn=<topic>&...`: any topics,
 *   one per VehicleState field (plus `tariffPerKwh`, `surplusW`).
 *
 * Payloads are what these tools send: plain text (`true`, `73`, `P`) or
 * JSON. Query options on every kind: `network=wifi|cellular` (MQTT does not
 * say which network the car is on; default wifi), `temp=<°C>` when no topic
 * gives a temperature (default 40), `prefix=` for a non-default topic root.
 * Such tools publish on change (retained), so a reading is current while
 * the broker connection is up and ages from the moment it drops.
 */
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import type { StateReading, VehicleState } from './state.ts'
import { parseVehicleState } from './state.ts'
import type { StateSource } from './sources.ts'

export class MqttSourceError extends Error {
  readonly name = 'MqttSourceError'
  readonly code = 'ERR_VEHICLE_SOURCE'
}

/** Fields a topic may fill: VehicleState's, plus what the car's tool knows that it does not. */
interface Fields extends Partial<VehicleState> {
  /** TeslaMate: `online`, `asleep`, `driving`, `charging`, ... */
  carState?: string
  /** TeslaMate: P, D, R, N or empty. */
  shiftState?: string
}

type Apply = (payload: unknown, f: Fields) => void

/** A topic and what its payload sets. */
export interface TopicMapping { topic: string, apply: Apply }

function payloadValue (buf: Buffer): unknown {
  const text = buf.toString('utf8').trim()
  try { return JSON.parse(text) } catch { return text }
}
const num = (v: unknown): number | undefined => { const n = typeof v === 'number' ? v : typeof v === 'string' && v !== '' ? Number(v) : NaN; return Number.isFinite(n) ? n : undefined }
const bool = (v: unknown): boolean | undefined => v === true || v === 'true' ? true : v === false || v === 'false' ? false : undefined

export class MqttSource implements StateSource {
  readonly description: string
  private readonly url: string
  private readonly mappings: TopicMapping[]
  private readonly fields: Fields
  private client?: MqttClient
  private connected = false
  private lostAt = 0
  private heard = 0
  lastError?: string

  constructor (description: string, url: string, mappings: TopicMapping[], base: Fields) {
    this.description = description
    this.url = url
    this.mappings = mappings
    this.fields = { ...base }
  }

  now (): number { return Date.now() }

  /** The state as last published; undefined until every required field was heard. */
  read (): StateReading | undefined {
    if (this.heard === 0) return undefined
    const f = this.fields
    const parked = f.parked ?? (f.carState !== undefined || f.shiftState !== undefined ? f.carState !== 'driving' && (f.shiftState === undefined || f.shiftState === '' || f.shiftState === 'P') : undefined)
    try {
      const state = parseVehicleState({ computeTempC: 40, chargerKw: 0, ownerOptIn: true, network: 'wifi', nextDepartureAt: null, ...f, parked })
      return { state: { ...state, ...(f.tariffPerKwh !== undefined ? { tariffPerKwh: f.tariffPerKwh } : {}), ...(f.surplusW !== undefined ? { surplusW: f.surplusW } : {}) }, at: this.connected ? Date.now() : this.lostAt }
    } catch (err) {
      this.lastError = `${this.description}: ${(err as Error).message}`
      return undefined
    }
  }

  async start (): Promise<void> {
    const client = this.client = mqtt.connect(this.url, { reconnectPeriod: 2000, connectTimeout: 10_000, clientId: `fleetmesh-${Math.random().toString(16).slice(2, 10)}` })
    client.on('connect', () => {
      this.connected = true
      this.lastError = undefined
      client.subscribe(this.mappings.map(m => m.topic), { qos: 0 }, (err) => { if (err != null) this.lastError = `${this.description}: subscribe: ${err.message}` })
    })
    client.on('close', () => { if (this.connected) this.lostAt = Date.now(); this.connected = false })
    client.on('error', (err) => { this.lastError = `${this.description}: ${err.message}` })
    client.on('message', (topic, payload) => {
      // a bounded payload: these are single values
      if (payload.byteLength > 4096) { this.lastError = `${this.description}: ${topic}: payload of ${payload.byteLength} bytes ignored`; return }
      for (const m of this.mappings) if (m.topic === topic) { m.apply(payloadValue(payload), this.fields); this.heard++ }
    })
  }

  async stop (): Promise<void> {
    await this.client?.endAsync(true).catch(() => {})
  }
}

const set = (field: keyof Fields, conv: (v: unknown) => unknown): Apply => (v, f) => {
  const x = conv(v)
  if (x !== undefined) (f as Record<string, unknown>)[field] = x
  else delete (f as Record<string, unknown>)[field]
}
const str = (v: unknown): string | undefined => v === null || v === undefined ? undefined : String(v)

/** Options every MQTT kind takes (from the URL's query), and the broker URL without them. */
function common (u: URL): { broker: string, base: Fields, prefix: string | null, params: URLSearchParams } {
  const params = u.searchParams
  const network = params.get('network') ?? 'wifi'
  if (!['wifi', 'cellular', 'none'].includes(network)) throw new MqttSourceError(`network=${network}: use wifi, cellular or none`)
  const temp = params.get('temp')
  const base: Fields = { network: network as VehicleState['network'], ...(temp !== null ? { computeTempC: Number(temp) } : {}) }
  if (temp !== null && !Number.isFinite(base.computeTempC)) throw new MqttSourceError(`temp=${temp}: a temperature in °C`)
  return { broker: `${u.protocol}//${u.username !== '' ? `${u.username}:${u.password}@` : ''}${u.host}`, base, prefix: params.get('prefix'), params }
}

function brokerUrl (rest: string, kind: string): URL {
  let u: URL
  try { u = new URL(rest) } catch { throw new MqttSourceError(`${kind}: needs a broker URL, e.g. ${kind}:mqtt://127.0.0.1:1883/1`) }
  if (!['mqtt:', 'mqtts:', 'ws:', 'wss:'].includes(u.protocol)) throw new MqttSourceError(`${kind}: ${u.protocol} is not an MQTT URL (mqtt://, mqtts://, ws:// or wss://)`)
  return u
}

/** `teslamate:`, `evcc:` or `mqtt:` source specs; undefined for any other spec. */
export function mqttSourceFromSpec (spec: string): MqttSource | undefined {
  const colon = spec.indexOf(':')
  const kind = spec.slice(0, colon)
  if (!['teslamate', 'evcc', 'mqtt'].includes(kind)) return undefined
  const u = brokerUrl(spec.slice(colon + 1), kind)
  const { broker, base, prefix, params } = common(u)
  const id = decodeURIComponent(u.pathname.replace(/^\/+|\/+$/g, ''))
  if (kind === 'teslamate') {
    if (!/^\d+$/.test(id)) throw new MqttSourceError(`teslamate: needs the car id after the broker, e.g. teslamate:mqtt://127.0.0.1:1883/1 (got "${id}")`)
    const t = `${prefix ?? 'teslamate'}/cars/${id}`
    return new MqttSource(spec, broker, [
      { topic: `${t}/state`, apply: set('carState', str) },
      { topic: `${t}/shift_state`, apply: set('shiftState', str) },
      { topic: `${t}/plugged_in`, apply: set('pluggedIn', bool) },
      { topic: `${t}/battery_level`, apply: set('socPct', num) },
      { topic: `${t}/charger_power`, apply: set('chargerKw', num) },
      // TeslaMate does not see the onboard computer: the cabin stands in for it
      { topic: `${t}/inside_temp`, apply: set('computeTempC', num) }
    ], base)
  }
  if (kind === 'evcc') {
    if (!/^\d+$/.test(id)) throw new MqttSourceError(`evcc: needs the loadpoint number after the broker, e.g. evcc:mqtt://127.0.0.1:1883/1 (got "${id}")`)
    const root = prefix ?? 'evcc'
    const lp = `${root}/loadpoints/${id}`
    return new MqttSource(spec, broker, [
      // a car connected at a charger is parked and plugged in
      { topic: `${lp}/connected`, apply: (v, f) => { const b = bool(v); f.parked = b; f.pluggedIn = b } },
      { topic: `${lp}/vehicleSoc`, apply: set('socPct', num) },
      { topic: `${lp}/chargePower`, apply: set('chargerKw', v => { const w = num(v); return w === undefined ? undefined : w / 1000 }) },
      { topic: `${root}/site/gridPower`, apply: set('surplusW', v => { const w = num(v); return w === undefined ? undefined : Math.max(0, -w) }) },
      { topic: `${root}/site/tariffGrid`, apply: set('tariffPerKwh', num) }
    ], base)
  }
  const fields = ['parked', 'pluggedIn', 'socPct', 'chargerKw', 'computeTempC', 'nextDepartureAt', 'ownerOptIn', 'tariffPerKwh', 'surplusW']
  const mappings: TopicMapping[] = []
  for (const [k, topic] of params) {
    if (['network', 'temp', 'prefix'].includes(k)) continue
    if (!fields.includes(k)) throw new MqttSourceError(`mqtt: unknown field "${k}" (use ${fields.join(', ')})`)
    const conv = ['parked', 'pluggedIn', 'ownerOptIn'].includes(k) ? bool : (v: unknown) => typeof v === 'string' && k === 'nextDepartureAt' ? v : num(v)
    mappings.push({ topic, apply: set(k as keyof Fields, conv) })
  }
  if (mappings.length === 0) throw new MqttSourceError('mqtt: map topics to fields, e.g. mqtt:mqtt://127.0.0.1:1883/?socPct=car/soc&pluggedIn=car/plugged&parked=car/parked')
  return new MqttSource(spec, broker, mappings, base)
}
