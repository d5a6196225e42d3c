/**
 * Jobs for a local swarm and how they are checked: the sample images (or
 * random inputs at the planning shape), each result compared with the whole
 * model run in this process and, for text models, with the expected text.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { maxAbsDiff, sameTensor } from '../../protocols/tensor.ts'
import type { OutputMode } from '../../protocols/infer.ts'
import { applyOutputMode, outputsDiff } from '../models/output-modes.ts'
import { resultTolerance } from '../models/manifest.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { textOf } from '../client/inputs.ts'
import type { InferResult } from '../client/pipeline.ts'
import type { ModelSource } from '../models/catalog.ts'
import type { Manifest } from '../models/manifest.ts'
import { createSession, runSession } from '../models/ort.ts'
import type { ShardedModel } from '../models/shard.ts'
import { sampleTensor } from '../models/specs.ts'

const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

export interface Job { label: string, input: Tensor, expected?: string, reference?: Tensor }

export async function makeJobs (src: ModelSource, sharded: ShardedModel, count: number): Promise<Job[]> {
  const input = sharded.manifest.inputs[0]
  if (src.fromImage !== undefined) {
    const labels = JSON.parse(await readFile(join(SAMPLES, 'labels.json'), 'utf8')) as { items: Array<{ image: string, text: string }> }
    // each image decoded once, its tensor shared by every job of that image (as the whole model's timing
    // shares them): a tensor a job for 10,000 jobs was 1.8 GB of inputs for rec, 4.4 for det
    const decoded = labels.items.slice(0, Math.min(count, labels.items.length)).map(item => ({ ...src.fromImage!(join(SAMPLES, item.image)), name: input.name }))
    return Array.from({ length: count }, (_, i) => {
      const item = labels.items[i % labels.items.length]
      return { label: item.image, input: decoded[i % labels.items.length], ...(sharded.manifest.task !== undefined ? { expected: item.text } : {}) }
    })
  }
  if (sharded.manifest.inputs.length !== 1) throw new Error(`swarm jobs need a single-input model; ${sharded.manifest.name} has ${sharded.manifest.inputs.length}`)
  return Array.from({ length: count }, (_, i) => ({ label: `random #${i + 1}`, input: sampleTensor(input, sharded.manifest.probeShapes[input.name], 1000 + i) }))
}

/**
 * Runs the whole model in this process on every distinct input (setting each
 * job's reference) and returns the local speed in jobs per second and its CPU ms per job.
 */
export async function addReferences (model: Uint8Array, jobs: Job[]): Promise<LocalSpeed> {
  const whole = await createSession(model)
  try {
    const refs = new Map<string, Tensor>()
    for (const j of jobs) {
      let ref = refs.get(j.label)
      if (ref === undefined) { ref = (await runSession(whole, [j.input]))[0]; refs.set(j.label, ref) }
      j.reference = ref
    }
    return await timeRuns(whole, jobs)
  } finally { await whole.release() }
}

/** The whole model in this process: jobs per second, and CPU ms per job. */
export interface LocalSpeed { jobsPerS: number, cpuMsPerJob: number }

/** The whole model's speed over the jobs' distinct inputs (again after a run: see bracketSpeeds). */
export async function wholeModelSpeed (model: Uint8Array, jobs: Job[]): Promise<LocalSpeed> {
  const whole = await createSession(model)
  try {
    await runSession(whole, [jobs[0].input])
    return await timeRuns(whole, jobs)
  } finally { await whole.release() }
}

/**
 * Timed on a warm session (its first runs are slow): 50 to 100 runs over the
 * jobs' distinct inputs (fewer varied by 10%).
 */
async function timeRuns (whole: Awaited<ReturnType<typeof createSession>>, jobs: Job[]): Promise<LocalSpeed> {
  const distinct = [...new Map(jobs.map(j => [j.label, j.input])).values()]
  const runs = Math.min(100, Math.max(50, distinct.length))
  const t0 = performance.now()
  // onnxruntime runs the session on this thread: its CPU time is the whole model's
  const cpu0 = threadCpuMs()
  for (let i = 0; i < runs; i++) await runSession(whole, [distinct[i % distinct.length]])
  return { jobsPerS: runs / ((performance.now() - t0) / 1000), cpuMsPerJob: Math.round((threadCpuMs() - cpu0) / runs * 10) / 10 }
}

/**
 * The local side of a ratio timed before and after the mesh's run, as one:
 * on a shared machine the speed drifts, and the mesh's run sat between them.
 * Equal runs each time, so the speed is the runs over the summed time.
 */
