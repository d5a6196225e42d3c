/**
 * Sharding a model: partition it into stages (partition/) and build its
 * manifest; write the manifest and stage files to a directory.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cidOf } from './cid.ts'
import { defaultMaxDim } from './specs.ts'
import { MANIFEST_FORMAT, encodeManifest } from './manifest.ts'
import type { Manifest, StageEntry, TaskInfo } from './manifest.ts'
import { analyzeModel, buildStages, crossingBytesOf, planCuts } from './partition/index.ts'
import { measureHandOffError } from './hand-off.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { AnalyzeOptions, ModelAnalysis } from './partition/index.ts'

export interface ShardOptions extends AnalyzeOptions {
  /** Stage count, or a function choosing it from the analysis (`--stages auto`). */
  stages: number | ((a: ModelAnalysis) => number)
  /** How far from an even share a cut may move to carry fewer bytes (planCuts). @default 0.3 */
  tolerance?: number
  name: string
  version?: string
  task?: TaskInfo
  /**
   * `fp16`: stages hand on float32 activations rounded to float16, as
   * float16 (half the bytes); the error this makes is measured here and
   * stated in the manifest. @default lossless
   */
  handOff?: 'fp16'
  /** Real inputs to measure the fp16 hand-off error on, besides the probes. */
  handOffInputs?: Tensor[][]
  /**
   * The largest shape a job may give each model input. @default each
   * dimension the model leaves open: max(8, 4 x its probe size)
   */
  maxShapes?: Record<string, number[]>
}

export interface ShardedModel {
  manifest: Manifest
  manifestBytes: Uint8Array
  manifestCid: string
  /** Stage bytes by CID. */
  shards: Map<string, Uint8Array>
}

/** Partitions a model into `stages` stages and builds its manifest. */
export async function shardModel (model: Uint8Array, opts: ShardOptions): Promise<ShardedModel> {
  const analysis = await analyzeModel(model, opts)
  const plan = planCuts(analysis, typeof opts.stages === 'function' ? opts.stages(analysis) : opts.stages, opts.tolerance)
  const built = buildStages(analysis, plan.cuts)
  const totalCost = plan.balancedBy === 'ms' ? built.reduce((x, b) => x + b.estMs, 0) : analysis.totalFlops
  const shards = new Map<string, Uint8Array>()
  const probeShapes: Record<string, number[]> = {}
  for (const s of analysis.inputs) probeShapes[s.name] = analysis.probe.get(s.name)!.dims
  // caps: each input's largest shape, and how much larger than the probe a job may be (for stage input bytes)
  let growth = 1
  const inputs = analysis.inputs.map(s => {
    const probe = probeShapes[s.name]
    const max = opts.maxShapes?.[s.name] ?? s.shape.map((d, i) => d ?? defaultMaxDim(probe[i]))
    if (max.length !== s.shape.length || max.some((d, i) => !Number.isInteger(d) || d < probe[i] || (s.shape[i] !== null && d !== s.shape[i]))) throw new RangeError(`max shape for ${s.name} must have rank ${s.shape.length}, fixed dimensions as the model has them and others at least the probe's [${probe}]`)
    growth = Math.max(growth, max.reduce((a, b) => a * b, 1) / probe.reduce((a, b) => a * b, 1))
    return { ...s, max }
  })
  const stages: StageEntry[] = built.map(b => {
    const cid = cidOf(b.bytes)
    shards.set(cid, b.bytes)
    return {
      index: b.index,
      cid,
      bytes: b.bytes.byteLength,
      nodes: b.nodes,
      params: b.params,
      flops: b.flops,
      estMs: Math.round(b.estMs * 1000) / 1000,
      share: totalCost > 0 ? (plan.balancedBy === 'ms' ? b.estMs : b.flops) / totalCost : 0,
      inputs: b.inputs,
      outputs: b.outputs,
      handOffBytes: crossingBytesOf(analysis, b.outputs.map(o => o.name)),
      maxInputBytes: Math.ceil(growth * crossingBytesOf(analysis, b.inputs.map(i => i.name)))
    }
  })
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    name: opts.name,
    version: opts.version ?? '1',
    source: cidOf(model),
    inputs,
    outputs: analysis.outputs,
    probeShapes,
    balancedBy: plan.balancedBy,
    ...(opts.task !== undefined ? { task: opts.task } : {}),
    stages
  }
  if (opts.handOff === 'fp16') manifest.handOff = { encoding: 'fp16', maxError: await measureHandOffError(manifest, shards, opts.handOffInputs) }
  const manifestBytes = encodeManifest(manifest)
  return { manifest, manifestBytes, manifestCid: cidOf(manifestBytes), shards }
}

/** Writes `manifest.json` and `stage-<i>.onnx` files into `dir`. */
export async function writeSharded (s: ShardedModel, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true })
  const files = [join(dir, 'manifest.json')]
  await writeFile(files[0], s.manifestBytes)
  for (const st of s.manifest.stages) {
    const f = join(dir, `stage-${st.index}.onnx`)
    await writeFile(f, s.shards.get(st.cid)!)
    files.push(f)
  }
  return files
}
