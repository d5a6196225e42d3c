/**
 * A vehicle node: a composition of components over one libp2p host.
 *
 * - StageRuntime: onnxruntime sessions of the stages held, measured speed,
 *   power budget; owns whether the vehicle takes work.
 * - VehicleGovernor: owns eligibility; pauses, resumes and drains the runtime.
 * - StageHosting: which stages to hold and getting them (ShardExchange).
 * - InferHandler: the infer protocol, on top of the runtime.
 * - CapacityAdvertiser: heartbeats and signed capacity records.
 * - FleetDirectory: what the rest of the fleet says (heartbeats heard).
 * - OfferResponder: offers and leases for batch work.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { TypedEventEmitter, start, stop } from '@libp2p/interface'
import type { AbortOptions } from '@libp2p/interface'
import { DEFAULT_CELL, DEFAULT_FLEET } from '../protocols/ids.ts'
import { compressionFor } from '../protocols/compression.ts'
import type { CompressMode } from '../protocols/compression.ts'
import { CapacityAdvertiser } from './capacity/advertiser.ts'
import { CellRendezvous, hostConnections } from './capacity/cells.ts'
import { FleetDirectory, neighbours } from './capacity/directory.ts'
import { LinkMeter } from './link-meter.ts'
import { nearestFirst } from './scheduler/links.ts'
import { resultSender } from './runtime/direct-return.ts'
import { StageHosting } from './capacity/hosting.ts'
import type { HostedModel, HostingEvents } from './capacity/hosting.ts'
import { OfferResponder } from './capacity/offer-responder.ts'
import type { NodeComponents } from './components.ts'
import { hostAddrs, loadOrCreateKey } from './host.ts'
import { VEHICLE_MAX_CONNECTIONS } from './network.ts'
import type { Host, HostInit } from './host.ts'
import { loadCredentials } from './membership/credentials.ts'
import type { Credentials } from './membership/credentials.ts'
import { EnrollmentError } from './membership/enrollment.ts'
import type { Membership } from './membership/membership.ts'
import { openCertificate } from '../protocols/membership.ts'
import { createNode } from './node.ts'
import type { FleetNode } from './node.ts'
import { FleetMetrics } from './metrics.ts'
import { lockDirectory } from './util/dir-lock.ts'
import { ShardExchange } from './models/shard-exchange.ts'
import { ShardStore } from './models/shard-store.ts'
import { InferHandler } from './runtime/infer-handler.ts'
import { liar } from './runtime/liar.ts'
import type { LieMode } from './runtime/liar.ts'
import { StageRuntime } from './runtime/stage-runtime.ts'
import { VehicleGovernor } from './vehicle/governor.ts'
import type { GovernorEvents } from './vehicle/governor.ts'
import type { PolicyConfig } from './vehicle/policy.ts'
import { AlwaysOnSource } from './vehicle/sources.ts'
import type { StateSource } from './vehicle/sources.ts'
import type { StagePriority } from './runtime/thread-priority.ts'

export type { HostedModel }

/** How long a vehicle holding only an enrollment grant waits for its certificate. */
export const ENROLL_TIMEOUT_MS = 60_000
/** How often a vehicle says again that a peer did not take its certificate. */
export const DECLINED_REPORT_MS = 5 * 60_000

export interface AgentInit {
  bootstrap: string[]
  /** Identity and shard store live here. */
  dataDir: string
  fleet?: string
  listen?: string[]
  /** Overrides of the network settings the bootstrap addresses imply (node/network.ts). */
  network?: Pick<HostInit, 'relayReservations' | 'upnp' | 'mdns'>
  models?: HostedModel[]
  /** The locality cell it is parked in: where it heartbeats (README, "A million cars"). @default DEFAULT_CELL */
  cell?: string
  /** Longest time between two heartbeats. @default DEFAULT_KEEPALIVE_MS */
  keepAliveMs?: number
  intraOpThreads?: number
  /** The CPU priority of its stage sessions' threads (node/runtime/thread-priority.ts). @default 'idle' */
  stagePriority?: StagePriority
  /** Bound on the shard store; unserved shards are evicted least recently used first. @default unbounded */
  storeMaxBytes?: number
  /** Where the vehicle's state comes from. @default always on */
  vehicle?: StateSource
  /** Eligibility policy overrides (defaults in node/vehicle/policy.ts). */
  policy?: Partial<PolicyConfig>
  /** Bound for finishing in-flight work when the car must go. @default 10000 */
  drainMs?: number
  /** Stages this vehicle may hold across models published to the fleet (`fleetmesh publish`). @default 0 */
  room?: number
  /**
   * Its fleet credentials: a certificate for this vehicle's peer id, or an
   * enrollment grant (the certificate it gets is kept in `dataDir`).
   * Undefined only for an open fleet.
   */
  credentials?: Credentials
  /** Where hand-offs are compressed, for next hops that read them so (protocols/compression.ts). @default 'auto' */
  compress?: CompressMode
  /** How long a vehicle holding only a grant waits for its certificate as it starts. @default ENROLL_TIMEOUT_MS */
  enrollTimeoutMs?: number
  /** Testing only: this vehicle lies about its stage outputs (see node/runtime/liar.ts). */
  lie?: LieMode
}

