/**
 * The fleetmesh client: joins the fleet as an ordinary peer, resolves a model
 * to its manifest, finds stage holders through the DHT (filtered by fresh
 * capacity heartbeats), picks a route and runs the job as a pipeline. If a hop
 * fails, it bans that peer and replays the failed stage's input on another.
 */
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Logger, PrivateKey } from '@libp2p/interface'
import { FleetDirectory } from '../capacity/directory.ts'
import { createHost, peerPublicKey } from '../host.ts'
import { lpStream } from '@libp2p/utils'
import type { LengthPrefixedStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { OFFER_PROTOCOL } from '../../protocols/ids.ts'
import { MAX_OFFER_MESSAGE_BYTES, decodeOfferMessage, encodeOfferMessage } from '../../protocols/offer.ts'
import type { Offer } from '../../protocols/offer.ts'
import { BatchRunner } from './batch.ts'
import type { BatchOptions, BatchProgress, BatchResult, ItemEvent } from './batch.ts'
import { capacityRecordKey, decodeCapacityRecord } from '../../protocols/capacity.ts'
import { decodeModelRecord, modelRecordKey } from '../../protocols/jobs.ts'
import type { CapacityRecord } from '../../protocols/capacity.ts'
import type { Host } from '../host.ts'
import { isCid } from '../models/cid.ts'
import { decodeManifest } from '../models/manifest.ts'
import type { Manifest } from '../models/manifest.ts'
import { MemoryStore } from '../models/shard-store.ts'
import type { BlobStore } from '../models/shard-store.ts'
import { ShardExchange } from '../models/shard-exchange.ts'
import type { Provider } from '../models/shard-exchange.ts'
import { callHop, HopUnreachableError } from '../runtime/hop-call.ts'
import { checkStageInputs } from '../runtime/stage-server.ts'
import { BanList, NoRouteError, chooseRoute } from '../scheduler/router.ts'
import type { Candidate } from '../scheduler/router.ts'
import { DEFAULT_FLEET } from '../../protocols/ids.ts'
import { FrameKind, InferErrorCode, isRetryable, parseErrorHeader, parseResultHeader, requestFrame } from '../../protocols/infer.ts'
import type { HopTiming } from '../../protocols/infer.ts'
import { RemoteError } from '../../protocols/errors.ts'
import { rawTensors } from '../../protocols/tensor-codec.ts'
import type { Tensor } from '../../protocols/tensor-codec.ts'

export interface ClientInit {
  /** Bootstrap multiaddrs (with /p2p/<id>). */
  bootstrap: string[]
  /** @default 'dev' */
  fleet?: string
  /** @default ['/ip4/127.0.0.1/tcp/0'] */
  listen?: string[]
  privateKey?: PrivateKey
  /** Reuse an existing host instead of creating one. */
  host?: Host
  /** Where fetched manifests are kept. @default in memory */
  store?: BlobStore
  /** How long DHT provider answers are reused. @default 15000 */
  providerCacheMs?: number
}

export interface InferOptions {
  signal?: AbortSignal
  /** Attempts (first try plus re-routes). @default 6 */
  maxAttempts?: number
  /** Whole-job deadline. @default 60000 */
  timeoutMs?: number
  /** Peers to prefer per stage (e.g. those holding a lease); others are used when none of them can serve. */
  prefer?: Set<string>
  /** Leases to name in the request (peer id -> lease id). */
  leases?: () => Record<string, string>
  /** Called with each route chosen for this job. */
  onRoute?: (peers: string[], first: number) => void
}

export interface InferResult {
  manifest: string
  outputs: Tensor[]
  /** Peer ids, one per stage, in order. */
  route: string[]
  hops: HopTiming[]
  ms: number
  attempts: number
}

export interface ResolvedModel { cid: string, manifest: Manifest }

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
}

