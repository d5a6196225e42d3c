/**
 * Jobs that wait go together: a lane (one model, one output mode, one input
 * shape) has at most `depth` jobs in the mesh, one per stage of the model so
 * that every stage has one to run; jobs that come while it is full wait,
 * and when one comes back the waiting ones leave as one job along the batch
 * dimension (at most `maxItems`), their results split back per job. What a
 * mesh job costs once (a request and its headers, stream turns, receipts
 * and their signatures, a stage run's set-up) is then paid once for several;
 * what grows with the bytes (digests, encryption) does not change.
 *
 * Groups are kept alike: the jobs outstanding (waiting and in the mesh) are
 * shared evenly over `depth` groups, so a few jobs short of a group wait for
 * the next answer instead of leaving alone (uneven groups leave the stages
 * idle in turn). With nothing in the mesh, waiting jobs go at once: one job
 * at a time runs as before. The same idea as an inference server's dynamic
 * batcher (Triton's), with no timer of its own.
 *
 * Only plain jobs wait together: inputs of one item each, on a model whose
 * batch dimension is free, no options but a signal and the same output
 * mode, attempts and timeout (which the group then has). A job whose signal
 * aborts leaves its group; the others go on. A group that fails, or whose
 * result does not split into its rows, runs its jobs one by one, so no job
 * fails for another's input; unless the mesh failed it (no vehicle serving,
 * timeouts), which every job of the group is told.
 */
import { MICRO_BATCH } from '../../protocols/capacity.ts'
import { InferErrorCode } from '../../protocols/infer.ts'
import type { OutputMode } from '../../protocols/infer.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { formatOutputMode } from '../models/output-modes.ts'
import { concatBatch, splitBatch, trimText } from './microbatch.ts'
import type { ResolvedModel } from './resolver.ts'

/** The options jobs that go together may have (the others each of their own); a group has its jobs' own, a signal of its own. */
interface JobOptions { signal?: AbortSignal, output?: OutputMode, maxAttempts?: number, timeoutMs?: number }
const SHARED = new Set(['signal', 'output', 'maxAttempts', 'timeoutMs'])

/** Failures of the mesh rather than of a group's inputs: every job of the group gets them. */
const MESH_CODES = new Set<string>([InferErrorCode.NOT_SERVING, InferErrorCode.TIMEOUT, InferErrorCode.HOP_UNREACHABLE, InferErrorCode.DEPARTING, InferErrorCode.BUSY, InferErrorCode.LEASE_EXPIRED])

/** What a lane runs: one job (maybe a group), as the pipeline does. */
export type RunJob<R extends { outputs: Tensor[], ms: number }> = (m: ResolvedModel, inputs: Tensor[], opts: JobOptions) => Promise<R>

interface Waiting<R> {
  inputs: Tensor[]
  signal: AbortSignal | undefined
  t0: number
  resolve: (r: R) => void
  reject: (err: unknown) => void
  /** Settled (its signal aborted, or its group ended). */
  done: boolean
  unlisten: () => void
}

interface Lane<R> {
  m: ResolvedModel
  /** The options its jobs share (no signal). */
  shared: Omit<JobOptions, 'signal'>
  waiting: Array<Waiting<R>>
  inFlight: number
  /** Jobs in the groups in flight. */
  items: number
  pumping: boolean
}

export interface CoalesceStats {
  /** Mesh jobs sent, and items they carried. */
  groups: number
  items: number
  /** Groups that failed and ran their jobs one by one. */
  split: number
}

export class Coalescer<R extends { outputs: Tensor[], ms: number }> {
  private readonly run: RunJob<R>
  /** Jobs in one group at most; 1 turns coalescing off. */
  private readonly maxItems: number
  private readonly lanes = new Map<string, Lane<R>>()
  readonly stats: CoalesceStats = { groups: 0, items: 0, split: 0 }

  constructor (run: RunJob<R>, maxItems = MICRO_BATCH) {
    if (!Number.isInteger(maxItems) || maxItems < 1) throw new RangeError(`coalesce needs a whole number of jobs, at least 1; got ${maxItems}`)
    this.run = run
    this.maxItems = maxItems
  }

  /** Groups of a lane in the mesh at once: one per stage, so each stage has one to run while the next waits. */
  private depth (m: ResolvedModel): number { return m.manifest.stages.length }

  /** The lane a job may wait in, or undefined when it runs on its own. */
  private laneKey (m: ResolvedModel, inputs: Tensor[], opts: JobOptions): string | undefined {
    if (this.maxItems < 2) return undefined
    if (Object.entries(opts as Record<string, unknown>).some(([k, v]) => v !== undefined && !SHARED.has(k) && !(k === 'coalesce' && v === true))) return undefined
    const specs = m.manifest.inputs
    if (!specs.every(s => s.shape[0] === null) || inputs.length !== specs.length || !inputs.every(t => t.dims[0] === 1)) return undefined
    const shapes = inputs.map(t => `${t.name}:${t.dtype}:${t.dims.join('x')}`).join(',')
    return `${m.cid} ${formatOutputMode(opts.output)} ${opts.maxAttempts ?? ''} ${opts.timeoutMs ?? ''} ${shapes}`
  }

