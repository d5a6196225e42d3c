/**
 * Tensor specs: what a model or stage takes and gives (name, dtype, shape
 * with free dimensions), checking tensors against them, and sample tensors
 * for probing and warming up. Shared data only: no I/O, no onnxruntime.
 */
import { MalformedFrameError } from '../../protocols/errors.ts'
import { elementCount, itemSize } from '../../protocols/tensor.ts'
import type { DType, Tensor } from '../../protocols/tensor.ts'
import { rng } from '../util/random.ts'

/**
 * Shape entries are sizes, or null where the size is free (symbolic).
 * `probe` is the shape seen while planning (used to warm sessions up).
 */
export interface TensorSpec {
  name: string
  dtype: DType
  shape: Array<number | null>
  probe?: number[]
  /** The largest size of each dimension a job may use (model inputs; set when the model is sharded). */
  max?: number[]
}

/** Checks that `tensors` hold every input the specs need, with the right dtype and rank; returns them in spec order. */
/** The default cap of a dimension the model leaves open: max(8, 4 x its probe size). */
export function defaultMaxDim (probe: number): number { return Math.max(8, 4 * probe) }

export function checkStageInputs (specs: TensorSpec[], tensors: Tensor[], maxBytes?: number): Tensor[] {
  if (maxBytes !== undefined) {
    const bytes = tensors.reduce((n, t) => n + t.data.byteLength, 0)
    if (bytes > maxBytes) throw new MalformedFrameError('tensors', `are ${bytes} bytes, the manifest allows this stage at most ${maxBytes}`)
  }
  return specs.map(spec => {
    const t = tensors.find(x => x.name === spec.name)
    if (t === undefined) throw new MalformedFrameError(`tensors.${spec.name}`, `missing; the stage needs ${specs.map(s => s.name).join(', ')}`)
    if (t.dtype !== spec.dtype) throw new MalformedFrameError(`tensors.${spec.name}.dtype`, `is ${t.dtype}, the stage needs ${spec.dtype}`)
    if (t.dims.length !== spec.shape.length) throw new MalformedFrameError(`tensors.${spec.name}.dims`, `has rank ${t.dims.length}, the stage needs ${spec.shape.length}`)
    spec.shape.forEach((d, i) => {
      if (d !== null && t.dims[i] !== d) throw new MalformedFrameError(`tensors.${spec.name}.dims[${i}]`, `is ${t.dims[i]}, the stage needs ${d}`)
      const max = spec.max?.[i]
      if (max !== undefined && t.dims[i] > max) throw new MalformedFrameError(`tensors.${spec.name}.dims[${i}]`, `is ${t.dims[i]}, the manifest allows at most ${max}`)
    })
    return t
  })
}

/** A stage's input specs with the caps the model's inputs of the same names carry. */
export function withCaps (stageInputs: TensorSpec[], modelInputs: TensorSpec[]): TensorSpec[] {
  return stageInputs.map(sp => {
    const max = modelInputs.find(i => i.name === sp.name)?.max
    return max !== undefined ? { ...sp, max } : sp
  })
}

/** A tensor of the given spec filled with deterministic values (floats in [-1, 1), ints 0). */
export function sampleTensor (spec: TensorSpec, dims: number[], seed = 1): Tensor {
  const n = elementCount(dims)
  const data = new Uint8Array(n * itemSize(spec.dtype))
  if (spec.dtype === 'float32') {
    const f = new Float32Array(data.buffer); const r = rng(seed)
    for (let i = 0; i < n; i++) f[i] = r() * 2 - 1
  }
  return { name: spec.name, dtype: spec.dtype, dims, data }
}
