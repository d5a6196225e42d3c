/**
 * A vehicle node: joins the fleet, gets the shards it hosts (from its own
 * store, or peer to peer by CID, hash-verified), serves them over the infer
 * protocol, publishes a provider record per shard and heartbeats its capacity.
 */
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { CapacityAdvertiser } from './capacity/advertiser.ts'
import { createHost, hostAddrs, loadOrCreateKey } from './host.ts'
import type { Host } from './host.ts'
import { cidOf, isCid } from './models/cid.ts'
import { decodeManifest } from './models/manifest.ts'
import type { Manifest } from './models/manifest.ts'
import { ShardExchange, providerFromStrings } from './models/shard-exchange.ts'
import type { ModelAnnouncement } from '../protocols/jobs.ts'
import { ShardStore } from './models/shard-store.ts'
import { StageServer } from './runtime/stage-server.ts'
import { VehicleGovernor } from './vehicle/governor.ts'
import { OfferResponder } from './capacity/offers.ts'
import { FleetDirectory } from './capacity/directory.ts'
import { chooseStageToHost, spreadTieBreak } from './scheduler/selection.ts'
import type { GovernorEvent } from './vehicle/governor.ts'
import type { PolicyConfig } from './vehicle/policy.ts'
import { AlwaysOnSource } from './vehicle/sources.ts'
import type { StateSource } from './vehicle/sources.ts'
import type { PrivateKey } from '@libp2p/interface'
import { DEFAULT_FLEET } from '../protocols/ids.ts'

/** How often a stage whose shard could not be had is tried again. */
export const RETRY_MS = 5000

export interface HostedModel {
  /** Manifest CID, or a manifest.json path (its stage-<i>.onnx files beside it are imported). */
  model: string
  /** Stage indexes to serve. @default all, unless `autoStages` is set */
  stages?: number[]
  /**
   * Let the vehicle choose: it hosts this many stages, each time taking the
   * stage the swarm serves worst (fewest or slowest providers), re-checked
   * every few seconds as vehicles come and go.
   */
  autoStages?: number
}

/** How often a vehicle with room re-checks which stage the swarm serves worst. */
export const AUTO_STAGES_INTERVAL_MS = 3000

export type AgentEvent =
  | GovernorEvent
  | { type: 'listening', peer: string, addrs: string[] }
  | { type: 'shard', manifest: string, stage: number, cid: string, source: 'local' | 'peer', bytes: number, ms: number }
  | { type: 'serving', manifest: string, name: string, stage: number }
  | { type: 'chose', manifest: string, stage: number, providers: number }
  | { type: 'announced', manifest: string, name: string, version: string }
  | { type: 'error', message: string }

export interface AgentInit {
  bootstrap: string[]
  /** Identity and shard store live here. */
  dataDir: string
  fleet?: string
  listen?: string[]
  models?: HostedModel[]
  heartbeatMs?: number
  intraOpThreads?: number
  /** Bound on the shard store; unserved shards are evicted least recently used first. @default unbounded */
  storeMaxBytes?: number
  /** Where the vehicle's state comes from. @default always on */
  vehicle?: StateSource
  /** Eligibility policy overrides (defaults in node/vehicle/policy.ts). */
  policy?: Partial<PolicyConfig>
  /** Bound for finishing in-flight work when the car must go. @default 10000 */
  drainMs?: number
  /**
   * Stages this vehicle may host across models announced on the jobs topic
   * (`fleetmesh publish`): it takes a stage of each new model, then any stage
   * nobody serves, always the worst-served one. @default 0 (only `models`)
   */
  room?: number
  onEvent?: (e: AgentEvent) => void
}

export class VehicleAgent {
  readonly host: Host
  readonly store: ShardStore
  readonly exchange: ShardExchange
  readonly stages: StageServer
  readonly advertiser: CapacityAdvertiser
  readonly governor: VehicleGovernor
  readonly offers: OfferResponder
  readonly directory: FleetDirectory
  private readonly emit: (e: AgentEvent) => void
  private readonly retries = new Set<ReturnType<typeof setTimeout>>()
  private readonly room: number
  private readonly announced = new Map<string, Manifest>()
  private roomBusy = false
  private roomTimer?: ReturnType<typeof setInterval>

