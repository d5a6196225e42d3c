/**
 * The live fleet dashboard behind the gateway: `GET /dashboard` is one
 * self-contained page (dashboard-page.ts), `GET /dashboard/events` a stream of
 * server-sent events, one snapshot a second: the vehicles as their
 * heartbeats say (eligible or why not, charge, temperature, charger,
 * network, minutes to departure, stages, load), each model's stage coverage,
 * jobs per second and latency over the last two minutes, the routes jobs
 * took as flows from stage to stage, and the events this node saw (joins,
 * departures, failovers, convictions). It is served under the gateway's
 * access control; a browser's EventSource cannot send headers, so the page
 * passes its bearer token as `?token=`.
 */
import type { ServerResponse } from 'node:http'
import type { FleetClient } from '../client/client.ts'
import type { PeerState } from '../capacity/directory.ts'
import type { Repository } from './repository.ts'

const HISTORY_S = 120
const MAX_EVENTS = 50
const MAX_ROUTES = 200
const MAX_SUBSCRIBERS = 32

interface Second { t: number, ok: number, failed: number, latencies: number[] }
export interface DashboardEvent { at: number, kind: 'join' | 'departure' | 'back' | 'failover' | 'conviction' | 'failed', text: string }

const short = (peer: string): string => peer.slice(-6)

export class DashboardFeed {
  private readonly client: FleetClient
  private readonly repo: Repository
  private readonly seconds: Second[] = []
  private readonly events: DashboardEvent[] = []
  private readonly routes: Array<{ first: number, peers: string[] }> = []
  private readonly known = new Map<string, boolean>()
  private readonly subscribers = new Set<ServerResponse>()
  private timer?: NodeJS.Timeout
  private readonly unlisten: Array<() => void> = []

  constructor (client: FleetClient, repo: Repository) {
    this.client = client
    this.repo = repo
  }

  start (): void {
    // what the node already knew when the dashboard started is the fleet as it stands, not news
    for (const p of this.client.directory.all()) this.known.set(p.peer, p.heartbeat.eligible && p.heartbeat.leaving !== true)
    const on = <T>(target: { addEventListener: (t: any, f: any) => void, removeEventListener: (t: any, f: any) => void }, type: string, f: (e: CustomEvent<T>) => void): void => {
      target.addEventListener(type, f)
      this.unlisten.push(() => { target.removeEventListener(type, f) })
    }
    on<PeerState>(this.client.directory, 'heartbeat', e => { this.onHeartbeat(e.detail) })
    on<{ outcome: string, result?: { ms: number, attempts: number, route: string[] }, error?: Error }>(this.client, 'job', e => { this.onJob(e.detail) })
    on<{ peers: string[], first: number }>(this.client, 'route', e => {
      this.routes.push({ first: e.detail.first, peers: e.detail.peers })
      if (this.routes.length > MAX_ROUTES) this.routes.shift()
    })
    on<{ peer: string, stage: number, job: string }>(this.client.verifier, 'convicted', e => { this.event('conviction', `${short(e.detail.peer)} convicted: a wrong output of stage ${e.detail.stage}`) })
    this.timer = setInterval(() => { void this.push() }, 1000)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
    for (const u of this.unlisten.splice(0)) u()
    for (const res of this.subscribers) res.end()
    this.subscribers.clear()
  }

  private event (kind: DashboardEvent['kind'], text: string): void {
    this.events.push({ at: Date.now(), kind, text })
    if (this.events.length > MAX_EVENTS) this.events.shift()
  }

  private onHeartbeat (p: PeerState): void {
    const eligible = p.heartbeat.eligible && p.heartbeat.leaving !== true
    const before = this.known.get(p.peer)
    this.known.set(p.peer, eligible)
    if (before === undefined) this.event('join', `${short(p.peer)} joined${eligible ? '' : ' (not eligible)'}`)
    else if (before && !eligible) this.event('departure', `${short(p.peer)} ${p.heartbeat.leaving === true ? 'left' : `stopped: ${p.heartbeat.vehicle?.reasons.join('; ') ?? 'not eligible'}`}`)
    else if (!before && eligible) this.event('back', `${short(p.peer)} eligible again`)
  }

  private second (): Second {
    const t = Math.floor(Date.now() / 1000)
    let s = this.seconds.at(-1)
    if (s?.t !== t) {
      s = { t, ok: 0, failed: 0, latencies: [] }
      this.seconds.push(s)
      while (this.seconds.length > HISTORY_S) this.seconds.shift()
    }
    return s
  }

