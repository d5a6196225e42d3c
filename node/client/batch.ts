/**
 * Batch jobs: thousands of inputs through the mesh.
 *
 * The runner announces the job on the fleet's jobs topic; eligible vehicles
 * answer with offers; it leases their capacity (renewing each lease while the
 * job runs) and streams items through pipelines of leased vehicles with a
 * bounded window, so every stage stays busy without unbounded queues. A lease
 * that cannot be renewed is lost: that vehicle gets no new items and its
 * in-flight items fail over (the client replays them from the failed stage).
 * The job is re-announced every few seconds so vehicles that join later offer
 * too. Each item's result is delivered exactly once.
 */
import { randomUUID } from 'node:crypto'
import { TypedEventEmitter } from '@libp2p/interface'
import { repeatingTask } from '@libp2p/utils'
import type { LengthPrefixedStream } from '@libp2p/utils'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Libp2p, Stream } from '@libp2p/interface'
import { jobsTopic, DEFAULT_FLEET } from '../../protocols/ids.ts'
import { encodeJobsMessage } from '../../protocols/jobs.ts'
import { DEFAULT_LEASE_TTL_MS, decodeOfferMessage, encodeOfferMessage } from '../../protocols/offer.ts'
import type { Offer } from '../../protocols/offer.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { hostAddrs } from '../host.ts'
import { chooseMicroBatch, concatBatch, splitBatch, trimText } from './microbatch.ts'
import type { OwnCredentials } from '../membership/membership.ts'
import type { IncomingOffer, OfferInbox } from './offer-inbox.ts'
import type { InferResult, PipelineRunner } from './pipeline.ts'
import type { ResolvedModel } from './resolver.ts'

/** Jobs measured for the mesh's own cost before `microBatch: 'auto'` decides again (see chooseMicroBatch). */
const MESH_SAMPLES = 8

export interface BatchComponents {
  pubsub: Pick<GossipSub, 'publish' | 'subscribe'>
  /** This client's certificate chain, attached to announcements (absent in an open fleet). */
  credentials?: OwnCredentials
  addresses: Pick<Libp2p, 'getMultiaddrs'>
  offers: Pick<OfferInbox, 'listen'>
  pipeline: Pick<PipelineRunner, 'infer'>
}

export interface BatchOptions {
  signal?: AbortSignal
  fleet?: string
  /** Lease lifetime; renewed at a third of it. @default 5000 */
  leaseTtlMs?: number
  /** Items in flight at once. @default stages x the fewest leased holders of any stage (2..16) */
  concurrency?: number
  /** How long to wait for offers before starting without them. @default 3000 */
  offerWaitMs?: number
  /** Attempts per item. @default 30 */
  maxAttempts?: number
  /** Deadline per item. @default 120000 */
  itemTimeoutMs?: number
  /**
   * Items run together along the batch dimension. 'auto': MICRO_BATCH when the
   * leased vehicles run the stages cheaper per item batched (their offers say);
   * else the first MESH_SAMPLES items go alone and measure what the mesh costs
   * a job beside its stages, and MICRO_BATCH when that makes groups pay
   * (chooseMicroBatch), else 1. @default 'auto'
   */
  microBatch?: number | 'auto'
}

export interface BatchProgress { done: number, failed: number, total: number, itemsPerS: number, etaS: number }
export interface ItemEvent { index: number, result?: InferResult, error?: Error }

export interface BatchResult {
  job: string
  results: Array<InferResult | Error | undefined>
  done: number
  failed: number
  duplicates: number
  ms: number
  itemsPerS: number
  leases: number
  leasesLost: number
  /** Items per micro-batch used (at the end, with 'auto' decided again from meshMs). */
  microBatch: number
  /** With microBatch 'auto' and no compute gain offered: the median ms the first jobs spent beyond their stages' compute. */
  meshMs?: number
}

interface HeldLease { peer: string, lease: string, stages: number[], inFlight: number, lp: LengthPrefixedStream<Stream>, stream: Stream, lost: boolean }

export interface BatchEvents {
  progress: CustomEvent<BatchProgress>
  lease: CustomEvent<{ peer: string, stages: number[] }>
  'lease-lost': CustomEvent<{ peer: string, error: string }>
}

export class BatchRunner extends TypedEventEmitter<BatchEvents> {
  readonly job = randomUUID()
  private readonly c: BatchComponents
  private readonly model: ResolvedModel
  private readonly opts: BatchOptions
  private readonly leases = new Map<string, HeldLease>()
  private leasesLost = 0
  private leasesGranted = 0
  private finished = false
  private readonly offers: Offer[] = []
  /** The offers taken, in order (each vehicle's stages and timings). */
  get offered (): readonly Offer[] { return this.offers }
  /** Current route of each item in flight. */
  readonly routes = new Map<number, string[]>()