  private constructor (host: Host, store: ShardStore, privateKey: PrivateKey, init: AgentInit) {
    this.host = host
    this.store = store
    this.exchange = new ShardExchange(host, store)
    this.stages = new StageServer(host, { ...(init.intraOpThreads !== undefined ? { intraOpThreads: init.intraOpThreads } : {}) })
    this.advertiser = new CapacityAdvertiser(host, this.stages, {
      fleet: init.fleet ?? DEFAULT_FLEET,
      privateKey,
      ...(init.heartbeatMs !== undefined ? { heartbeatMs: init.heartbeatMs } : {})
    })
    this.emit = init.onEvent ?? (() => {})
    this.offers = new OfferResponder(host, this.stages, { fleet: init.fleet ?? DEFAULT_FLEET })
    this.room = init.room ?? 0
    if (this.room > 0) this.offers.onModel = (a, from) => { void this.modelAnnounced(a, from) }
    this.directory = new FleetDirectory(host, { fleet: init.fleet ?? DEFAULT_FLEET })
    const me = host.peerId.toString()
    this.stages.admit = (req) => {
      const lease = req.leases?.[me]
      return lease !== undefined && !this.offers.leases.isValid(lease) ? `lease ${lease} expired or unknown` : undefined
    }
    this.governor = new VehicleGovernor(this.stages, this.advertiser, {
      source: init.vehicle ?? new AlwaysOnSource(),
      ...(init.policy !== undefined ? { policy: init.policy } : {}),
      ...(init.drainMs !== undefined ? { drainMs: init.drainMs } : {})
    }, e => { this.emit(e) })
  }

  static async start (init: AgentInit): Promise<VehicleAgent> {
    const privateKey = await loadOrCreateKey(join(init.dataDir, 'peer.key'))
    const host = await createHost({
      privateKey,
      bootstrap: init.bootstrap,
      ...(init.fleet !== undefined ? { fleet: init.fleet } : {}),
      ...(init.listen !== undefined ? { listen: init.listen } : {})
    })
    let served: () => Set<string> = () => new Set()
    const store = await new ShardStore(join(init.dataDir, 'shards'), {
      ...(init.storeMaxBytes !== undefined ? { maxBytes: init.storeMaxBytes } : {}),
      pinned: cid => served().has(cid)
    }).init()
    const agent = new VehicleAgent(host, store, privateKey, init)
    served = () => new Set([...agent.stages.served().map(s => s.cid), ...agent.stages.served().map(s => s.manifest)])
    await agent.exchange.start()
    await agent.stages.start()
    await agent.governor.start()
    agent.advertiser.start()
    agent.offers.start()
    agent.directory.start()
    agent.emit({ type: 'listening', peer: host.peerId.toString(), addrs: hostAddrs(host) })
    for (const m of init.models ?? []) await agent.hostModel(m)
    return agent
  }

  get peerId (): string { return this.host.peerId.toString() }

  /**
   * Gets a model's manifest and shards and starts serving the chosen stages.
   * A manifest file's directory seeds every stage file found beside it (they
   * are provided in the DHT); only the chosen stages are served. A stage whose
   * shard cannot be had yet is reported and retried in the background.
   */
  async hostModel (m: HostedModel): Promise<void> {
    let manifestCid: string
    let manifest: Manifest
    const seeded: string[] = []
    if (isCid(m.model)) {
      manifestCid = m.model
      manifest = decodeManifest(await this.fetchPatiently(manifestCid, 60_000))
    } else {
      const bytes = await readFile(m.model)
      manifest = decodeManifest(bytes)
      manifestCid = await this.store.put(bytes)
      for (const s of manifest.stages) {
        const file = join(dirname(m.model), `stage-${s.index}.onnx`)
        const shard = await readFile(file).catch(() => undefined)
        if (shard === undefined) continue
        if (cidOf(shard) !== s.cid) throw new Error(`${file} does not match the manifest (CID ${cidOf(shard)}, manifest says ${s.cid})`)
        await this.store.put(shard, s.cid)
        seeded.push(s.cid)
      }
    }
    if (m.autoStages !== undefined) {
      await this.advertiser.provide(manifestCid)
      this.autoHost(manifestCid, manifest, m.autoStages)
      return
    }
    const wanted = m.stages ?? manifest.stages.map(s => s.index)
    for (const i of wanted) {
      if (manifest.stages[i] === undefined) throw new RangeError(`model ${manifest.name} has no stage ${i} (it has ${manifest.stages.length})`)
    }
    await this.advertiser.provide(manifestCid)
    for (const cid of seeded) await this.advertiser.provide(cid)
    for (const i of wanted) {
      try {
        await this.serveStage(manifestCid, manifest, i)
      } catch (err) {
        this.emit({ type: 'error', message: `stage ${i}: ${(err as Error).message}; retrying every ${RETRY_MS / 1000} s` })
        this.retryLater(manifestCid, manifest, i)
      }
    }
    await this.advertiser.beat()
    await this.advertiser.publishRecord()
  }