export function bracketSpeeds (before: LocalSpeed, after: LocalSpeed): LocalSpeed {
  return { jobsPerS: 2 / (1 / before.jobsPerS + 1 / after.jobsPerS), cpuMsPerJob: Math.round((before.cpuMsPerJob + after.cpuMsPerJob) * 5) / 10 }
}

/** This thread's CPU time in ms (the process's on a Node without process.threadCpuUsage, before 22.19). */
function threadCpuMs (): number {
  const u = typeof process.threadCpuUsage === 'function' ? process.threadCpuUsage() : process.cpuUsage()
  return (u.user + u.system) / 1000
}

/** The whole model in this process over `inputs`, in items per second (the local side of a ratio). */
export async function localSpeed (model: Uint8Array, inputs: Tensor[]): Promise<number> {
  const whole = await createSession(model)
  try {
    const t0 = performance.now()
    for (const x of inputs) await runSession(whole, [x])
    return inputs.length / ((performance.now() - t0) / 1000)
  } finally { await whole.release() }
}

export function percentile (values: number[], p: number): number {
  if (values.length === 0) return 0
  const s = [...values].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))]
}

/** What one checked result says. */
export interface Check { diff: number, text?: string, correct: boolean, wrong: boolean }

/** Results as they come: latency, stage compute, routes, differences from the references, texts. */
export class Tally {
  readonly latencies: number[] = []
  readonly computeMs: number[] = []
  /** Each job's latency less its own summed stage compute. */
  readonly overheadMs: number[] = []
  readonly routes = new Set<string>()
  completed = 0
  correct = 0
  wrong = 0
  worstDiff = 0
  private readonly manifest: Manifest
  private readonly output: OutputMode | undefined
  private readonly reducedRefs = new WeakMap<Tensor, Tensor[]>()
  private readonly refTexts = new WeakMap<Tensor, ReturnType<typeof textOf>>()

  /** `output`: the jobs' output mode; references are reduced the same way before they are compared. */
  constructor (manifest: Manifest, output?: OutputMode) { this.manifest = manifest; this.output = output }

  /**
   * Records a result of `job` and checks it against its reference (1e-4) and
   * expected text. A raw result with the very bytes of its reference differs
   * by 0 and reads as the reference's text (decoded once per reference): a
   * byte comparison of 1 MB takes about 0.04 ms of the client's CPU, the
   * difference and the CTC decode 1.5-3 ms.
   */
  add (job: Job, r: InferResult): Check {
    const out0 = r.outputs.find(t => t.name === this.manifest.outputs[0].name) ?? r.outputs[0]
    const same = this.output === undefined && r.outputs.length === 1 && sameTensor(job.reference!, out0)
    const diff = same ? 0 : this.output !== undefined ? outputsDiff(this.reduced(job.reference!), r.outputs) : maxAbsDiff(job.reference!, out0)
    const text = same ? this.referenceText(job.reference!) : textOf(this.manifest, r.outputs)
    const correct = text !== undefined && text.text === job.expected
    const wrong = diff > resultTolerance(this.manifest) || (text !== undefined && !correct)
    this.worstDiff = Math.max(this.worstDiff, diff)
    this.latencies.push(r.ms)
    const compute = r.hops.reduce((sum, h) => sum + h.ms, 0)
    this.computeMs.push(compute)
    this.overheadMs.push(r.ms - compute)
    this.routes.add(r.route.join('>'))
    this.completed++
    if (correct) this.correct++
    if (wrong) this.wrong++
    return { diff, ...(text !== undefined ? { text: text.text } : {}), correct, wrong }
  }

  /** A reference reduced by the jobs' output mode, once per distinct input (jobs share their references). */
  private reduced (reference: Tensor): Tensor[] {
    let r = this.reducedRefs.get(reference)
    if (r === undefined) { r = applyOutputMode(this.manifest, this.output!, [reference]); this.reducedRefs.set(reference, r) }
    return r
  }

  /** The text a reference decodes to, once per reference. */
  private referenceText (reference: Tensor): ReturnType<typeof textOf> {
    if (!this.refTexts.has(reference)) this.refTexts.set(reference, textOf(this.manifest, [reference]))
    return this.refTexts.get(reference)
  }

  get hasText (): boolean { return this.manifest.task !== undefined }
  p (pct: number): number { return Math.round(percentile(this.latencies, pct) * 10) / 10 }
  computeP50 (): number { return Math.round(percentile(this.computeMs, 50) * 10) / 10 }
  overheadP50 (): number { return Math.round(percentile(this.overheadMs, 50) * 10) / 10 }
}