  constructor (components: BatchComponents, model: ResolvedModel, opts: BatchOptions = {}) {
    super()
    this.c = components
    this.model = model
    this.opts = opts
  }

  /** Peers holding a live lease. */
  leasedPeers (): Set<string> { return new Set([...this.leases.values()].filter(l => !l.lost).map(l => l.peer)) }

  /** Items whose current route goes through `peer`. */
  itemsThrough (peer: string): number[] { return [...this.routes].filter(([, r]) => r.includes(peer)).map(([i]) => i) }

  private async onOffer ({ stream, from, offer, lp }: IncomingOffer): Promise<void> {
    if (this.finished) {
      await lp.write(encodeOfferMessage({ type: 'decline', job: offer.job, reason: 'job finished' }))
      await stream.close()
      return
    }
    this.offers.push(offer)
    const ttlMs = this.opts.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS
    const held: HeldLease = { peer: from, lease: randomUUID(), stages: offer.stages.map(s => s.stage), inFlight: offer.maxInFlight, lp, stream, lost: false }
    await lp.write(encodeOfferMessage({ type: 'lease', job: this.job, lease: held.lease, stages: held.stages, inFlight: held.inFlight, ttlMs }))
    this.leases.get(from)?.stream.abort(new Error('replaced by a new lease'))
    this.leases.set(from, held)
    this.leasesGranted++
    this.safeDispatchEvent('lease', { detail: { peer: from, stages: held.stages } })
    // renew until the job ends; a missed renewal loses the lease
    try {
      while (!this.finished) {
        await new Promise(resolve => setTimeout(resolve, ttlMs / 3))
        if (this.finished) break
        await lp.write(encodeOfferMessage({ type: 'renew', lease: held.lease, ttlMs }), { signal: AbortSignal.timeout(ttlMs) })
        const ack = decodeOfferMessage((await lp.read({ signal: AbortSignal.timeout(ttlMs) })).subarray())
        if (ack.type !== 'ack') throw new Error(`expected ack, got ${ack.type}`)
      }
      await lp.write(encodeOfferMessage({ type: 'release', lease: held.lease })).catch(() => {})
      await stream.close().catch(() => {})
    } catch (err) {
      if (this.finished) return
      held.lost = true
      this.leasesLost++
      if (this.leases.get(from) === held) this.leases.delete(from)
      this.safeDispatchEvent('lease-lost', { detail: { peer: from, error: (err as Error).message } })
      stream.abort(err as Error)
    }
  }

  private async announce (items: number, deadline: number): Promise<void> {
    const fleet = this.opts.fleet ?? DEFAULT_FLEET
    const chain = this.c.credentials?.chain()
    await this.c.pubsub.publish(jobsTopic(fleet), encodeJobsMessage({
      kind: 'job',
      ...(chain !== undefined ? { membership: chain } : {}),
      job: { job: this.job, manifest: this.model.cid, items, deadline, issuedAt: Date.now(), addrs: hostAddrs(this.c.addresses), requirements: {} }
    })).catch(() => {})
  }