  /**
   * Fetches content by CID, retrying while providers may still be appearing
   * in the DHT (many peers joining at once), up to `forMs`.
   */
  private async fetchPatiently (cid: string, forMs: number): Promise<Uint8Array> {
    const until = Date.now() + forMs
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.exchange.get(cid, { signal: AbortSignal.timeout(Math.max(1000, Math.min(15_000, until - Date.now()))) })
      } catch (err) {
        if (Date.now() >= until || this.host.status !== 'started') throw err
        if (attempt === 1) this.emit({ type: 'error', message: `${(err as Error).message}; retrying` })
        await new Promise(resolve => setTimeout(resolve, Math.min(2000, 250 * attempt)))
      }
    }
  }

  private async serveStage (manifestCid: string, manifest: Manifest, i: number): Promise<void> {
    const entry = manifest.stages[i]
    const t0 = performance.now()
    const local = await this.store.get(entry.cid)
    const shard = local ?? await this.fetchPatiently(entry.cid, 30_000)
    this.emit({ type: 'shard', manifest: manifestCid, stage: i, cid: entry.cid, source: local !== undefined ? 'local' : 'peer', bytes: shard.byteLength, ms: performance.now() - t0 })
    await this.stages.serve(manifestCid, manifest, i, shard)
    await this.advertiser.provide(entry.cid)
    this.emit({ type: 'serving', manifest: manifestCid, name: manifest.name, stage: i })
  }

  /** A published model: remember it and consider hosting a stage of it. */
  private async modelAnnounced (a: ModelAnnouncement, from: string): Promise<void> {
    if (this.announced.has(a.manifest)) return
    try {
      const providers = a.addrs.length > 0 ? [providerFromStrings(from, a.addrs)] : undefined
      const manifest = decodeManifest(await this.exchange.get(a.manifest, { signal: AbortSignal.timeout(15_000), ...(providers !== undefined ? { providers } : {}) }))
      if (this.announced.has(a.manifest)) return
      this.announced.set(a.manifest, manifest)
      await this.advertiser.provide(a.manifest)
      this.emit({ type: 'announced', manifest: a.manifest, name: manifest.name, version: manifest.version })
    } catch (err) {
      this.emit({ type: 'error', message: `model ${a.name}@${a.version}: ${(err as Error).message}` })
      return
    }
    if (this.roomTimer === undefined) {
      this.roomTimer = setInterval(() => { void this.useRoom() }, AUTO_STAGES_INTERVAL_MS)
      this.roomTimer.unref()
    }
    // jitter, so earlier choosers' claims are heard before we choose
    await new Promise(resolve => setTimeout(resolve, Math.random() * 1500))
    await this.useRoom()
  }

  /**
   * One hosting step within `room`. First a stage nobody serves or loads (in
   * any model), then a first stage of a model this vehicle holds none of;
   * always the worst-served stage, ties spread by peer id. The choice is
   * announced (a claim in the heartbeat) before the shard loads, so vehicles
   * choosing at the same time pick differently.
   */
  private async useRoom (): Promise<void> {
    if (this.roomBusy || this.host.status !== 'started' || !this.stages.accepting) return
    const served = this.stages.served()
    if (served.length + this.advertiser.claims.size >= this.room) return
    this.roomBusy = true
    const tie = spreadTieBreak(this.peerId)
    try {
      const options: Array<{ cid: string, manifest: Manifest, stage: number, providers: number, priority: number }> = []
      for (const [cid, manifest] of this.announced) {
        const held = new Set(served.filter(s => s.manifest === cid).map(s => s.stage))
        const supply = manifest.stages.map(s => ({ stage: s.index, ...this.directory.supply(cid, s.index, this.peerId) }))
        const stage = chooseStageToHost(supply, held, tie)
        if (stage === undefined) continue
        const uncovered = supply[stage].providers === 0
        if (held.size > 0 && !uncovered) continue
        options.push({ cid, manifest, stage, providers: supply[stage].providers, priority: (uncovered ? 0 : 2) + (held.size > 0 ? 1 : 0) })
      }
      options.sort((a, b) => a.priority - b.priority || a.providers - b.providers)
      const pick = options[0]
      if (pick === undefined) return
      const key = `${pick.cid}/${pick.stage}`
      this.advertiser.claims.set(key, { manifest: pick.cid, stage: pick.stage })
      await this.advertiser.beat()
      this.emit({ type: 'chose', manifest: pick.cid, stage: pick.stage, providers: pick.providers })
      try {
        await this.serveStage(pick.cid, pick.manifest, pick.stage)
      } finally { this.advertiser.claims.delete(key) }
      await this.advertiser.beat()
      await this.advertiser.publishRecord()
    } catch (err) {
      this.emit({ type: 'error', message: `hosting: ${(err as Error).message}` })
    } finally { this.roomBusy = false }
  }

  /** Keeps `count` stages of the model hosted, choosing the worst-served one each time. */
  private autoHost (manifestCid: string, manifest: Manifest, count: number): void {
    let busy = false
    const check = async (): Promise<void> => {
      if (busy || this.host.status !== 'started') return
      const held = new Set(this.stages.served().filter(s => s.manifest === manifestCid).map(s => s.stage))
      if (held.size >= Math.min(count, manifest.stages.length)) return
      busy = true
      try {
        // give heartbeats a moment to arrive before judging the swarm
        await this.directory.waitFor(() => this.directory.all().length > 0, 3000, 'heartbeats').catch(() => {})
        const supply = manifest.stages.map(s => {
          const servers = this.directory.servers(manifestCid, s.index).filter(x => x.peer !== this.peerId)
          return { stage: s.index, providers: servers.length, meanMsPerItem: servers.length > 0 ? servers.reduce((a, x) => a + x.msPerItem, 0) / servers.length : 0 }
        })
        const stage = chooseStageToHost(supply, held)
        if (stage === undefined) return
        this.emit({ type: 'chose', manifest: manifestCid, stage, providers: supply[stage].providers })
        await this.serveStage(manifestCid, manifest, stage)
        await this.advertiser.beat()
        await this.advertiser.publishRecord()
      } catch (err) {
        this.emit({ type: 'error', message: `auto-hosting: ${(err as Error).message}` })
      } finally { busy = false }
      void check()
    }
    const timer = setInterval(() => { void check() }, AUTO_STAGES_INTERVAL_MS)
    timer.unref()
    this.retries.add(timer as unknown as ReturnType<typeof setTimeout>)
    void check()
  }

  private retryLater (manifestCid: string, manifest: Manifest, i: number): void {
    const timer = setTimeout(() => {
      this.retries.delete(timer)
      if (this.host.status !== 'started') return
      this.serveStage(manifestCid, manifest, i).then(async () => {
        await this.advertiser.beat()
        await this.advertiser.publishRecord()
      }, () => { this.retryLater(manifestCid, manifest, i) })
    }, RETRY_MS)
    this.retries.add(timer)
  }

  async stop (): Promise<void> {
    if (this.roomTimer !== undefined) clearInterval(this.roomTimer)
    for (const t of this.retries) { clearTimeout(t); clearInterval(t) }
    this.retries.clear()
    this.directory.stop()
    await this.governor.stop()
    this.offers.stop()
    this.stages.accepting = false
    await this.advertiser.stop()
    await this.stages.stop()
    await this.exchange.stop()
    await this.host.stop()
  }
}