/** The job failed for good; `code` is the last error's code. */
export class InferenceError extends Error {
  readonly name = 'InferenceError'
  readonly code: string
  readonly stage: number | undefined
  constructor (code: string, message: string, stage?: number, options?: ErrorOptions) {
    super(message, options)
    this.code = code
    this.stage = stage
  }
}

export class ModelNotFoundError extends Error {
  readonly name = 'ModelNotFoundError'
  readonly code = 'ERR_MODEL_NOT_FOUND'
}

export class FleetClient {
  readonly host: Host
  readonly directory: FleetDirectory
  readonly exchange: ShardExchange
  private readonly ownsHost: boolean
  private readonly log: Logger
  private readonly bans = new BanList()
  private readonly inflight = new Map<string, number>()
  private readonly providerCache = new Map<string, { at: number, providers: Provider[] }>()
  private readonly manifests = new Map<string, Manifest>()
  private readonly providerCacheMs: number
  private readonly refreshing = new Set<string>()
  readonly fleet: string
  /** The key this client's peer id comes from, when it was given one. */
  readonly privateKey?: PrivateKey
  /** Called when a job ends (for metrics). */
  onJob?: (outcome: 'ok' | 'failed', result?: InferResult, error?: Error) => void
  /** Called with every route chosen (peer per stage from `first`), e.g. to audit withdrawals. */
  onRoute?: (peers: string[], first: number, at: number) => void

  private constructor (host: Host, ownsHost: boolean, init: ClientInit) {
    this.host = host
    this.ownsHost = ownsHost
    this.log = host.logger.forComponent('fleetmesh:client')
    this.directory = new FleetDirectory(host, { fleet: init.fleet ?? DEFAULT_FLEET })
    this.exchange = new ShardExchange(host, init.store ?? new MemoryStore())
    this.providerCacheMs = init.providerCacheMs ?? 15_000
    this.fleet = init.fleet ?? DEFAULT_FLEET
    if (init.privateKey !== undefined) this.privateKey = init.privateKey
  }

  static async connect (init: ClientInit): Promise<FleetClient> {
    const host = init.host ?? await createHost({
      bootstrap: init.bootstrap,
      ...(init.fleet !== undefined ? { fleet: init.fleet } : {}),
      ...(init.listen !== undefined ? { listen: init.listen } : {}),
      ...(init.privateKey !== undefined ? { privateKey: init.privateKey } : {})
    })
    const client = new FleetClient(host, init.host === undefined, init)
    // a vehicle that came back is a new process: forget why its old one was banned
    client.directory.onRestart = peer => { client.bans.clear(peer) }
    client.directory.start()
    // a shared host (a vehicle's) already serves shards
    if (init.host === undefined) await client.exchange.start()
    return client
  }

  get peerId (): string { return this.host.peerId.toString() }

  /**
   * A model by manifest CID, manifest file path, or name (as announced in
   * capacity heartbeats; waits up to `waitMs` to hear of it).
   */
  async resolve (model: string, waitMs = 10_000): Promise<ResolvedModel> {
    if (isCid(model)) {
      const cached = this.manifests.get(model)
      if (cached !== undefined) return { cid: model, manifest: cached }
      const bytes = await this.exchange.get(model, { signal: AbortSignal.timeout(waitMs) })
      const manifest = decodeManifest(bytes)
      this.manifests.set(model, manifest)
      return { cid: model, manifest }
    }
    if (model.endsWith('.json')) {
      const bytes = await readFile(model)
      const manifest = decodeManifest(bytes)
      const cid = await this.exchange.store.put(bytes)
      this.manifests.set(cid, manifest)
      return { cid, manifest }
    }
    // heartbeats name what vehicles serve; the DHT name record names what was published
    const heard = await this.directory.waitFor(() => this.directory.models().has(model), Math.min(waitMs, 2000), `a vehicle serving model "${model}"`).then(() => true, () => false)
    if (heard) return await this.resolve(this.directory.models().get(model)!, waitMs)
    const [name, version] = model.split('@')
    try {
      const rec = await decodeModelRecord(await this.host.contentRouting.get(modelRecordKey(name), { signal: AbortSignal.timeout(Math.max(1000, waitMs - 2000)) }), peerPublicKey)
      const versions = Object.keys(rec.versions).sort((a, b) => Number(a) - Number(b) || a.localeCompare(b))
      const cid = rec.versions[version ?? versions[versions.length - 1]]
      if (cid !== undefined) return await this.resolve(cid, waitMs)
    } catch (err) {
      this.log('no DHT record for model %s: %e', name, err)
    }
    const known = [...this.directory.models().keys()]
    throw new ModelNotFoundError(`model "${model}" is not served by any vehicle heard from, nor published in the DHT${known.length > 0 ? ` (known: ${known.join(', ')})` : ''}`)
  }