export type AgentEvents = HostingEvents & GovernorEvents & {
  listening: CustomEvent<{ peer: string, addrs: string[] }>
}

/** Every event type a vehicle emits, for forwarding them all (e.g. to a CLI or a parent process). */
export const AGENT_EVENTS = ['listening', 'shard', 'serving', 'chose', 'announced', 'error', 'eligible', 'ineligible', 'waiting', 'departed'] as const
export type AgentEvent = { [K in typeof AGENT_EVENTS[number]]: { type: K } & AgentEvents[K]['detail'] }[typeof AGENT_EVENTS[number]]

/** A grant's credentials, with the certificate an earlier start got by enrolling (kept in the data directory). */
async function withEarlierCertificate (c: Credentials | undefined, file: string): Promise<Credentials | undefined> {
  if (c?.grant === undefined || c.chain !== undefined) return c
  const earlier = await loadCredentials(file).catch(() => undefined)
  return earlier?.chain !== undefined && earlier.trust.fleet === c.trust.fleet && earlier.trust.authority === c.trust.authority ? { ...c, chain: earlier.chain } : c
}

export class VehicleAgent extends TypedEventEmitter<AgentEvents> {
  readonly node: FleetNode
  readonly host: Host
  readonly components: NodeComponents
  readonly store: ShardStore
  readonly exchange: ShardExchange
  readonly runtime: StageRuntime
  readonly infer: InferHandler
  readonly advertiser: CapacityAdvertiser
  readonly governor: VehicleGovernor
  readonly hosting: StageHosting
  readonly offers: OfferResponder
  readonly directory: FleetDirectory
  readonly links: LinkMeter
  readonly cells: CellRendezvous
  private readonly models: HostedModel[]
  private readonly enrollTimeoutMs: number
  /** Gives the data directory back (node/util/dir-lock.ts). */
  private readonly unlock: () => Promise<void>

