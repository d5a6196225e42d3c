/**
 * Model analysis: every compute node in topological order with what it reads,
 * and one probe run through onnxruntime with every intermediate tensor added
 * as a graph output, which gives the dtype and shape of every tensor (there
 * is no shape inference in JS). Initializers and Constant nodes are
 * replicable: each stage gets its own copy.
 */
import { create, toBinary } from '@bufbuild/protobuf'
import { GraphProtoSchema, ModelProtoSchema, ValueInfoProtoSchema } from 'onnx-buf'
import type { ModelProto, NodeProto, TensorProto, ValueInfoProto } from 'onnx-buf'
import { createSession, runSession } from '../ort.ts'
import type { ort } from '../ort.ts'
import { elementCount } from '../../../protocols/tensor.ts'
import type { DType } from '../../../protocols/tensor.ts'
import { sampleTensor } from '../specs.ts'
import type { TensorSpec } from '../specs.ts'
import { measureNodeTimes, nodeFlops } from './cost.ts'
import { InvalidModelError, decodeModel, inlineExternalData, specOf, subgraphReads } from './onnx.ts'

export interface NodeInfo {
  node: NodeProto
  /** Non-constant tensors it reads, including those read by subgraph bodies. */
  reads: string[]
  /** Constants (initializers, Constant outputs) it reads. */
  constReads: string[]
  flops: number
  /** Measured kernel time at the probe shape, ms (when measured). */
  ms?: number
}

export interface ModelAnalysis {
  model: ModelProto
  /** Compute nodes (everything but Constant) in topological order. */
  nodes: NodeInfo[]
  constNodes: Map<string, NodeProto>
  initializers: Map<string, TensorProto>
  /** dtype and probe dims of every non-constant tensor. */
  probe: Map<string, { dtype: DType, dims: number[] }>
  inputs: TensorSpec[]
  outputs: TensorSpec[]
  /** Parameters (elements) held in initializers and Constant nodes. */
  params: number
  totalFlops: number
}

export interface AnalyzeOptions {
  /** Probe shape per graph input; free dims default to 1 (first) and 64 (others). */
  probeShapes?: Record<string, number[]>
  /**
   * Balance by measured node times (onnxruntime's profiler, at the probe
   * shape) instead of estimated FLOPs. @default true
   */
  measure?: boolean
  /** Profiled runs (after one warm-up) when measuring. @default 5 */
  measureRuns?: number
  /** Directory of the model file, for tensors stored as external data beside it. */
  baseDir?: string
}

export function probeDims (spec: TensorSpec, override?: number[]): number[] {
  if (override !== undefined) {
    if (override.length !== spec.shape.length) throw new InvalidModelError(`probe shape for ${spec.name} has rank ${override.length}, the model declares ${spec.shape.length}`)
    return override
  }
  return spec.shape.map((d, i) => d ?? (i === 0 ? 1 : 64))
}

export async function analyzeModel (bytes: Uint8Array, opts: AnalyzeOptions = {}): Promise<ModelAnalysis> {
  const model = decodeModel(bytes)
  await inlineExternalData(model, opts.baseDir)
  const g = model.graph!
  const initializers = new Map(g.initializer.map(t => [t.name, t]))
  const constNodes = new Map<string, NodeProto>()
  const compute: NodeProto[] = []
  for (const n of g.node) {
    if (n.opType === 'Constant' && n.domain === '' && n.input.length === 0 && n.output.length === 1) constNodes.set(n.output[0], n)
    else compute.push(n)
  }
  const isConst = (name: string): boolean => initializers.has(name) || constNodes.has(name)
  const realInputs = g.input.filter(i => !initializers.has(i.name))

  // Probe: every compute output becomes a graph output.
  const probeModel = create(ModelProtoSchema, { ...model, graph: create(GraphProtoSchema, { ...g }) })
  const have = new Set(g.output.map(o => o.name))
  const extra: ValueInfoProto[] = []
  for (const n of compute) for (const o of n.output) if (o !== '' && !have.has(o)) { have.add(o); extra.push(create(ValueInfoProtoSchema, { name: o })) }
  probeModel.graph!.output = [...g.output, ...extra]
  let session: ort.InferenceSession
  try { session = await createSession(toBinary(ModelProtoSchema, probeModel), { graphOptimization: 'disabled' }) } catch (err) {
    throw new InvalidModelError(`onnxruntime cannot load the model: ${(err as Error).message}`)
  }
  const inputs = realInputs.map(i => specOf(i))
  const feeds = inputs.map((s, i) => sampleTensor(s, probeDims(s, opts.probeShapes?.[s.name]), i + 1))
  const probe = new Map<string, { dtype: DType, dims: number[] }>()
  for (const t of feeds) probe.set(t.name, { dtype: t.dtype, dims: t.dims })
  try {
    for (const t of await runSession(session, feeds)) probe.set(t.name, { dtype: t.dtype, dims: t.dims })
  } catch (err) {
    throw new InvalidModelError(`probe run failed (pass probe shapes that fit the model): ${(err as Error).message}`)
  } finally {
    await session.release()
  }

  const constDims = (name: string): number[] | undefined => {
    const init = initializers.get(name)
    if (init !== undefined) return init.dims.map(Number)
    const c = constNodes.get(name)
    const v = c?.attribute.find(a => a.name === 'value')
    return v?.t !== undefined ? v.t.dims.map(Number) : undefined
  }
  const dimsOf = (name: string): number[] | undefined => probe.get(name)?.dims ?? constDims(name)

  const nodes: NodeInfo[] = compute.map(node => {
    const all = [...node.input.filter(x => x !== ''), ...subgraphReads(node)]
    const uniq = [...new Set(all)]
    return { node, reads: uniq.filter(x => !isConst(x)), constReads: uniq.filter(isConst), flops: nodeFlops(node, dimsOf) }
  })
  let params = 0
  for (const name of [...initializers.keys(), ...constNodes.keys()]) params += elementCount(constDims(name) ?? [])
  const outputs = g.output.map(o => specOf(o, probe.get(o.name)))
  const analysis: ModelAnalysis = { model, nodes, constNodes, initializers, probe, inputs, outputs, params, totalFlops: nodes.reduce((s, n) => s + n.flops, 0) }
  if (opts.measure ?? true) await measureNodeTimes(analysis, feeds, opts.measureRuns ?? 5)
  return analysis
}
