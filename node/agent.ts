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
import { ShardExchange } from './models/shard-exchange.ts'
import { ShardStore } from './models/shard-store.ts'
import { StageServer } from './runtime/stage-server.ts'
import { VehicleGovernor } from './vehicle/governor.ts'
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
  /** Stage indexes to serve. @default all */
  stages?: number[]
}

export type AgentEvent =
  | GovernorEvent
  | { type: 'listening', peer: string, addrs: string[] }
  | { type: 'shard', manifest: string, stage: number, cid: string, source: 'local' | 'peer', bytes: number, ms: number }
  | { type: 'serving', manifest: string, name: string, stage: number }
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
  /** Where the vehicle's state comes from. @default always on */
  vehicle?: StateSource
  /** Eligibility policy overrides (defaults in node/vehicle/policy.ts). */
  policy?: Partial<PolicyConfig>
  /** Bound for finishing in-flight work when the car must go. @default 10000 */
  drainMs?: number
  onEvent?: (e: AgentEvent) => void
}

export class VehicleAgent {
  readonly host: Host
  readonly store: ShardStore
  readonly exchange: ShardExchange
  readonly stages: StageServer
  readonly advertiser: CapacityAdvertiser
  readonly governor: VehicleGovernor
  private readonly emit: (e: AgentEvent) => void
  private readonly retries = new Set<ReturnType<typeof setTimeout>>()

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
    const store = await new ShardStore(join(init.dataDir, 'shards')).init()
    const agent = new VehicleAgent(host, store, privateKey, init)
    await agent.exchange.start()
    await agent.stages.start()
    await agent.governor.start()
    agent.advertiser.start()
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
    for (const t of this.retries) clearTimeout(t)
    this.retries.clear()
    await this.governor.stop()
    this.stages.accepting = false
    await this.advertiser.stop()
    await this.stages.stop()
    await this.exchange.stop()
    await this.host.stop()
  }
}
