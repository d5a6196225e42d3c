/**
 * Model manifests: the ordered stages of a sharded model. A manifest is a
 * JSON document (format `fleetmesh-manifest/1`; unknown fields are ignored),
 * content-addressed like the shards it lists, so its CID names the model
 * exactly. Shared data only: no I/O (sharding lives in shard.ts).
 */
import { fromString, toString } from 'uint8arrays'
import { MiB } from '../../protocols/limits.ts'
import { isDType } from '../../protocols/tensor.ts'
import type { TensorSpec } from './specs.ts'

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
  /** The most input bytes a job may bring to this stage (absent in manifests made before caps). */
  maxInputBytes?: number
}

/** What the output means, so clients can present it (e.g. CTC text). */
export interface TaskInfo { kind: 'ctc-text', dictionary: string }

/**
 * Lossy hand-offs, opt-in per model (`shard --hand-off fp16`): every stage but
 * the last rounds its float32 outputs to float16 and they travel as float16
 * (half the bytes). `maxError` is the largest difference this made to the
 * model's outputs, measured when the model was sharded; clients and the
 * swarm's checks allow twice it.
 */
export interface HandOff { encoding: 'fp16', maxError: number }

/** Whether stage `stage`'s float32 outputs are rounded to float16 (fp16 hand-offs; never the last stage's). */
export function roundsHandOff (m: Pick<Manifest, 'handOff' | 'stages'>, stage: number): boolean {
  return m.handOff?.encoding === 'fp16' && stage < m.stages.length - 1
}

/** How far a result may be from the whole model's: 1e-4, or twice the measured error of lossy hand-offs. */
export function resultTolerance (m: Pick<Manifest, 'handOff'>): number {
  return Math.max(1e-4, 2 * (m.handOff?.maxError ?? 0))
}

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
  /** Lossy hand-offs (absent: lossless, float32 as produced). */
  handOff?: HandOff
  stages: StageEntry[]
}

export class InvalidManifestError extends Error {
  readonly name = 'InvalidManifestError'
  readonly code = 'ERR_INVALID_MANIFEST'
}

export function encodeManifest (m: Manifest): Uint8Array {
  return fromString(JSON.stringify(m, null, 2) + '\n')
}

function checkSpecs (v: unknown, field: string): TensorSpec[] {
  if (!Array.isArray(v)) throw new InvalidManifestError(`manifest ${field} must be an array`)
  return v.map((s, i) => {
    if (typeof s?.name !== 'string' || !isDType(s?.dtype) || !Array.isArray(s?.shape)) throw new InvalidManifestError(`manifest ${field}[${i}] needs name, dtype and shape`)
    if (s.max !== undefined && (!Array.isArray(s.max) || s.max.length !== s.shape.length || !s.max.every((d: unknown) => Number.isInteger(d) && (d as number) > 0))) throw new InvalidManifestError(`manifest ${field}[${i}].max must be a positive integer per dimension`)
    return s as TensorSpec
  })
}

/** Parses and validates a manifest; throws InvalidManifestError naming the field. */
export function decodeManifest (bytes: Uint8Array): Manifest {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) throw new InvalidManifestError(`manifest is ${bytes.byteLength} bytes, over the limit of ${MAX_MANIFEST_BYTES}`)
  let m: any
  try { m = JSON.parse(toString(bytes)) } catch (err) {
    throw new InvalidManifestError(`manifest is not JSON (${(err as Error).message})`)
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new InvalidManifestError('manifest must be a JSON object')
  if (m.format !== MANIFEST_FORMAT) throw new InvalidManifestError(`manifest format must be ${MANIFEST_FORMAT}, got ${String(m?.format)}`)
  if (typeof m.name !== 'string' || m.name === '') throw new InvalidManifestError('manifest name is missing')
  if (!Array.isArray(m.stages) || m.stages.length === 0) throw new InvalidManifestError('manifest has no stages')
  checkSpecs(m.inputs, 'inputs'); checkSpecs(m.outputs, 'outputs')
  if (m.handOff !== undefined && (m.handOff?.encoding !== 'fp16' || !(Number.isFinite(m.handOff.maxError) && m.handOff.maxError >= 0))) throw new InvalidManifestError('manifest handOff must be {"encoding": "fp16", "maxError": <number >= 0>}')
  m.stages.forEach((s: any, i: number) => {
    if (s?.index !== i) throw new InvalidManifestError(`manifest stages[${i}].index must be ${i}`)
    if (typeof s.cid !== 'string') throw new InvalidManifestError(`manifest stages[${i}].cid is missing`)
    checkSpecs(s.inputs, `stages[${i}].inputs`); checkSpecs(s.outputs, `stages[${i}].outputs`)
    if (s.maxInputBytes !== undefined && !(Number.isInteger(s.maxInputBytes) && s.maxInputBytes > 0)) throw new InvalidManifestError(`manifest stages[${i}].maxInputBytes must be a positive integer`)
  })
  return m as Manifest
}