  /** DHT providers of a stage's shard (cached briefly). */
  private async providers (cid: string, refresh = false): Promise<Provider[]> {
    const hit = this.providerCache.get(cid)
    if (!refresh && hit !== undefined && Date.now() - hit.at < this.providerCacheMs) return hit.providers
    const providers = await this.exchange.findProviders(cid, { signal: AbortSignal.timeout(5_000), max: 20 })
    this.providerCache.set(cid, { at: Date.now(), providers })
    return providers
  }

  /**
   * Candidates for one stage: vehicles whose latest signed heartbeat is fresh,
   * eligible and lists the stage; banned peers left out. The DHT's provider
   * records are how holders are discovered: looking them up connects to them,
   * which brings their heartbeats. The lookup runs in the background when the
   * cache is stale, and blocks only when no live holder is known at all (a
   * blocking lookup on the hot path stalled on dead peers under churn).
   */
  async candidates (m: ResolvedModel, stage: number): Promise<Candidate[]> {
    const cid = m.manifest.stages[stage].cid
    const live = (): Candidate[] => this.directory.servers(m.cid, stage)
      .filter(s => !this.bans.isBanned(s.peer))
      .map(s => ({ peer: s.peer, addrs: s.addrs, load: s.load + (this.inflight.get(s.peer) ?? 0), msPerItem: s.msPerItem }))
    const hit = this.providerCache.get(cid)
    const stale = hit === undefined || Date.now() - hit.at > this.providerCacheMs
    let out = live()
    if (out.length === 0) {
      await this.providers(cid, true).catch(() => [])
      out = live()
    } else if (stale && !this.refreshing.has(cid)) {
      this.refreshing.add(cid)
      void this.providers(cid, true).catch(() => []).finally(() => { this.refreshing.delete(cid) })
    }
    return out
  }

  /** Runs one job through the mesh. */
  async infer (model: string | ResolvedModel, inputs: Tensor[], opts: InferOptions = {}): Promise<InferResult> {
    try {
      const r = await this.inferOnce(model, inputs, opts)
      this.onJob?.('ok', r)
      return r
    } catch (err) {
      this.onJob?.('failed', undefined, err as Error)
      throw err
    }
  }

