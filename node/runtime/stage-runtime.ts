/**
 * The stage runtime: the onnxruntime sessions of the stages this node holds,
 * their measured speed, the power budget (how many runs at once) and whether
 * the node takes work at all. It owns that state; the vehicle's governor is
 * the one caller of `pause`, `resume` and `drain`. It does no networking:
 * the infer protocol handler (infer-handler.ts) asks it to admit and run.
 */
import { TypedEventEmitter } from '@libp2p/interface'
import type { ComponentLogger, Logger, Startable } from '@libp2p/interface'
import { MICRO_BATCH } from '../../protocols/capacity.ts'
import type { ServedStage } from '../../protocols/capacity.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { roundsHandOff } from '../models/manifest.ts'
import type { Manifest, StageEntry } from '../models/manifest.ts'
import { roundedToFloat16 } from '../../protocols/tensor.ts'
import { threadSession, workerSession } from './session-worker.ts'
import type { StageSession } from './session-worker.ts'
import { DEFAULT_STAGE_PRIORITY } from './thread-priority.ts'
import type { AppliedPriority, StagePriority } from './thread-priority.ts'
import { checkStageInputs, sampleTensor, withCaps } from '../models/specs.ts'
import type { FleetMetrics } from '../metrics.ts'

export interface StageRuntimeComponents {
  logger: ComponentLogger
  metrics: FleetMetrics
}

export interface StageRuntimeInit {
  /** Threads per session. @default 1 */
  intraOpThreads?: number
  /** Items queued per stage before the stage counts as full. @default 32 */
  maxQueue?: number
  /**
   * Run each stage's session on a worker thread of its own, so a stage run
   * does not stall this node's networking (onnxruntime-node runs a session
   * synchronously on the calling thread). @default true
   */
  worker?: boolean
  /** The CPU priority of the sessions' worker threads (thread-priority.ts). @default 'idle' */
  priority?: StagePriority
}

export interface StageRuntimeEvents {
  /** A stage run finished (for the heartbeat and metrics). */
  'stage:run': CustomEvent<{ manifest: string, stage: number, ms: number }>
}

/** The vehicle is leaving; the request is handed back to its caller. */
export class DepartingError extends Error {
  readonly name = 'DepartingError'
  readonly code = 'ERR_DEPARTING'
  constructor () { super('this vehicle is leaving the mesh') }
}

/** A request admitted while the node takes work; `signal` aborts when the node departs. */
export interface Admission { signal: AbortSignal, release: () => void }

export interface DrainReport { inflight: number, finished: number, handedOff: number, stuck: number, ms: number }

interface Loaded {
  manifestCid: string
  manifest: Manifest
  entry: StageEntry
  session: StageSession
  tail: Promise<unknown>
  queued: number
  msPerItem: number
  /** Per item when run MICRO_BATCH at a time (0 when the batch size is fixed). */
  batchMsPerItem: number
}

const key = (manifest: string, stage: number): string => `${manifest}/${stage}`

export class StageRuntime extends TypedEventEmitter<StageRuntimeEvents> implements Startable {
  private readonly components: StageRuntimeComponents
  private readonly init: StageRuntimeInit
  private readonly log: Logger
  private readonly stages = new Map<string, Loaded>()
  /** Takes no work until the governor (or a client's local runner) resumes it. */
  private accepting = false
  private readonly inflight = new Set<AbortController>()
  /** Stage runs allowed at once across all stages (the power budget). */
  private maxSessions = 0
  private running = 0
  private readonly slotWaiters: Array<() => void> = []

  constructor (components: StageRuntimeComponents, init: StageRuntimeInit = {}) {
    super()
    this.components = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:runtime')
  }

  start (): void {}

  async stop (): Promise<void> {
    this.accepting = false
    for (const s of this.stages.values()) await s.tail.catch(() => {})
    for (const s of this.stages.values()) await s.session.release().catch(() => {})
    this.stages.clear()
  }

