/**
 * Which stages this vehicle holds, and getting them: a model's manifest and
 * shards (from the local store, or peer to peer by CID, hash-verified),
 * loaded into the stage runtime and provided in the DHT. Stages are named
 * (`stages`), chosen by the vehicle among one model's (`autoStages`: keep n,
 * always the stage the swarm serves worst), or chosen across models
 * published to the fleet (`room`). A choice is claimed (the heartbeat says
 * so) before its shard loads, so vehicles choosing at once spread out.
 */
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { TypedEventEmitter } from '@libp2p/interface'
import { repeatingTask } from '@libp2p/utils'
import type { ComponentLogger, Logger, PeerId, Startable } from '@libp2p/interface'
import type { RepeatingTask } from '@libp2p/utils'
import type { ModelAnnouncement } from '../../protocols/jobs.ts'
import { cidOf, cidProblem, isCid } from '../models/cid.ts'
import { decodeManifest } from '../models/manifest.ts'
import type { Manifest } from '../models/manifest.ts'
import type { ShardExchange } from '../models/shard-exchange.ts'
import type { StageRuntime } from '../runtime/stage-runtime.ts'
import { IDLE_WAITS } from '../runtime/thread-priority.ts'
import type { AppliedPriority, StagePriority } from '../runtime/thread-priority.ts'
import { chooseStageToHost, spreadTieBreak } from '../scheduler/selection.ts'
import { step, within } from '../util/abortable.ts'
import type { FleetDirectory } from './directory.ts'
import type { OfferResponder } from './offer-responder.ts'

export interface HostedModel {
  /** Manifest CID, or a manifest.json path (its stage-<i>.onnx files beside it are imported). */
  model: string
  /** Stage indexes to hold. @default all, unless `autoStages` is set */
  stages?: number[]
  /** Let the vehicle choose: hold this many stages, each time the one the swarm serves worst. */
  autoStages?: number
}

export interface HostingEvents {
  shard: CustomEvent<{ manifest: string, stage: number, cid: string, source: 'local' | 'peer', bytes: number, ms: number }>
  /** `priority`: what the stage's session thread runs at (node/runtime/thread-priority.ts). */
  serving: CustomEvent<{ manifest: string, name: string, stage: number, priority?: AppliedPriority['set'] }>
  chose: CustomEvent<{ manifest: string, stage: number, providers: number }>
  announced: CustomEvent<{ manifest: string, name: string, version: string }>
  /** Something went wrong or is slow (`slow`: a stage still loading after slowLoadMs, see slowLoad). */
  error: CustomEvent<{ message: string, slow?: true }>
  /** Claims or held stages changed (the advertiser says so at once). */
  change: CustomEvent
}

export interface HostingComponents {
  peerId: PeerId
  logger: ComponentLogger
  runtime: Pick<StageRuntime, 'load' | 'served' | 'isAccepting' | 'stagePriority'>
  exchange: Pick<ShardExchange, 'get' | 'provide' | 'store'>
  directory: Pick<FleetDirectory, 'supply' | 'all' | 'waitFor'>
  jobs?: Pick<OfferResponder, 'addEventListener' | 'removeEventListener'>
}

export interface HostingInit {
  /** Stages this vehicle may hold across models published to the fleet. @default 0 */
  room?: number
  /** A stage still loading after this long is reported (slowLoad). @default SLOW_LOAD_MS */
  slowLoadMs?: number
}

/** How often a stage whose shard could not be had is tried again. */
export const RETRY_MS = 5000
/** How long a vehicle keeps looking for the manifest of a model it was given by CID before it gives up (many peers may be joining at once on a busy machine, or the car is on a poor link). */
const MANIFEST_PATIENCE_MS = 10 * 60_000
/** How often a vehicle that chooses re-checks which stage the swarm serves worst. */
export const CHOOSE_INTERVAL_MS = 3000
/** A stage loads and warms up in a second or two on a car's computer; one still loading after this is reported. */
export const SLOW_LOAD_MS = 20_000

/**
 * What a vehicle says of a stage still loading after `ms`: at SCHED_IDLE (the
 * default) its thread gets a core only when nothing else wants one, so on a
 * computer other programs keep busy it waits, by design, and the operator
 * should know why.
 */
export function slowLoad (model: string, stage: number, ms: number, priority: StagePriority | undefined): string {
  const why = priority === 'idle'
    ? `: ${IDLE_WAITS}`
    : priority === 'low' ? ': its stage threads run at nice 19, behind every other program on this computer (--stage-priority normal shares the cores)' : ''
  return `stage ${stage} of ${model} still loading after ${ms / 1000} s${why}`
}