  private async inferOnce (model: string | ResolvedModel, inputs: Tensor[], opts: InferOptions): Promise<InferResult> {
    const m = typeof model === 'string' ? await this.resolve(model) : model
    checkStageInputs(m.manifest.inputs, inputs)
    const K = m.manifest.stages.length
    const job = randomUUID()
    const t0 = performance.now()
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000)
    const maxAttempts = opts.maxAttempts ?? 6
    let stage = 0
    let tensors = inputs
    const hops: HopTiming[] = []
    let lastError: Error | undefined
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      opts.signal?.throwIfAborted()
      if (Date.now() > deadline) break
      const cands: Candidate[][] = []
      for (let s = stage; s < K; s++) {
        const all = await this.candidates(m, s)
        const preferred = opts.prefer !== undefined ? all.filter(c => opts.prefer!.has(c.peer)) : []
        cands.push(preferred.length > 0 ? preferred : all)
      }
      let route: Candidate[]
      try {
        route = chooseRoute(cands, {
          stageMs: m.manifest.stages.map(s => Math.max(1, s.share * 30)),
          handOffBytes: m.manifest.stages.map(s => s.handOffBytes)
        }, stage)
      } catch (err) {
        if (err instanceof NoRouteError && attempt < maxAttempts) {
          // capacity may be on its way (a heartbeat, a replacement); wait a little
          lastError = err
          this.log('job %s attempt %d: %s; waiting for capacity', job, attempt, err.message)
          // capacity may be on its way (a first heartbeat, a replacement): wait for a heartbeat that offers it
          const missing = err.stage
          await this.directory.waitFor(() => this.directory.servers(m.cid, missing).some(s => !this.bans.isBanned(s.peer)), Math.min(1000 * attempt, Math.max(1, deadline - Date.now())), 'capacity').catch(() => {})
          continue
        }
        throw new InferenceError(InferErrorCode.NOT_SERVING, (err as Error).message, (err as NoRouteError).stage, { cause: err })
      }
      this.onRoute?.(route.map(c => c.peer), stage, Date.now())
      opts.onRoute?.(route.map(c => c.peer), stage)
      const leases = opts.leases?.()
      for (const c of route) this.inflight.set(c.peer, (this.inflight.get(c.peer) ?? 0) + 1)
      const signal = AbortSignal.any([AbortSignal.timeout(Math.max(1, deadline - Date.now())), ...(opts.signal !== undefined ? [opts.signal] : [])])
      let answer
      try {
        answer = await callHop(this.host, { peer: route[0].peer, addrs: route[0].addrs }, requestFrame({
          job, manifest: m.cid, stage, deadline, route: route.slice(1).map(c => ({ peer: c.peer, addrs: c.addrs })),
          ...(leases !== undefined && Object.keys(leases).length > 0 ? { leases } : {})
        }, tensors), { signal })
      } catch (err) {
        opts.signal?.throwIfAborted()
        lastError = err as Error
        if (err instanceof HopUnreachableError) this.bans.ban(route[0].peer)
        this.log('job %s attempt %d: %e', job, attempt, err)
        continue
      } finally {
        for (const c of route) this.inflight.set(c.peer, (this.inflight.get(c.peer) ?? 1) - 1)
      }
      if (answer.kind === FrameKind.RESULT) {
        const h = parseResultHeader(answer.header)
        hops.push(...h.hops)
        for (const hop of h.hops) this.bans.clear(hop.peer)
        const byStage = new Map(hops.map(x => [x.stage, x.peer]))
        return {
          manifest: m.cid,
          outputs: rawTensors(answer),
          route: Array.from({ length: K }, (_, i) => byStage.get(i) ?? ''),
          hops,
          ms: performance.now() - t0,
          attempts: attempt
        }
      }
      if (answer.kind !== FrameKind.ERROR) { lastError = new Error(`unexpected frame kind ${answer.kind}`); continue }
      const h = parseErrorHeader(answer.header)
      lastError = new RemoteError(h.code, `stage ${h.stage} on ${h.peer.slice(-8)}: ${h.message}`, h.peer)
      if (!isRetryable(h.code)) throw new InferenceError(h.code, lastError.message, h.stage)
      if (h.code !== InferErrorCode.BUSY) this.bans.ban(h.peer)
      // keep the work done before the failed stage; replay that stage's input
      const done = h.hops.filter(x => x.stage < h.stage)
      const replay = rawTensors(answer)
      if (h.stage > stage && replay.length > 0) {
        hops.push(...done)
        stage = h.stage
        tensors = replay
      }
      this.log('job %s attempt %d failed at stage %d on %s (%s: %s), re-routing', job, attempt, h.stage, h.peer, h.code, h.message)
    }
    throw new InferenceError((lastError as RemoteError | undefined)?.code ?? 'ERR_FAILED', `job failed after ${maxAttempts} attempts: ${lastError?.message ?? 'deadline passed'}`, stage, { cause: lastError })
  }

  private offerHandlers = new Map<string, (stream: Stream, from: string, offer: Offer, lp: LengthPrefixedStream<Stream>) => Promise<void>>()
  private offersHandled = false

  /** Routes offers for `job` to `handler` (registers the offer protocol on first use). */
  async onOffers (job: string, handler: (stream: Stream, from: string, offer: Offer, lp: LengthPrefixedStream<Stream>) => Promise<void>): Promise<() => void> {
    if (!this.offersHandled) {
      await this.host.handle(OFFER_PROTOCOL, (stream, connection) => {
        void (async () => {
          const lp = lpStream(stream, { maxDataLength: MAX_OFFER_MESSAGE_BYTES })
          try {
            const m = decodeOfferMessage((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())
            if (m.type !== 'offer') throw new Error(`expected an offer, got ${m.type}`)
            const h = this.offerHandlers.get(m.job)
            if (h === undefined) {
              await lp.write(encodeOfferMessage({ type: 'decline', job: m.job, reason: 'no such job here (finished?)' }))
              await stream.close()
              return
            }
            await h(stream, connection.remotePeer.toString(), m, lp)
          } catch (err) {
            stream.abort(err as Error)
          }
        })()
      }, { maxInboundStreams: 256 })
      this.offersHandled = true
    }
    this.offerHandlers.set(job, handler)
    return () => { this.offerHandlers.delete(job) }
  }

  /**
   * Models the fleet serves right now, as announced in vehicles' heartbeats:
   * name, version, manifest CID, stage count and whether every stage has an
   * eligible vehicle. Waits up to `waitMs` to hear from vehicles.
   */
  async models (waitMs = 3000): Promise<ModelInfo[]> {
    await this.directory.waitFor(() => this.directory.models().size > 0, waitMs, 'vehicles').catch(() => {})
    const out: ModelInfo[] = []
    for (const cid of new Set(this.directory.models().values())) {
      try {
        const m = await this.resolve(cid, 5000)
        out.push({
          name: m.manifest.name,
          version: m.manifest.version,
          manifest: cid,
          stages: m.manifest.stages.length,
          vehiclesPerStage: m.manifest.stages.map(s => this.directory.servers(cid, s.index).length),
          ready: m.manifest.stages.every(s => this.directory.servers(cid, s.index).length > 0)
        })
      } catch { /* announced but not fetchable yet */ }
    }
    return out.sort((a, b) => a.name.localeCompare(b.name) || a.version.localeCompare(b.version))
  }

  /**
   * Runs many inputs as one batch job (announced, leased, pipelined; see
   * batch.ts). `onProgress` gets done / failed / items per second / ETA.
   */
  async batch (model: string | ResolvedModel, items: Tensor[][], opts: BatchOptions & { onProgress?: (p: BatchProgress) => void, onItem?: (e: ItemEvent) => void } = {}): Promise<BatchResult> {
    const m = typeof model === 'string' ? await this.resolve(model) : model
    const runner = new BatchRunner(this, m, { fleet: this.fleet, ...opts })
    if (opts.onProgress !== undefined) runner.addEventListener('progress', e => { opts.onProgress!((e as CustomEvent<BatchProgress>).detail) })
    return await runner.run(items, opts.onItem)
  }

  /** A peer's signed capacity record from the DHT (verified), or undefined. */
  async capacityRecord (peer: string, timeoutMs = 3000): Promise<CapacityRecord | undefined> {
    try {
      const value = await this.host.contentRouting.get(capacityRecordKey(peer), { signal: AbortSignal.timeout(timeoutMs) })
      return await decodeCapacityRecord(value, peerPublicKey)
    } catch (err) {
      this.log('no capacity record for %s: %e', peer, err)
      return undefined
    }
  }

  async close (): Promise<void> {
    if (this.offersHandled) await this.host.unhandle(OFFER_PROTOCOL).catch(() => {})
    this.directory.stop()
    await this.exchange.stop()
    if (this.ownsHost) await this.host.stop()
  }
}
