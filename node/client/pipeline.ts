/**
 * The pipeline runner: one job through the mesh with failover. It picks a
 * route (one peer per stage) from the stage locator, sends the input to the
 * first hop and reads the result. If a hop fails it bans that peer and
 * replays only the failed stage's input on another, keeping the stages that
 * already ran; each job completes at most once from the caller's view.
 */
import { randomUUID } from 'node:crypto'
import { TypedEventEmitter } from '@libp2p/interface'
import type { ComponentLogger, Logger } from '@libp2p/interface'
import { RemoteError } from '../../protocols/errors.ts'
import { frameTensors } from '../../protocols/framing.ts'
import { InferErrorCode, isRetryable } from '../../protocols/infer.ts'
import type { HopTiming } from '../../protocols/infer.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { PeerDialer } from '../dial.ts'
import type { FleetMetrics } from '../metrics.ts'
import { checkStageInputs } from '../models/specs.ts'
import { callHop, HopUnreachableError } from '../runtime/hop-call.ts'
import { NoRouteError, chooseRoute } from '../scheduler/router.ts'
import type { Candidate } from '../scheduler/router.ts'
import type { StageLocator } from './locator.ts'
import type { ResolvedModel } from './resolver.ts'

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
  /** Called with each route chosen for this job (peers from stage `first`). */
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

export interface PipelineEvents {
  /** A route was chosen (peers per stage from `first`). */
  route: CustomEvent<{ peers: string[], first: number, at: number }>
  /** A job ended. */
  job: CustomEvent<{ outcome: 'ok' | 'failed', result?: InferResult, error?: Error }>
}

export interface PipelineComponents {
  logger: ComponentLogger
  dialer: PeerDialer
  locator: StageLocator
  metrics: FleetMetrics
}

export class PipelineRunner extends TypedEventEmitter<PipelineEvents> {
  private readonly c: PipelineComponents
  private readonly log: Logger

  constructor (components: PipelineComponents) {
    super()
    this.c = components
    this.log = components.logger.forComponent('fleetmesh:pipeline')
  }

  /** Runs one job through the mesh. */
  async infer (m: ResolvedModel, inputs: Tensor[], opts: InferOptions = {}): Promise<InferResult> {
    try {
      const r = await this.run(m, inputs, opts)
      this.c.metrics.job('ok', r)
      this.safeDispatchEvent('job', { detail: { outcome: 'ok', result: r } })
      return r
    } catch (err) {
      this.c.metrics.job('failed')
      this.safeDispatchEvent('job', { detail: { outcome: 'failed', error: err as Error } })
      throw err
    }
  }

  private async route (m: ResolvedModel, first: number, opts: InferOptions): Promise<Candidate[]> {
    const cands: Candidate[][] = []
    for (let s = first; s < m.manifest.stages.length; s++) {
      const all = await this.c.locator.candidates(m, s)
      const preferred = opts.prefer !== undefined ? all.filter(c => opts.prefer!.has(c.peer)) : []
      cands.push(preferred.length > 0 ? preferred : all)
    }
    return chooseRoute(cands, {
      stageMs: m.manifest.stages.map(s => Math.max(1, s.share * 30)),
      handOffBytes: m.manifest.stages.map(s => s.handOffBytes)
    }, first)
  }

  private async run (m: ResolvedModel, inputs: Tensor[], opts: InferOptions): Promise<InferResult> {
    checkStageInputs(m.manifest.inputs, inputs)
    const K = m.manifest.stages.length
    const job = randomUUID()
    const t0 = performance.now()
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000)
    const maxAttempts = opts.maxAttempts ?? 6
    const bans = this.c.locator.bans
    let stage = 0
    let tensors = inputs
    const hops: HopTiming[] = []
    let lastError: Error | undefined
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      opts.signal?.throwIfAborted()
      if (Date.now() > deadline) break
      let route: Candidate[]
      try {
        route = await this.route(m, stage, opts)
      } catch (err) {
        if (!(err instanceof NoRouteError) || attempt === maxAttempts) throw new InferenceError(InferErrorCode.NOT_SERVING, (err as Error).message, (err as NoRouteError).stage, { cause: err })
        // capacity may be on its way (a first heartbeat, a replacement): wait for a heartbeat that offers it
        lastError = err
        this.log('job %s attempt %d: %s; waiting for capacity', job, attempt, err.message)
        const wait = AbortSignal.any([AbortSignal.timeout(Math.min(1000 * attempt, Math.max(1, deadline - Date.now()))), ...(opts.signal !== undefined ? [opts.signal] : [])])
        await this.c.locator.waitForHolder(m, err.stage, { signal: wait }).catch(() => {})
        continue
      }
      const peers = route.map(c => c.peer)
      this.safeDispatchEvent('route', { detail: { peers, first: stage, at: Date.now() } })
      opts.onRoute?.(peers, stage)
      const leases = opts.leases?.()
      const done = this.c.locator.track(peers)
      const signal = AbortSignal.any([AbortSignal.timeout(Math.max(1, deadline - Date.now())), ...(opts.signal !== undefined ? [opts.signal] : [])])
      let answer
      try {
        answer = await callHop(this.c.dialer, route[0], {
          job,
          manifest: m.cid,
          stage,
          deadline,
          route: route.slice(1).map(c => ({ peer: c.peer, addrs: c.addrs })),
          ...(leases !== undefined && Object.keys(leases).length > 0 ? { leases } : {})
        }, tensors, { signal })
      } catch (err) {
        opts.signal?.throwIfAborted()
        lastError = err as Error
        if (err instanceof HopUnreachableError) bans.ban(route[0].peer)
        this.log('job %s attempt %d: %e', job, attempt, err)
        continue
      } finally { done() }
      const msg = answer.message
      if (msg.kind === 'result') {
        hops.push(...msg.result.hops)
        for (const hop of msg.result.hops) bans.clear(hop.peer)
        const byStage = new Map(hops.map(x => [x.stage, x.peer]))
        return { manifest: m.cid, outputs: frameTensors(answer), route: Array.from({ length: K }, (_, i) => byStage.get(i) ?? ''), hops, ms: performance.now() - t0, attempts: attempt }
      }
      if (msg.kind !== 'error') { lastError = new Error(`unexpected ${msg.kind} frame`); continue }
      const e = msg.error
      lastError = new RemoteError(e.code, `stage ${e.stage} on ${e.peer.slice(-8)}: ${e.message}`, e.peer)
      if (!isRetryable(e.code)) throw new InferenceError(e.code, lastError.message, e.stage)
      if (e.code !== InferErrorCode.BUSY) bans.ban(e.peer)
      // keep the work done before the failed stage; replay that stage's input
      const replay = frameTensors(answer)
      if (e.stage > stage && replay.length > 0) {
        hops.push(...e.hops.filter(x => x.stage < e.stage))
        stage = e.stage
        tensors = replay
      }
      this.log('job %s attempt %d failed at stage %d on %s (%s: %s), re-routing', job, attempt, e.stage, e.peer, e.code, e.message)
    }
    throw new InferenceError((lastError as RemoteError | undefined)?.code ?? 'ERR_FAILED', `job failed after ${maxAttempts} attempts: ${lastError?.message ?? 'deadline passed'}`, stage, { cause: lastError })
  }
}