export class StageHosting extends TypedEventEmitter<HostingEvents> implements Startable {
  private readonly c: HostingComponents
  private readonly room: number
  private readonly slowLoadMs: number
  private readonly log: Logger
  private readonly me: string
  private readonly tasks = new Set<RepeatingTask>()
  private readonly claimed = new Map<string, { manifest: string, stage: number }>()
  private readonly announced = new Map<string, Manifest>()
  private roomTask?: RepeatingTask
  private roomStart?: ReturnType<typeof setTimeout>
  /** Aborts what this service started (fetches, their retries) as it stops. */
  private lifetime = new AbortController()
  /** Work in progress that writes to the store or loads stages: stop waits for it, so nothing is written after. */
  private readonly working = new Set<Promise<unknown>>()
  private readonly onModel = (evt: CustomEvent<{ announcement: ModelAnnouncement, from: string }>): void => { void this.tracked(this.modelAnnounced(evt.detail.announcement, evt.detail.from)) }

  constructor (components: HostingComponents, init: HostingInit = {}) {
    super()
    this.c = components
    this.room = init.room ?? 0
    this.slowLoadMs = init.slowLoadMs ?? SLOW_LOAD_MS
    this.log = components.logger.forComponent('fleetmesh:hosting')
    this.me = components.peerId.toString()
  }

  start (): void {
    if (this.lifetime.signal.aborted) this.lifetime = new AbortController()
    if (this.room > 0) this.c.jobs?.addEventListener('model', this.onModel)
  }

  /** Stops choosing and fetching, and waits for the work in progress to end (a fetch aborted keeps its progress on disk). */
  async stop (): Promise<void> {
    this.c.jobs?.removeEventListener('model', this.onModel)
    this.lifetime.abort(new Error('stage hosting stopped'))
    clearTimeout(this.roomStart)
    for (const t of this.tasks) t.stop()
    this.tasks.clear()
    this.roomTask = undefined
    // work that was under way may start more before it sees the abort
    while (this.working.size > 0) await Promise.allSettled([...this.working])
  }

  /** `work`, counted as in progress until it settles (see stop). */
  private async tracked<T> (work: Promise<T>): Promise<T> {
    this.working.add(work)
    try { return await work } finally { this.working.delete(work) }
  }

  /** Stages chosen and being loaded, for heartbeats. */
  claims (): Array<{ manifest: string, stage: number }> { return [...this.claimed.values()] }

  /**
   * Gets a model's manifest and shards and loads the stages asked for. A
   * manifest file's directory seeds every stage file found beside it (they
   * are provided in the DHT); only the chosen stages are held. A stage whose
   * shard cannot be had yet is reported and retried in the background.
   */
  async host (m: HostedModel): Promise<void> { await this.tracked(this.hostNow(m)) }

  private async hostNow (m: HostedModel): Promise<void> {
    const { manifestCid, manifest, seeded } = await this.manifestOf(m.model)
    await this.c.exchange.provide(manifestCid)
    for (const cid of seeded) await this.c.exchange.provide(cid)
    if (m.autoStages !== undefined) { this.keepChoosing(manifestCid, manifest, m.autoStages); return }
    const wanted = m.stages ?? manifest.stages.map(s => s.index)
    for (const i of wanted) if (manifest.stages[i] === undefined) throw new RangeError(`model ${manifest.name} has no stage ${i} (it has ${manifest.stages.length})`)
    for (const i of wanted) {
      try { await this.load(manifestCid, manifest, i) } catch (err) {
        this.error(`stage ${i}: ${(err as Error).message}; retrying every ${RETRY_MS / 1000} s`)
        this.retry(manifestCid, manifest, i)
      }
    }
  }