  private constructor (node: FleetNode, store: ShardStore, init: AgentInit, unlock: () => Promise<void>) {
    super()
    this.unlock = unlock
    const fleet = init.fleet ?? DEFAULT_FLEET
    this.models = init.models ?? []
    this.enrollTimeoutMs = init.enrollTimeoutMs ?? ENROLL_TIMEOUT_MS
    this.node = node
    const host = this.host = node.host
    this.store = store
    const c = this.components = node.components
    this.runtime = new StageRuntime(c, { ...(init.intraOpThreads !== undefined ? { intraOpThreads: init.intraOpThreads } : {}), ...(init.stagePriority !== undefined ? { priority: init.stagePriority } : {}) })
    this.directory = new FleetDirectory(c, { fleet, ...(init.cell !== undefined ? { cells: [init.cell] } : {}) })
    // links to the vehicles this one may hand work to or get it from, published in heartbeats
    this.cells = new CellRendezvous({ ...c, ...hostConnections(host) }, { fleet, cells: [init.cell ?? DEFAULT_CELL], provide: true })
    this.links = new LinkMeter({ logger: c.logger, host }, { targets: () => neighbours(this.directory, this.runtime.served(), host.peerId.toString()) })
    this.exchange = new ShardExchange(c, {
      store,
      onTransfer: (peer, bytes, ms) => { this.links.observeTransfer(peer, bytes, ms) },
      // shards come from the nearest providers (a car in the same depot before one across the internet)
      nearest: async (providers) => {
        await this.links.measure(providers.map(p => ({ peer: p.id.toString(), addrs: p.addrs })))
        return nearestFirst(providers, p => this.links.get(p.id.toString())?.rttMs)
      }
    })
    this.offers = new OfferResponder({ ...c, runtime: this.runtime }, { fleet })
    this.governor = new VehicleGovernor({ ...c, runtime: this.runtime }, {
      source: init.vehicle ?? new AlwaysOnSource(),
      ...(init.policy !== undefined ? { policy: init.policy } : {}),
      ...(init.drainMs !== undefined ? { drainMs: init.drainMs } : {})
    })
    this.hosting = new StageHosting({ ...c, runtime: this.runtime, exchange: this.exchange, directory: this.directory, jobs: this.offers }, { room: init.room ?? 0 })
    this.advertiser = new CapacityAdvertiser({ ...c, runtime: this.runtime, vehicle: this.governor, hosting: this.hosting, links: this.links.table, cellSize: () => this.directory.size }, {
      fleet,
      ...(init.keepAliveMs !== undefined ? { keepAliveMs: init.keepAliveMs } : {}),
      ...(init.cell !== undefined ? { cell: init.cell } : {})
    })
    const me = host.peerId.toString()
    const membership = c.membership
    this.infer = new InferHandler({ ...c, runtime: this.runtime }, {
      admit: req => {
        const lease = req.leases?.[me]
        return lease !== undefined && !this.offers.isLeaseValid(lease) ? `lease ${lease} expired or unknown` : undefined
      },
      // a hop dials only vehicles it knows, at the addresses their own heartbeats give
      ...(membership !== undefined
        ? { knownVehicle: (peer: string) => this.directory.get(peer)?.heartbeat.addrs ?? (membership.hasRole(peer, 'vehicle') ? [] : undefined) }
        : {}),
      deliver: resultSender({ dialer: c.dialer, connections: host, logger: c.logger, ...(membership !== undefined ? { membership } : {}) }),
      compression: peer => compressionFor(init.compress ?? 'auto', { sameHost: c.dialer.sameHost(peer), bytesPerMs: this.links.get(peer)?.bytesPerMs }),
      ...(init.lie !== undefined ? { lie: liar(init.lie) } : {})
    })
    for (const [from, types] of [[this.hosting, ['shard', 'serving', 'chose', 'announced', 'error']], [this.governor, ['eligible', 'ineligible', 'waiting', 'departed']]] as const) {
      for (const type of types) (from as EventTarget).addEventListener(type, (e) => { this.safeDispatchEvent(type, { detail: (e as CustomEvent).detail }) })
    }
    if (membership !== undefined) this.reportStanding(membership)
  }

  /** A vehicle the fleet revoked, or whose certificate a member does not take, says so: it gets no work from them. */
  private reportStanding (membership: Membership): void {
    const error = (message: string): void => { this.safeDispatchEvent('error', { detail: { message } }) }
    // once per peer in DECLINED_REPORT_MS: a refused vehicle's libp2p keeps redialling
    const said = new Map<string, number>()
    membership.addEventListener('declined', (e) => {
      const now = Date.now()
      if (now - (said.get(e.detail.peer) ?? -Infinity) < DECLINED_REPORT_MS) return
      if (said.size > 1024) said.clear()
      said.set(e.detail.peer, now)
      error(`${e.detail.peer.slice(-6)} did not let this vehicle in: ${e.detail.reason}`)
    })
    membership.addEventListener('revocations', (e) => {
      void (async () => {
        const chain = this.components.credentials?.chain()
        const serial = chain !== undefined ? (await openCertificate(chain[0])).cert.serial : undefined
        if (e.detail.peers.includes(this.peerId) || (serial !== undefined && e.detail.serials.includes(serial))) {
          error(`the fleet authority revoked this vehicle (revocation list ${e.detail.seq}): members refuse it until it has a new certificate`)
        }
      })().catch(() => {})
    })
  }

  /** Builds a vehicle (its libp2p node not started yet): add listeners, then `start()`. */
  static async create (init: AgentInit): Promise<VehicleAgent> {
    // the directory holds the vehicle's identity: one process at a time
    await mkdir(init.dataDir, { recursive: true })
    const unlock = await lockDirectory(init.dataDir)
    try { return await VehicleAgent.build(init, unlock) } catch (err) { await unlock(); throw err }
  }