  /** Runs every item; resolves when each has a result or has failed for good. */
  async run (items: Tensor[][], onItem?: (e: ItemEvent) => void): Promise<BatchResult> {
    const t0 = performance.now()
    const K = this.model.manifest.stages.length
    const deadline = Date.now() + Math.max(60_000, items.length * 1000)
    const stopOffers = await this.c.offers.listen(this.job, async (o) => { await this.onOffer(o) })
    this.c.pubsub.subscribe(jobsTopic(this.opts.fleet ?? DEFAULT_FLEET))
    // announced now and every 2 s, so vehicles that join later offer too
    const reannounce = repeatingTask(async () => { await this.announce(items.length, deadline) }, 2000, { runImmediately: true })
    reannounce.start()
    // wait for offers covering every stage (or give up waiting and use whoever serves)
    const covered = (): boolean => this.model.manifest.stages.every(s => [...this.leases.values()].some(l => l.stages.includes(s.index)))
    const waitUntil = Date.now() + (this.opts.offerWaitMs ?? 3000)
    while (!covered() && Date.now() < waitUntil && this.opts.signal?.aborted !== true) await new Promise(resolve => setTimeout(resolve, 50))
    // one item per stage per pipeline: pipelines = the fewest leased holders of any stage
    const holders = this.model.manifest.stages.map(s => [...this.leases.values()].filter(l => l.stages.includes(s.index)).length)
    const concurrency = this.opts.concurrency ?? Math.max(2, Math.min(16, K * Math.max(1, Math.min(...holders))))
    const batchable = this.model.manifest.inputs.every(i => i.shape[0] === null) && items.every(item => item.every(t => t.dims[0] === 1))
    let micro = !batchable ? 1 : typeof this.opts.microBatch === 'number' ? Math.max(1, this.opts.microBatch) : chooseMicroBatch(this.offers, K)
    // 'auto' without a compute gain: the first jobs measure what the mesh costs a job beside its stages, then decide again
    const meshMs: number[] = []
    let meshMedian: number | undefined
    let measuring = batchable && micro === 1 && typeof this.opts.microBatch !== 'number'
    const measured = (r: InferResult): void => {
      meshMs.push(Math.max(0, r.ms - r.hops.reduce((s, h) => s + h.ms, 0)))
      if (meshMs.length < MESH_SAMPLES) return
      measuring = false
      meshMedian = [...meshMs].sort((a, b) => a - b)[meshMs.length >> 1]
      micro = chooseMicroBatch(this.offers, K, 0.9, meshMedian)
    }

    const results: BatchResult['results'] = new Array(items.length)
    let done = 0; let failed = 0; let duplicates = 0; let next = 0
    const leaseMap = (): Record<string, string> => Object.fromEntries([...this.leases.values()].filter(l => !l.lost).map(l => [l.peer, l.lease]))
    const progress = (): void => {
      const s = (performance.now() - t0) / 1000
      const rate = done / Math.max(s, 1e-3)
      this.safeDispatchEvent('progress', { detail: { done, failed, total: items.length, itemsPerS: rate, etaS: rate > 0 ? (items.length - done - failed) / rate : Infinity } })
    }
    const aborted = (): boolean => this.opts.signal?.aborted === true
    // the window counts items: with micro-batches, fewer groups (but at least one per stage)
    const groupsFor = (m: number): number => m > 1 && this.opts.concurrency === undefined ? Math.max(K, Math.ceil(concurrency / m)) : concurrency
    const worker = async (w: number): Promise<void> => {
      while (next < items.length && !aborted() && w < groupsFor(micro)) {
        const first = next
        next = Math.min(items.length, next + micro)
        const group = Array.from({ length: next - first }, (_, k) => first + k)
        try {
          const input = group.length === 1 ? items[first] : concatBatch(group.map(i => items[i]))
          const r = await this.c.pipeline.infer(this.model, input, {
            ...(this.opts.signal !== undefined ? { signal: this.opts.signal } : {}),
            maxAttempts: this.opts.maxAttempts ?? 30,
            timeoutMs: this.opts.itemTimeoutMs ?? 120_000,
            prefer: this.leasedPeers(),
            leases: leaseMap,
            onRoute: (peers, firstStage) => {
              for (const i of group) {
                const prev = this.routes.get(i) ?? []
                this.routes.set(i, [...prev.slice(0, firstStage), ...peers])
              }
            }
          })
          if (measuring && group.length === 1) measured(r)
          // a text row as the item alone would have it, without the group's padding
          const split = group.length === 1 ? [r.outputs] : splitBatch(r.outputs, group.map(i => items[i][0].dims[0])).map(trimText)
          group.forEach((i, k) => {
            if (results[i] !== undefined && !(results[i] instanceof Error)) { duplicates++; return }
            const ri = { ...r, outputs: split[k] }
            results[i] = ri
            done++
            onItem?.({ index: i, result: ri })
          })
        } catch (err) {
          if (aborted()) break
          for (const i of group) {
            results[i] = err as Error
            failed++
            onItem?.({ index: i, error: err as Error })
          }
        } finally {
          for (const i of group) this.routes.delete(i)
        }
        progress()
      }
    }
    try {
      await Promise.all(Array.from({ length: Math.min(groupsFor(micro), Math.ceil(items.length / micro)) }, async (_, w) => { await worker(w) }))
    } finally {
      this.finished = true
      reannounce.stop()
      await stopOffers()
      for (const l of this.leases.values()) {
        await l.lp.write(encodeOfferMessage({ type: 'release', lease: l.lease })).catch(() => {})
        await l.stream.close().catch(() => {})
      }
    }
    this.opts.signal?.throwIfAborted()
    const ms = performance.now() - t0
    return { job: this.job, results, done, failed, duplicates, ms, itemsPerS: done / (ms / 1000), leases: this.leasesGranted, leasesLost: this.leasesLost, microBatch: micro, ...(meshMedian !== undefined ? { meshMs: Math.round(meshMedian * 10) / 10 } : {}) }
  }
}