  /** Runs a job, with others when it has to wait. */
  async infer (m: ResolvedModel, inputs: Tensor[], opts: JobOptions & { coalesce?: boolean }): Promise<R> {
    const key = this.laneKey(m, inputs, opts)
    if (key === undefined) return await this.run(m, inputs, opts)
    let lane = this.lanes.get(key)
    if (lane === undefined) { lane = { m, shared: { output: opts.output, maxAttempts: opts.maxAttempts, timeoutMs: opts.timeoutMs }, waiting: [], inFlight: 0, items: 0, pumping: false }; this.lanes.set(key, lane) }
    opts.signal?.throwIfAborted()
    return await new Promise<R>((resolve, reject) => {
      const w: Waiting<R> = { inputs, signal: opts.signal, t0: performance.now(), resolve, reject, done: false, unlisten: () => {} }
      if (opts.signal !== undefined) {
        const signal = opts.signal
        const onAbort = (): void => { this.settle(w, () => { reject(signal.reason) }) }
        signal.addEventListener('abort', onAbort, { once: true })
        w.unlisten = () => { signal.removeEventListener('abort', onAbort) }
      }
      lane.waiting.push(w)
      this.pump(key, lane)
    })
  }

  private settle (w: Waiting<R>, how: () => void): void {
    if (w.done) return
    w.done = true
    w.unlisten()
    how()
  }

  /**
   * Sends groups while the lane has room: the jobs outstanding (waiting and
   * in the mesh) shared evenly over `depth` groups, so groups are alike and
   * the pipeline's stages take turns evenly. Jobs short of a group wait for
   * a group in the mesh to come back; with none in the mesh they go at once.
   */
  private pump (key: string, lane: Lane<R>): void {
    const depth = this.depth(lane.m)
    for (;;) {
      lane.waiting = lane.waiting.filter(w => !w.done)
      const size = Math.min(this.maxItems, maxBatch(lane.m), Math.ceil((lane.waiting.length + lane.items) / depth))
      if (lane.inFlight >= depth || lane.waiting.length === 0 || lane.waiting.length < size) return
      this.send(key, lane, lane.waiting.splice(0, size))
    }
  }

  /** Sends `group` as one job. */
  private send (key: string, lane: Lane<R>, group: Array<Waiting<R>>): void {
    lane.inFlight++
    lane.items += group.length
    this.stats.groups++
    this.stats.items += group.length
    void this.runGroup(lane, group).finally(() => {
      lane.inFlight--
      lane.items -= group.length
      // the jobs just answered may be followed at once by their callers' next ones: let those join
      if (!lane.pumping) {
        lane.pumping = true
        setImmediate(() => {
          lane.pumping = false
          this.pump(key, lane)
          if (lane.inFlight === 0 && lane.waiting.length === 0) this.lanes.delete(key)
        })
      }
    })
  }

  private async runGroup (lane: Lane<R>, group: Array<Waiting<R>>): Promise<void> {
    const opts = (signal: AbortSignal | undefined): JobOptions => {
      const o: JobOptions = signal !== undefined ? { signal } : {}
      for (const [k, v] of Object.entries(lane.shared)) if (v !== undefined) Object.assign(o, { [k]: v })
      return o
    }
    const alone = async (w: Waiting<R>): Promise<void> => {
      await this.run(lane.m, w.inputs, opts(w.signal)).then(r => { this.settle(w, () => { w.resolve({ ...r, ms: performance.now() - w.t0 }) }) }, err => { this.settle(w, () => { w.reject(err) }) })
    }
    if (group.length === 1) { await alone(group[0]); return }
    // the group's signal aborts when every job in it has been given up
    const all = new AbortController()
    const check = (): void => { if (group.every(w => w.done)) all.abort(new Error('every job of the group was given up')) }
    for (const w of group) w.signal?.addEventListener('abort', check, { once: true })
    try {
      const r = await this.run(lane.m, concatBatch(group.map(w => w.inputs)), opts(all.signal))
      const parts = splitBatch(r.outputs, group.map(() => 1))
      group.forEach((w, i) => { this.settle(w, () => { w.resolve({ ...r, outputs: trimText(parts[i]), ms: performance.now() - w.t0 }) }) })
    } catch (err) {
      if (all.signal.aborted) return
      // the mesh itself failed them (no vehicle, timeouts): alone they would meet the same, in twice the time
      if (MESH_CODES.has((err as { code?: string }).code ?? '')) { for (const w of group) this.settle(w, () => { w.reject(err) }); return }
      // no job fails for another's input: each runs on its own (their own errors are theirs)
      this.stats.split++
      await Promise.all(group.filter(w => !w.done).map(alone))
    } finally {
      for (const w of group) w.signal?.removeEventListener('abort', check)
    }
  }
}

/** The most items a job of the model may carry (its inputs' largest batch dimension, when the manifest caps it). */
function maxBatch (m: ResolvedModel): number {
  return Math.min(...m.manifest.inputs.map(s => s.max?.[0] ?? Infinity))
}