  private async manifestOf (model: string): Promise<{ manifestCid: string, manifest: Manifest, seeded: string[] }> {
    if (isCid(model)) return { manifestCid: model, manifest: decodeManifest(await this.fetchPatiently(model, MANIFEST_PATIENCE_MS)), seeded: [] }
    let bytes: Uint8Array
    try { bytes = await readFile(model) } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
      throw new Error(`model ${model}: neither a manifest CID${/^(baf|Qm)/.test(model) ? ` (${cidProblem(model)})` : ''} nor a manifest file it can read (${code})`, { cause: err })
    }
    const manifest = decodeManifest(bytes)
    const manifestCid = await this.c.exchange.store.put(bytes)
    const seeded: string[] = []
    for (const s of manifest.stages) {
      const file = join(dirname(model), `stage-${s.index}.onnx`)
      const shard = await readFile(file).catch(() => undefined)
      if (shard === undefined) continue
      if (cidOf(shard) !== s.cid) throw new Error(`${file} does not match the manifest (CID ${cidOf(shard)}, manifest says ${s.cid})`)
      await this.c.exchange.store.put(shard, s.cid)
      seeded.push(s.cid)
    }
    return { manifestCid, manifest, seeded }
  }

  /** Fetches by CID, retrying while providers may still be appearing in the DHT (many peers joining at once). */
  private async fetchPatiently (cid: string, forMs: number): Promise<Uint8Array> {
    const until = Date.now() + forMs
    for (let attempt = 1; ; attempt++) {
      const signal = AbortSignal.any([AbortSignal.timeout(Math.max(1000, Math.min(15_000, until - Date.now()))), this.lifetime.signal])
      try {
        // the attempt ends with its time, whatever it waits on; the fetch itself (its writes) is waited for by stop
        this.lifetime.signal.throwIfAborted()
        const getting = this.c.exchange.get(cid, { signal })
        this.tracked(getting).catch(() => {})
        return await step(getting, signal)
      } catch (err) {
        if (Date.now() >= until || this.lifetime.signal.aborted) throw err
        this.log('fetch of %s, attempt %d: %e', cid, attempt, err)
        if (attempt === 1) this.error(`${(err as Error).message}; retrying`)
        await step(new Promise(resolve => setTimeout(resolve, Math.min(2000, 250 * attempt))), this.lifetime.signal)
      }
    }
  }

  /** Gets a stage's shard, loads it, provides it. */
  private async load (manifestCid: string, manifest: Manifest, i: number): Promise<void> { await this.tracked(this.loadNow(manifestCid, manifest, i)) }

  private async loadNow (manifestCid: string, manifest: Manifest, i: number): Promise<void> {
    this.lifetime.signal.throwIfAborted()
    const entry = manifest.stages[i]
    const t0 = performance.now()
    const local = await this.c.exchange.store.get(entry.cid)
    const shard = local ?? await this.fetchPatiently(entry.cid, 30_000)
    this.safeDispatchEvent('shard', { detail: { manifest: manifestCid, stage: i, cid: entry.cid, source: local !== undefined ? 'local' : 'peer', bytes: shard.byteLength, ms: performance.now() - t0 } })
    this.lifetime.signal.throwIfAborted()
    const slow = setTimeout(() => { this.error(slowLoad(manifest.name, i, this.slowLoadMs, this.c.runtime.stagePriority()), true) }, this.slowLoadMs)
    slow.unref?.()
    let priority
    try { priority = await this.c.runtime.load(manifestCid, manifest, i, shard) } finally { clearTimeout(slow) }
    await this.c.exchange.provide(entry.cid)
    this.safeDispatchEvent('serving', { detail: { manifest: manifestCid, name: manifest.name, stage: i, ...(priority !== undefined ? { priority: priority.set } : {}) } })
    this.safeDispatchEvent('change', {})
  }

  private retry (manifestCid: string, manifest: Manifest, i: number): void {
    if (this.lifetime.signal.aborted) return
    const task = repeatingTask(async () => {
      try {
        await this.load(manifestCid, manifest, i)
        task.stop()
        this.tasks.delete(task)
      } catch (err) { this.log('stage %d still not loadable: %e', i, err) }
    }, RETRY_MS)
    this.tasks.add(task)
    task.start()
  }

  /** Stage supply per stage of a model, as heard (claims count as supply). */
  private supply (manifestCid: string, manifest: Manifest): Array<{ stage: number, providers: number, meanMsPerItem: number }> {
    return manifest.stages.map(s => ({ stage: s.index, ...this.c.directory.supply(manifestCid, s.index, this.me) }))
  }

  private heldOf (manifestCid: string): Set<number> {
    return new Set(this.c.runtime.served().filter(s => s.manifest === manifestCid).map(s => s.stage))
  }

  /** Claims a stage (announced in the heartbeat), loads it, and drops the claim. */
  private async claimAndLoad (manifestCid: string, manifest: Manifest, stage: number, providers: number): Promise<void> {
    const key = `${manifestCid}/${stage}`
    this.claimed.set(key, { manifest: manifestCid, stage })
    this.safeDispatchEvent('change', {})
    this.safeDispatchEvent('chose', { detail: { manifest: manifestCid, stage, providers } })
    try { await this.load(manifestCid, manifest, stage) } finally {
      this.claimed.delete(key)
      this.safeDispatchEvent('change', {})
    }
  }

  /** Keeps `count` stages of one model held, choosing the worst-served one each time. */
  private keepChoosing (manifestCid: string, manifest: Manifest, count: number): void {
    const want = Math.min(count, manifest.stages.length)
    const task = repeatingTask(async (opts) => {
      try {
        // give heartbeats a moment to arrive before judging the swarm
        await this.c.directory.waitFor(() => this.c.directory.all().length > 0, { signal: within(3000, opts?.signal) }).catch(() => {})
        while (this.heldOf(manifestCid).size < want && opts?.signal?.aborted !== true) {
          const supply = this.supply(manifestCid, manifest)
          const stage = chooseStageToHost(supply, this.heldOf(manifestCid), spreadTieBreak(this.me))
          if (stage === undefined) return
          await this.claimAndLoad(manifestCid, manifest, stage, supply[stage].providers)
        }
      } catch (err) {
        this.error(`auto-hosting: ${(err as Error).message}`)
      }
    }, CHOOSE_INTERVAL_MS, { runImmediately: true })
    this.tasks.add(task)
    task.start()
  }

  /** A published model: remember it and consider holding a stage of it. */
  private async modelAnnounced (a: ModelAnnouncement, from: string): Promise<void> {
    if (this.announced.has(a.manifest)) return
    try {
      const providers = a.addrs.length > 0 ? [{ id: peerIdFromString(from), addrs: a.addrs }] : undefined
      const manifest = decodeManifest(await this.c.exchange.get(a.manifest, { signal: AbortSignal.any([AbortSignal.timeout(15_000), this.lifetime.signal]), ...(providers !== undefined ? { providers } : {}) }))
      if (this.announced.has(a.manifest)) return
      this.announced.set(a.manifest, manifest)
      await this.c.exchange.provide(a.manifest)
      this.safeDispatchEvent('announced', { detail: { manifest: a.manifest, name: manifest.name, version: manifest.version } })
    } catch (err) {
      this.error(`model ${a.name}@${a.version}: ${(err as Error).message}`)
      return
    }
    // (a fetch that won its race with stop starts nothing)
    if (this.roomTask === undefined && !this.lifetime.signal.aborted) {
      // jitter the first look, so earlier choosers' claims are heard before we choose
      this.roomTask = repeatingTask(async () => { await this.useRoom() }, CHOOSE_INTERVAL_MS)
      this.tasks.add(this.roomTask)
      this.roomStart = setTimeout(() => { if (!this.lifetime.signal.aborted) { this.roomTask?.start(); this.roomTask?.run() } }, Math.random() * 1500)
    }
  }

  /**
   * One hosting step within `room`: first a stage nobody holds or loads (in
   * any model), then a first stage of a model this vehicle holds none of;
   * always the worst-served stage, ties spread by peer id.
   */
  private async useRoom (): Promise<void> {
    if (!this.c.runtime.isAccepting || this.c.runtime.served().length + this.claimed.size >= this.room) return
    const options: Array<{ cid: string, manifest: Manifest, stage: number, providers: number, priority: number }> = []
    for (const [cid, manifest] of this.announced) {
      const held = this.heldOf(cid)
      const supply = this.supply(cid, manifest)
      const stage = chooseStageToHost(supply, held, spreadTieBreak(this.me))
      if (stage === undefined) continue
      const uncovered = supply[stage].providers === 0
      if (held.size > 0 && !uncovered) continue
      options.push({ cid, manifest, stage, providers: supply[stage].providers, priority: (uncovered ? 0 : 2) + (held.size > 0 ? 1 : 0) })
    }
    options.sort((a, b) => a.priority - b.priority || a.providers - b.providers)
    const pick = options[0]
    if (pick === undefined) return
    try { await this.claimAndLoad(pick.cid, pick.manifest, pick.stage, pick.providers) } catch (err) {
      this.error(`hosting: ${(err as Error).message}`)
    }
  }

  private error (message: string, slow?: true): void {
    this.log(message)
    this.safeDispatchEvent('error', { detail: { message, ...(slow === true ? { slow } : {}) } })
  }
}