  /** Loads a stage's shard into a session, warms it up (measuring its speed) and holds it; returns the priority its thread runs at. */
  async load (manifestCid: string, manifest: Manifest, stage: number, shard: Uint8Array): Promise<AppliedPriority | undefined> {
    const entry = manifest.stages[stage]
    if (entry === undefined) throw new RangeError(`manifest ${manifestCid} has no stage ${stage}`)
    const tuning = { intraOpThreads: this.init.intraOpThreads ?? 1 }
    const session = (this.init.worker ?? true) ? await workerSession(shard, tuning, this.init.priority) : await threadSession(shard, tuning)
    if (session.priority?.problem !== undefined) this.log('stage %d of %s: %s', stage, manifest.name, session.priority.problem)
    let timing = { msPerItem: 0, batchMsPerItem: 0 }
    try { timing = await warmUp(session, entry) } catch (err) {
      await session.release()
      throw new Error(`stage ${stage} of ${manifest.name} does not run here: ${(err as Error).message}`)
    }
    this.stages.set(key(manifestCid, stage), { manifestCid, manifest, entry, session, tail: Promise.resolve(), queued: 0, ...timing })
    this.log('holding %s stage %d (%d ms per item, priority %s)', manifest.name, stage, timing.msPerItem, session.priority?.set ?? 'of this thread')
    return session.priority
  }

  has (manifest: string, stage: number): boolean { return this.stages.has(key(manifest, stage)) }

  /** The priority its sessions' threads are asked to run at; undefined when sessions run on this thread. */
  stagePriority (): StagePriority | undefined { return (this.init.worker ?? true) ? (this.init.priority ?? DEFAULT_STAGE_PRIORITY) : undefined }

  /** The manifest of a held stage's model. */
  manifestOf (manifest: string): Manifest | undefined {
    for (const s of this.stages.values()) if (s.manifestCid === manifest) return s.manifest
    return undefined
  }

  /** Whether the stage's queue is full (the caller should answer BUSY). */
  isFull (manifest: string, stage: number): boolean {
    return (this.stages.get(key(manifest, stage))?.queued ?? 0) >= (this.init.maxQueue ?? 32)
  }

  /** What this node holds, for heartbeats and records. */
  served (): ServedStage[] {
    return [...this.stages.values()].map(s => ({
      manifest: s.manifestCid,
      stage: s.entry.index,
      cid: s.entry.cid,
      msPerItem: Math.round(s.msPerItem * 100) / 100,
      ...(s.batchMsPerItem > 0 ? { batchMsPerItem: Math.round(s.batchMsPerItem * 100) / 100 } : {})
    }))
  }

  get isAccepting (): boolean { return this.accepting }

  /** Stops taking new work (requests get DEPARTING); work in flight goes on. */
  pause (): void { this.accepting = false }

  /** Takes work again, at most `maxSessions` stage runs at once. */
  resume (maxSessions: number): void {
    this.setMaxSessions(maxSessions)
    this.accepting = true
  }

  /** Caps concurrent stage runs (from the power budget); 0 runs nothing new. */
  setMaxSessions (n: number): void {
    this.maxSessions = n
    while (this.running < this.maxSessions && this.slotWaiters.length > 0) this.slotWaiters.shift()!()
  }

  /** Admits a request if the node takes work; release the admission when the request is done. */
  admit (): Admission | undefined {
    if (!this.accepting) return undefined
    const ac = new AbortController()
    this.inflight.add(ac)
    return { signal: ac.signal, release: () => { this.inflight.delete(ac) } }
  }

  /** Requests admitted and not yet released (running, queued, or waiting on a later hop). */
  inFlight (): number { return this.inflight.size }

  /** Items running or queued. */
  queued (): number {
    let n = 0
    for (const s of this.stages.values()) n += s.queued
    return n
  }

  /**
   * Stops taking work and lets admitted requests finish for up to `boundMs`;
   * the rest are aborted with DepartingError (their handlers hand the work
   * back to the caller), then the runtime takes nothing until resumed.
   */
  async drain (boundMs: number): Promise<DrainReport> {
    this.pause()
    const t0 = performance.now()
    const start = this.inflight.size
    while (this.inflight.size > 0 && performance.now() - t0 < boundMs) await sleep(20)
    const left = this.inflight.size
    for (const ac of this.inflight) ac.abort(new DepartingError())
    // the handed-back requests answer DEPARTING and close; give them a moment
    const t1 = performance.now()
    while (this.inflight.size > 0 && performance.now() - t1 < 1000) await sleep(10)
    this.setMaxSessions(0)
    return { inflight: start, finished: start - left, handedOff: left - this.inflight.size, stuck: this.inflight.size, ms: performance.now() - t0 }
  }