  private static async build (init: AgentInit, unlock: () => Promise<void>): Promise<VehicleAgent> {
    const credentialsFile = join(init.dataDir, 'credentials.json')
    const credentials = await withEarlierCertificate(init.credentials, credentialsFile)
    const node = await createNode(init.fleet ?? DEFAULT_FLEET, {
      privateKey: await loadOrCreateKey(join(init.dataDir, 'peer.key')),
      metrics: new FleetMetrics(),
      bootstrap: init.bootstrap,
      credentialsFile,
      ...(credentials !== undefined ? { credentials } : {}),
      ...(init.listen !== undefined ? { listen: init.listen } : {}),
      ...(init.cell !== undefined ? { cells: [init.cell] } : {}),
      // a car's idle traffic is mostly its links' upkeep: it keeps a bounded number (README, "A million cars")
      maxConnections: VEHICLE_MAX_CONNECTIONS,
      ...init.network
    })
    let held: () => Set<string> = () => new Set()
    const store = await new ShardStore(join(init.dataDir, 'shards'), {
      ...(init.storeMaxBytes !== undefined ? { maxBytes: init.storeMaxBytes } : {}),
      pinned: cid => held().has(cid)
    }).init()
    const agent = new VehicleAgent(node, store, init, unlock)
    held = () => new Set(agent.runtime.served().flatMap(s => [s.cid, s.manifest]))
    return agent
  }

  /** Builds and starts a vehicle. */
  static async start (init: AgentInit): Promise<VehicleAgent> {
    const agent = await VehicleAgent.create(init)
    await agent.start()
    return agent
  }

  /**
   * Joins the fleet (enrolling first when it holds only a grant), starts
   * every component, then holds the models it was given. A vehicle that gets
   * no certificate within `enrollTimeoutMs`, or whose `opts.signal` aborts
   * while it enrolls, closes its node and rejects (an EnrollmentError saying
   * what the bootstrap peers answered, or the signal's reason).
   */
  async start (opts: AbortOptions = {}): Promise<void> {
    await this.node.start()
    const enroller = this.node.enroller
    if (enroller !== undefined) {
      enroller.addEventListener('error', (e) => { this.safeDispatchEvent('error', { detail: e.detail }) })
      const waitMs = this.enrollTimeoutMs
      const timeout = AbortSignal.timeout(waitMs)
      try {
        await enroller.ready(opts.signal !== undefined ? AbortSignal.any([opts.signal, timeout]) : timeout)
      } catch (err) {
        await this.node.stop()
        await this.unlock()
        if (opts.signal?.aborted === true) throw err
        throw new EnrollmentError(`no certificate after ${waitMs / 1000} s${enroller.lastError !== undefined ? ` (${enroller.lastError})` : ''}`, { cause: err })
      }
    }
    await start(this.runtime, this.exchange, this.infer, this.directory, this.offers, this.governor, this.hosting, this.advertiser, this.links, this.cells)
    this.safeDispatchEvent('listening', { detail: { peer: this.peerId, addrs: hostAddrs(this.host) } })
    for (const m of this.models) await this.hosting.host(m)
  }

  get peerId (): string { return this.host.peerId.toString() }

  /** Holds the stages of another model (see StageHosting.host). */
  async hostModel (m: HostedModel): Promise<void> { await this.hosting.host(m) }

  /** Calls `fn` with every event, as `{ type, ...detail }`. */
  onEvent (fn: (e: AgentEvent) => void): void {
    for (const type of AGENT_EVENTS) this.addEventListener(type, (e) => { fn({ type, ...(e as CustomEvent).detail }) })
  }

  /**
   * Leaves: stop choosing stages and let the governor drain (the car is free
   * once in-flight work is done or handed back), say `leaving` in a last
   * heartbeat, then close everything.
   */
  async stop (): Promise<void> {
    await stop(this.hosting, this.governor)
    await stop(this.advertiser)
    await stop(this.cells, this.links, this.offers, this.directory, this.infer, this.exchange)
    await stop(this.runtime)
    await this.node.stop()
    await this.unlock()
  }
}
