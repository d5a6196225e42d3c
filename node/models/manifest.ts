/**
 * Model manifests: the ordered stages of a sharded model. A manifest is JSON,
 * content-addressed like the shards it lists, so its CID names the model
 * exactly. Shared data only: no I/O here except `shardModel`'s output writer.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cidOf } from './cid.ts'
import { analyzeModel, buildStages, crossingBytesOf, planCuts } from './partition.ts'
import type { AnalyzeOptions, ModelAnalysis, TensorSpec } from './partition.ts'
import { isDType } from '../../protocols/tensor-codec.ts'
import { decodeJsonObject, encodeJson } from '../../protocols/json.ts'
import { MiB } from '../../protocols/limits.ts'

/** Largest manifest accepted. */
export const MAX_MANIFEST_BYTES = 4 * MiB

export const MANIFEST_FORMAT = 'fleetmesh-manifest/1'

export interface StageEntry {
  index: number
  /** CID of the stage's ONNX bytes. */
  cid: string
  bytes: number
  nodes: number
  params: number
  /** Estimated cost: FLOPs, measured ms at the probe shape, and the share of the cost the cuts balanced. */
  flops: number
  estMs: number
  share: number
  /** Inputs of the stage model. */
  inputs: TensorSpec[]
  /** Tensors this stage hands on (the model's outputs for the last stage). */
  outputs: TensorSpec[]
  /** Bytes of `outputs` at the probe shape. */
  handOffBytes: number
}

/** What the output means, so clients can present it (e.g. CTC text). */
export interface TaskInfo { kind: 'ctc-text', dictionary: string }

export interface Manifest {
  format: typeof MANIFEST_FORMAT
  name: string
  version: string
  /** CID of the whole source model. */
  source: string
  inputs: TensorSpec[]
  outputs: TensorSpec[]
  probeShapes: Record<string, number[]>
  /** What the cuts balanced: measured ms per node, or estimated FLOPs. */
  balancedBy: 'ms' | 'flops'
  task?: TaskInfo
  stages: StageEntry[]
}

export class InvalidManifestError extends Error {
  readonly name = 'InvalidManifestError'
  readonly code = 'ERR_INVALID_MANIFEST'
}

export function encodeManifest (m: Manifest): Uint8Array {
  return encodeJson(m, true)
}

function checkSpecs (v: unknown, field: string): TensorSpec[] {
  if (!Array.isArray(v)) throw new InvalidManifestError(`manifest ${field} must be an array`)
  return v.map((s, i) => {
    if (typeof s?.name !== 'string' || !isDType(s?.dtype) || !Array.isArray(s?.shape)) throw new InvalidManifestError(`manifest ${field}[${i}] needs name, dtype and shape`)
    return s as TensorSpec
  })
}

/** Parses and validates a manifest; throws InvalidManifestError naming the field. */
export function decodeManifest (bytes: Uint8Array): Manifest {
  let m: any
  try { m = decodeJsonObject(bytes, 'manifest', MAX_MANIFEST_BYTES) } catch (err) {
    throw new InvalidManifestError((err as Error).message)
  }
  if (m?.format !== MANIFEST_FORMAT) throw new InvalidManifestError(`manifest format must be ${MANIFEST_FORMAT}, got ${String(m?.format)}`)
  if (typeof m.name !== 'string' || m.name === '') throw new InvalidManifestError('manifest name is missing')
  if (!Array.isArray(m.stages) || m.stages.length === 0) throw new InvalidManifestError('manifest has no stages')
  checkSpecs(m.inputs, 'inputs'); checkSpecs(m.outputs, 'outputs')
  m.stages.forEach((s: any, i: number) => {
    if (s?.index !== i) throw new InvalidManifestError(`manifest stages[${i}].index must be ${i}`)
    if (typeof s.cid !== 'string') throw new InvalidManifestError(`manifest stages[${i}].cid is missing`)
    checkSpecs(s.inputs, `stages[${i}].inputs`); checkSpecs(s.outputs, `stages[${i}].outputs`)
  })
  return m as Manifest
}

export interface ShardOptions extends AnalyzeOptions {
  /** Stage count, or a function choosing it from the analysis (`--stages auto`). */
  stages: number | ((a: ModelAnalysis) => number)
  name: string
  version?: string
  task?: TaskInfo
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
  const plan = planCuts(analysis, typeof opts.stages === 'function' ? opts.stages(analysis) : opts.stages)
  const built = buildStages(analysis, plan.cuts)
  const totalCost = plan.balancedBy === 'ms' ? built.reduce((x, b) => x + b.estMs, 0) : analysis.totalFlops
  const shards = new Map<string, Uint8Array>()
  const probeShapes: Record<string, number[]> = {}
  for (const s of analysis.inputs) probeShapes[s.name] = analysis.probe.get(s.name)!.dims
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
      handOffBytes: crossingBytesOf(analysis, b.outputs.map(o => o.name))
    }
  })
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    name: opts.name,
    version: opts.version ?? '1',
    source: cidOf(model),
    inputs: analysis.inputs,
    outputs: analysis.outputs,
    probeShapes,
    balancedBy: plan.balancedBy,
    ...(opts.task !== undefined ? { task: opts.task } : {}),
    stages
  }
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