  /**
   * Runs one held stage (queued behind the session's other runs, within the
   * power budget) and returns what the next stage needs: tensors produced
   * here or passed through, and `ms`, how long the session ran (on its own
   * thread: handing the tensors over to it and back is not in it).
   */
  async run (manifestCid: string, stage: number, inputs: Tensor[], signal: AbortSignal = new AbortController().signal): Promise<{ outputs: Tensor[], ms: number }> {
    const s = this.stages.get(key(manifestCid, stage))
    if (s === undefined) throw new Error(`not holding ${manifestCid} stage ${stage}`)
    const feeds = checkStageInputs(withCaps(s.entry.inputs, s.manifest.inputs), inputs, s.entry.maxInputBytes)
    s.queued++
    const job = s.tail.then(async () => {
      await this.acquireSlot(signal)
      try {
        const t0 = performance.now()
        const r = await s.session.run(feeds)
        return { out: r.outputs, ms: r.ms, wallMs: performance.now() - t0 }
      } finally { this.releaseSlot() }
    })
    s.tail = job.catch(() => {})
    try {
      // what a run costs a caller here (the hand-over to the session's thread too) times this stage for routing;
      // what it returns (and receipts attest) is the session's own run
      const { out, ms, wallMs } = await raceAbort(job, signal)
      s.msPerItem = s.msPerItem === 0 ? wallMs : s.msPerItem * 0.8 + wallMs * 0.2
      this.components.metrics.stageRun(`…${manifestCid.slice(-6)}/${stage}`, wallMs)
      this.safeDispatchEvent('stage:run', { detail: { manifest: manifestCid, stage, ms: wallMs } })
      const pool = new Map<string, Tensor>()
      for (const t of inputs) pool.set(t.name, t)
      for (const t of out) pool.set(t.name, t)
      const rounds = roundsHandOff(s.manifest, stage)
      const outputs = s.entry.outputs.map(o => {
        const t = pool.get(o.name)
        if (t === undefined) throw new Error(`stage ${stage} did not produce ${o.name}`)
        return rounds ? roundedToFloat16(t) : t
      })
      return { outputs, ms }
    } finally {
      s.queued--
    }
  }

  private async acquireSlot (signal: AbortSignal): Promise<void> {
    while (this.running >= this.maxSessions) {
      signal.throwIfAborted()
      await new Promise<void>(resolve => {
        this.slotWaiters.push(resolve)
        signal.addEventListener('abort', () => { resolve() }, { once: true })
      })
    }
    signal.throwIfAborted()
    this.running++
  }

  private releaseSlot (): void {
    this.running--
    this.setMaxSessions(this.maxSessions)
  }
}

/**
 * First runs at the planning shape: the first run is slow, and routing wants
 * a measured speed. When the batch dimension is free, MICRO_BATCH items at
 * once are timed too.
 */
async function warmUp (session: StageSession, entry: StageEntry): Promise<{ msPerItem: number, batchMsPerItem: number }> {
  if (!entry.inputs.every(i => i.probe !== undefined)) return { msPerItem: 0, batchMsPerItem: 0 }
  const time = async (feeds: Tensor[], runs: number, items: number): Promise<number> => {
    await session.run(feeds)
    let best = Infinity
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now()
      await session.run(feeds)
      best = Math.min(best, (performance.now() - t0) / items)
    }
    return best
  }
  const msPerItem = await time(entry.inputs.map((spec, i) => sampleTensor(spec, spec.probe!, i + 1)), 3, 1)
  const batchable = entry.inputs.every(i => i.shape[0] === null && i.probe![0] === 1)
  const batchMsPerItem = batchable ? await time(entry.inputs.map((spec, i) => sampleTensor(spec, [MICRO_BATCH, ...spec.probe!.slice(1)], i + 1)), 2, MICRO_BATCH) : 0
  return { msPerItem, batchMsPerItem }
}

async function sleep (ms: number): Promise<void> { await new Promise(resolve => setTimeout(resolve, ms)) }

/** `p`, or the signal's reason as soon as it aborts. */
export async function raceAbort<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw signal.reason
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try { return await Promise.race([p, aborted]) } finally { signal.removeEventListener('abort', onAbort!) }
}
