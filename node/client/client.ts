/**
 * The fleetmesh client: joins the fleet as an ordinary peer (or shares a
 * vehicle's node) and runs jobs through the mesh. A composition of:
 *
 * - FleetDirectory: capacity heartbeats heard;
 * - ModelResolver: names and manifests;
 * - StageLocator: who can run each stage now, bans;
 * - PipelineRunner: one job with failover;
 * - OfferInbox: offers from vehicles for batch jobs (BatchRunner).
 *
 * It never loads onnxruntime: a client that runs no model needs no native addon.
 */
import { TypedEventEmitter, start, stop } from '@libp2p/interface'
import type { AbortOptions, PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import type { CapacityRecord } from '../../protocols/capacity.ts'
import { DEFAULT_CELL, DEFAULT_FLEET } from '../../protocols/ids.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { CellRendezvous, hostConnections } from '../capacity/cells.ts'
import { cellsNear } from '../capacity/geohash.ts'
import { FleetDirectory } from '../capacity/directory.ts'
import { LinkMeter } from '../link-meter.ts'
import { joinedFleet } from './join-check.ts'
import { ResultInbox } from '../runtime/direct-return.ts'
import type { NodeComponents } from '../components.ts'
import type { Host } from '../host.ts'
import type { Credentials } from '../membership/credentials.ts'
import { createNode } from '../node.ts'
import type { FleetNode } from '../node.ts'
import { FleetMetrics } from '../metrics.ts'
import { ShardExchange } from '../models/shard-exchange.ts'
import { MemoryStore } from '../models/shard-store.ts'
import type { BlobStore } from '../models/shard-store.ts'
import { BatchRunner } from './batch.ts'
import type { BatchOptions, BatchProgress, BatchResult, ItemEvent } from './batch.ts'
import { StageLocator } from './locator.ts'
import { OfferInbox } from './offer-inbox.ts'
import { PipelineRunner } from './pipeline.ts'
import type { InferOptions, InferResult, PipelineEvents } from './pipeline.ts'
import type { OutputMode } from '../../protocols/infer.ts'
import { compressionFor } from '../../protocols/compression.ts'
import type { CompressMode } from '../../protocols/compression.ts'
import type { CoalesceStats } from './coalesce.ts'
import { ModelNames } from './names.ts'
import { ModelResolver } from './resolver.ts'
import type { ResolvedModel } from './resolver.ts'
import { LocalStages } from './local-stages.ts'
import { ResultVerifier } from './verifier.ts'
import type { VerifyMode } from './verifier.ts'

export interface ClientInit {
  /** Bootstrap multiaddrs (with /p2p/<id>). */
  bootstrap: string[]
  /** @default 'dev' */
  fleet?: string
  /** @default ['/ip4/127.0.0.1/tcp/0'] */
  listen?: string[]
  /** @default the credentials' key, else a fresh Ed25519 key */
  privateKey?: PrivateKey
  /** Fleet credentials with a certificate (role client or publisher) for this client's key; undefined only for an open fleet. */
  credentials?: Credentials
  /**
   * Locality cells to route in, nearest first: their vehicles' heartbeats
   * are what this client hears, and a job runs inside the first that holds
   * every stage, else the nearest together (README, "A million cars"). A
   * client on a shared node listens to the cells that node validates.
   * @default [DEFAULT_CELL], or the cells `near` names
   */
  cells?: string[]
  /** A geohash cell to route near: it and its 8 neighbours, nearest first (nearbyCells). Ignored when `cells` is given. */
  near?: string
  /** Share an existing node (a vehicle's) instead of creating one. */
  shared?: FleetNode
  /** Where fetched manifests are kept. @default in memory */
  store?: BlobStore
  /** How long DHT provider answers are reused. @default 15000 */
  providerCacheMs?: number
  /**
   * Result checks: `sample` re-runs a share of stage runs on another vehicle
   * (all of a new vehicle's, fewer as it proves itself); `strict` re-runs
   * every stage of every job; `off` checks only the receipts. @default 'sample'
   */
  verify?: VerifyMode
  /** Tolerance when comparing a stage's outputs from two vehicles. @default 1e-4 */
  tolerance?: number
  /** With `sample`: the lowest share of a proven vehicle's runs that is still checked. @default 0.02 */
  checkRate?: number
  /**
   * Run this many first stages of every job here, so vehicles never see the
   * inputs (loads onnxruntime). @default 0
   */
  localStages?: number
  /** Reduce every job's result at its last hop (text, top-k); a job's own `output` wins. @default raw */
  output?: OutputMode
  /**
   * Jobs of one model that wait for room in the mesh go together as one job
   * of up to this many items, along the batch dimension (node/client/coalesce.ts);
   * 1 turns this off. @default 4
   */
  coalesce?: number
  /** Where jobs' tensors are compressed, for vehicles that read them so (protocols/compression.ts). @default 'auto' */
  compress?: CompressMode
}

export interface ModelInfo {
  name: string
  version: string
  /** Manifest CID. */
  manifest: string
  stages: number
  /** Eligible vehicles serving each stage. */
  vehiclesPerStage: number[]
  /** Every stage has at least one eligible vehicle. */
  ready: boolean
  /**
   * A publisher named it (`fleetmesh publish`); false for a manifest that
   * vehicles serve but no publisher named (started with `node --model
   * <manifest>`): its name and version are the manifest's own, as whoever
   * split it wrote them, and jobs reach it by its CID only.
   */
  published: boolean
}

/** Manifests served but not named that `models()` looks at, at most: each is fetched from the mesh. */
export const MAX_UNPUBLISHED_LISTED = 16

/** The fleet a client joins: `fleet`, else its credentials' fleet, else the default. */
function fleetOf (init: ClientInit): string { return init.fleet ?? init.credentials?.trust.fleet ?? DEFAULT_FLEET }

export class FleetClient extends TypedEventEmitter<PipelineEvents> {
  readonly node: FleetNode
  readonly host: Host
  readonly components: NodeComponents
  readonly fleet: string
  readonly directory: FleetDirectory
  readonly links: LinkMeter
  readonly cells: CellRendezvous
  /** Results sent straight from a job's last hop (direct return). */
  readonly inbox: ResultInbox
  readonly exchange: ShardExchange
  readonly names: ModelNames
  readonly resolver: ModelResolver
  readonly locator: StageLocator
  readonly pipeline: PipelineRunner
  readonly verifier: ResultVerifier
  readonly offers: OfferInbox
  readonly local: LocalStages
  private readonly ownsHost: boolean
  private readonly bootstrap: string[]

  private constructor (node: FleetNode, init: ClientInit) {
    super()
    this.node = node
    this.host = node.host
    this.ownsHost = init.shared === undefined
    this.bootstrap = init.bootstrap
    this.fleet = fleetOf(init)
    const c = this.components = node.components
    const cells = cellsOf(init)
    this.directory = new FleetDirectory(c, { fleet: this.fleet, cells })
    // this client's own links to the vehicles it may route through (a shared vehicle's node measures its own)
    this.cells = new CellRendezvous({ ...c, ...hostConnections(node.host) }, { fleet: this.fleet, cells, provide: false })
    this.links = new LinkMeter({ logger: c.logger, host: node.host }, { targets: () => this.directory.eligible().slice(0, 32).map(p => ({ peer: p.peer, addrs: p.heartbeat.addrs })) })
    // a shared node's vehicle already answers shard requests
    this.exchange = new ShardExchange(c, { store: init.store ?? new MemoryStore(), serve: this.ownsHost, onTransfer: (peer, bytes, ms) => { this.links.observeTransfer(peer, bytes, ms) } })
    this.names = new ModelNames(c, { fleet: this.fleet })
    this.resolver = new ModelResolver({ ...c, names: this.names, exchange: this.exchange, unpublished: () => this.unpublished() })
    this.locator = new StageLocator({ ...c, directory: this.directory, exchange: this.exchange }, { ...(init.providerCacheMs !== undefined ? { providerCacheMs: init.providerCacheMs } : {}) })
    this.verifier = new ResultVerifier({ ...c, locator: this.locator, rerun: async (m, inputs, output) => (await this.pipeline.infer(m, inputs, { recheck: true, ...(output !== undefined ? { output } : {}) })).outputs }, { ...(init.verify !== undefined ? { mode: init.verify } : {}), ...(init.tolerance !== undefined ? { tolerance: init.tolerance } : {}), ...(init.checkRate !== undefined ? { reputation: { minRate: init.checkRate } } : {}) })
    this.local = new LocalStages({ ...c, exchange: this.exchange })
    this.inbox = new ResultInbox(c)
    const ping = node.host.services.ping
    this.pipeline = new PipelineRunner({
      ...c,
      locator: this.locator,
      verifier: this.verifier,
      local: this.local,
      links: this.links,
      inbox: this.inbox,
      compression: peer => compressionFor(init.compress ?? 'auto', { sameHost: c.dialer.sameHost(peer), bytesPerMs: this.links.get(peer)?.bytesPerMs }),
      reachable: async (peer, signal) => { await ping.ping(peerIdFromString(peer), { signal }); return true }
    }, { ...(init.localStages !== undefined ? { localStages: init.localStages } : {}), ...(init.output !== undefined ? { output: init.output } : {}), ...(init.coalesce !== undefined ? { coalesce: init.coalesce } : {}) })
    this.offers = new OfferInbox(c)
    for (const type of ['route', 'job'] as const) this.pipeline.addEventListener(type, (e) => { this.safeDispatchEvent(type, { detail: e.detail }) })
  }

  static async connect (init: ClientInit): Promise<FleetClient> {
    let node = init.shared
    if (node === undefined) {
      node = await createNode(fleetOf(init), {
        privateKey: init.privateKey ?? init.credentials?.key ?? await generateKeyPair('Ed25519'),
        metrics: new FleetMetrics(),
        bootstrap: init.bootstrap,
        ...(init.credentials !== undefined ? { credentials: init.credentials } : {}),
        ...(init.listen !== undefined ? { listen: init.listen } : {}),
        cells: cellsOf(init)
      })
      await node.start()
    }
    const client = new FleetClient(node, init)
    await start(client.directory, client.names, client.exchange, client.links, client.inbox, client.cells)
    return client
  }

  /**
   * Resolves with the first bootstrap peer that proved membership of the
   * fleet to this client (open fleet: that is connected); rejects with a
   * FleetJoinError naming why when every one refused it, or none answered
   * before `opts.signal` aborts (default 10 s).
   */
  async joined (opts: AbortOptions = {}): Promise<string> {
    return await joinedFleet({ host: this.host, ...(this.node.membership !== undefined ? { membership: this.node.membership } : {}) }, this.bootstrap, this.fleet, opts.signal ?? AbortSignal.timeout(10_000))
  }

  get peerId (): string { return this.host.peerId.toString() }
  get privateKey (): PrivateKey { return this.components.privateKey }
  get metrics (): FleetMetrics { return this.components.metrics }
  /** Jobs that went together (coalesce): mesh jobs sent for them, and the jobs they carried. */
  get coalesced (): CoalesceStats { return this.pipeline.coalescer.stats }

  /** A model by manifest CID, manifest file path, or name (`name` or `name@version`). */
  async resolve (model: string, opts: AbortOptions = {}): Promise<ResolvedModel> {
    return await this.resolver.resolve(model, opts)
  }

  /** Runs one job through the mesh (pipelined across vehicles, with failover). */
  async infer (model: string | ResolvedModel, inputs: Tensor[], opts: InferOptions = {}): Promise<InferResult> {
    const m = typeof model === 'string' ? await this.resolve(model, opts.signal !== undefined ? { signal: opts.signal } : {}) : model
    return await this.pipeline.infer(m, inputs, opts)
  }

  /**
   * The models the fleet serves: those publishers have named, then the
   * manifests eligible vehicles serve that no publisher named (`published:
   * false`, at most MAX_UNPUBLISHED_LISTED), each with how many eligible
   * vehicles serve each stage now and whether every stage is served. Listens
   * until `opts.signal` aborts (default 7 s: two announcement periods and
   * joining the topic) when no name is heard yet.
   */
  async models (opts: AbortOptions = {}): Promise<ModelInfo[]> {
    const signal = opts.signal ?? AbortSignal.timeout(7000)
    if (this.names.list().length === 0 && !signal.aborted) {
      await new Promise<void>(resolve => {
        const done = (): void => { this.names.removeEventListener('named', done); signal.removeEventListener('abort', done); resolve() }
        this.names.addEventListener('named', done)
        signal.addEventListener('abort', done, { once: true })
      })
    }
    const info = async (manifest: string, named?: { name: string, version: string }): Promise<ModelInfo | undefined> => {
      try {
        const m = await this.resolve(manifest, { signal: AbortSignal.timeout(5000) })
        // named by a publisher no longer heard: its signed record in the DHT says so
        if (named === undefined) {
          const version = Object.entries(await this.resolver.namedInDht(m.manifest.name, { signal: AbortSignal.timeout(5000) }) ?? {}).find(([, cid]) => cid === manifest)?.[0]
          if (version !== undefined) named = { name: m.manifest.name, version }
        }
        const perStage = m.manifest.stages.map(s => this.directory.holders(manifest, s.index).length)
        return { name: named?.name ?? m.manifest.name, version: named?.version ?? m.manifest.version, manifest, stages: perStage.length, vehiclesPerStage: perStage, ready: perStage.every(x => x > 0), published: named !== undefined }
      } catch { return undefined } // named or served, but not fetchable yet
    }
    const found = await Promise.all([...this.names.list().map(async n => await info(n.manifest, n)), ...this.unpublished().map(async m => await info(m))])
    // published first (a name found in the DHT comes from the second list)
    return found.filter(m => m !== undefined).sort((a, b) => Number(b.published) - Number(a.published))
  }

  /**
   * Manifests eligible vehicles serve that no publisher named, by CID: those
   * served by the most vehicles first (one vehicle naming many cannot crowd
   * out a model others serve), at most MAX_UNPUBLISHED_LISTED.
   */
  private unpublished (): string[] {
    const named = new Set(this.names.list().map(n => n.manifest))
    const vehicles = new Map<string, number>()
    for (const p of this.directory.eligible()) {
      for (const m of new Set(p.heartbeat.stages.map(s => s.manifest))) if (!named.has(m)) vehicles.set(m, (vehicles.get(m) ?? 0) + 1)
    }
    return [...vehicles].sort(([a, n], [b, k]) => k - n || a.localeCompare(b)).slice(0, MAX_UNPUBLISHED_LISTED).map(([m]) => m)
  }

  /** A batch runner for many inputs of one model (announced, leased, pipelined; see batch.ts). */
  batchRunner (model: ResolvedModel, opts: BatchOptions = {}): BatchRunner {
    return new BatchRunner({ ...this.components, offers: this.offers, pipeline: this.pipeline }, model, { fleet: this.fleet, ...opts })
  }

  /** Runs many inputs as one batch job; `onProgress` gets done / failed / items per second / ETA. */
  async batch (model: string | ResolvedModel, items: Tensor[][], opts: BatchOptions & { onProgress?: (p: BatchProgress) => void, onItem?: (e: ItemEvent) => void } = {}): Promise<BatchResult> {
    const m = typeof model === 'string' ? await this.resolve(model) : model
    const runner = this.batchRunner(m, opts)
    if (opts.onProgress !== undefined) runner.addEventListener('progress', e => { opts.onProgress!(e.detail) })
    return await runner.run(items, opts.onItem)
  }

  /** A peer's signed capacity record from the DHT (verified), or undefined. */
  async capacityRecord (peer: string, opts: AbortOptions = {}): Promise<CapacityRecord | undefined> {
    return await this.resolver.capacityRecord(peer, opts)
  }

  async close (): Promise<void> {
    await this.local.close()
    await this.offers.stop()
    await stop(this.cells, this.inbox, this.links, this.directory, this.names, this.exchange)
    if (this.ownsHost) await this.node.stop()
  }
}

/** The cells a client routes in, nearest first. */
function cellsOf (init: Pick<ClientInit, 'cells' | 'near'>): string[] {
  if (init.cells !== undefined) return init.cells
  if (init.near === undefined) return [DEFAULT_CELL]
  return cellsNear(init.near)
}