  private onJob (d: { outcome: string, result?: { ms: number, attempts: number, route: string[] }, error?: Error }): void {
    const s = this.second()
    if (d.outcome === 'ok' && d.result !== undefined) {
      s.ok++
      s.latencies.push(d.result.ms)
      if (d.result.attempts > 1) this.event('failover', `a job took ${d.result.attempts} attempts, finished on ${d.result.route.map(short).join(' > ')}`)
    } else {
      s.failed++
      this.event('failed', `a job failed: ${d.error?.message ?? 'unknown'}`.slice(0, 300))
    }
  }

  /** Everything the page shows, as of now. */
  async snapshot (): Promise<Record<string, unknown>> {
    const now = Date.now()
    const vehicles = this.client.directory.all().map(p => {
      const v = p.heartbeat.vehicle
      return {
        peer: p.peer,
        short: short(p.peer),
        eligible: p.heartbeat.eligible && p.heartbeat.leaving !== true && now - p.receivedAt < 3 * 120_000,
        reasons: v?.reasons ?? [],
        socPct: v?.socPct,
        computeTempC: v?.computeTempC,
        chargerKw: v?.chargerKw,
        network: v?.network,
        departureMin: v?.nextDepartureAt !== null && v?.nextDepartureAt !== undefined ? Math.round((v.nextDepartureAt - v.clock) / 60_000) : null,
        stages: p.heartbeat.stages.map(s => s.stage),
        load: p.heartbeat.load,
        slots: p.heartbeat.slots,
        heardS: Math.round((now - p.receivedAt) / 1000)
      }
    }).sort((a, b) => a.short.localeCompare(b.short))
    const models = []
    for (const [name, versions] of await this.repo.list()) {
      for (const [version, m] of versions) {
        models.push({ name, version, stages: m.manifest.stages.map(s => ({ stage: s.index, holders: this.client.directory.holders(m.cid, s.index).length })) })
      }
    }
    const window = this.seconds.filter(s => s.t > Math.floor(now / 1000) - HISTORY_S)
    const last10 = window.filter(s => s.t > Math.floor(now / 1000) - 10)
    const lat = last10.flatMap(s => s.latencies).sort((a, b) => a - b)
    const flows = new Map<string, number>()
    for (const r of this.routes) r.peers.slice(1).forEach((to, i) => { const k = `${r.first + i}|${r.peers[i]}|${to}`; flows.set(k, (flows.get(k) ?? 0) + 1) })
    return {
      at: now,
      node: short(this.client.peerId.toString()),
      vehicles,
      models,
      jobs: {
        total: this.seconds.reduce((n, s) => n + s.ok, 0),
        failed: this.seconds.reduce((n, s) => n + s.failed, 0),
        perS: Math.round(last10.reduce((n, s) => n + s.ok, 0) / 10 * 10) / 10,
        p50Ms: lat.length > 0 ? Math.round(lat[Math.floor(lat.length / 2)]) : null,
        history: window.map(s => ({ t: s.t, ok: s.ok, failed: s.failed, p50Ms: s.latencies.length > 0 ? Math.round([...s.latencies].sort((a, b) => a - b)[Math.floor(s.latencies.length / 2)]) : null }))
      },
      flows: [...flows].map(([k, n]) => { const [stage, from, to] = k.split('|'); return { stage: Number(stage), from: short(from), to: short(to), n } }),
      firstHops: [...new Set(this.routes.map(r => short(r.peers[0])))],
      events: [...this.events].reverse()
    }
  }

  /** Answers GET /dashboard/events: a snapshot now and every second after, until the browser goes. */
  async subscribe (res: ServerResponse): Promise<void> {
    if (this.subscribers.size >= MAX_SUBSCRIBERS) {
      res.writeHead(503, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: `the dashboard already has ${MAX_SUBSCRIBERS} viewers` }))
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
    this.subscribers.add(res)
    res.once('close', () => { this.subscribers.delete(res) })
    res.write(`data: ${JSON.stringify(await this.snapshot())}\n\n`)
  }

  private async push (): Promise<void> {
    if (this.subscribers.size === 0) return
    const data = `data: ${JSON.stringify(await this.snapshot())}\n\n`
    for (const res of this.subscribers) res.write(data)
  }
}
