/**
 * Graph surgery: one standalone ONNX model per stage. A stage's inputs are
 * the tensors it reads that earlier stages (or the caller) produce; what
 * crosses a cut may be several tensors (skip connections), and tensors may
 * pass through a stage untouched.
 */
import { create, toBinary } from '@bufbuild/protobuf'
import { GraphProtoSchema, ModelProtoSchema } from 'onnx-buf'
import { elementCount } from '../../../protocols/tensor.ts'
import type { TensorSpec } from '../specs.ts'
import type { ModelAnalysis } from './analysis.ts'
import { InvalidModelError, valueInfo } from './onnx.ts'
import { crossingSets } from './planner.ts'

export interface BuiltStage {
  index: number
  /** Serialized stage model. */
  bytes: Uint8Array
  nodes: number
  flops: number
  params: number
  /** Measured ms at the probe shape (sum of its nodes' kernel times; 0 when not measured). */
  estMs: number
  /** Inputs of the stage model. */
  inputs: TensorSpec[]
  /** Tensors the stage hands to the next one (produced here or passed through). */
  outputs: TensorSpec[]
}

/** Builds the stage models for a cut plan. */
export function buildStages (a: ModelAnalysis, cuts: number[]): BuiltStage[] {
  const N = a.nodes.length
  const bounds = [0, ...cuts, N]
  const { at } = crossingSets(a)
  const g = a.model.graph!
  const declared = new Map<string, TensorSpec>()
  for (const s of a.inputs) declared.set(s.name, s)
  for (const s of a.outputs) declared.set(s.name, s)
  const specFor = (name: string): TensorSpec => {
    const d = declared.get(name)
    const p = a.probe.get(name)
    if (d !== undefined) return p !== undefined ? { ...d, probe: p.dims } : d
    if (p === undefined) throw new InvalidModelError(`no type known for tensor ${name}`)
    return { name, dtype: p.dtype, shape: p.dims.map(() => null), probe: p.dims }
  }
  const safe = (s: string): string => s.replace(/[^A-Za-z0-9_]/g, '_')
  const stages: BuiltStage[] = []
  for (let s = 0; s < bounds.length - 1; s++) {
    const slice = a.nodes.slice(bounds[s], bounds[s + 1])
    const produced = new Set<string>()
    const reads: string[] = []
    const consts = new Set<string>()
    for (const n of slice) {
      for (const r of n.reads) if (!produced.has(r)) reads.push(r)
      for (const c of n.constReads) consts.add(c)
      for (const o of n.node.output) if (o !== '') produced.add(o)
    }
    const inputNames = [...new Set(reads)]
    const handOff = at(bounds[s + 1])
    const outNames = s === bounds.length - 2 ? a.outputs.map(o => o.name) : handOff
    const graphOutputs = outNames.filter(n => produced.has(n))
    const constNodes = [...consts].filter(c => a.constNodes.has(c)).map(c => a.constNodes.get(c)!)
    const inits = [...consts].filter(c => a.initializers.has(c)).map(c => a.initializers.get(c)!)
    const inputs = inputNames.map(specFor)
    const outputs = outNames.map(specFor)
    const graph = create(GraphProtoSchema, {
      name: `${g.name || 'graph'}_stage${s}`,
      node: [...constNodes, ...slice.map(n => n.node)],
      initializer: inits,
      input: inputs.map(sp => declared.has(sp.name) ? (g.input.find(i => i.name === sp.name) ?? valueInfo(sp, safe(sp.name))) : valueInfo(sp, safe(sp.name))),
      output: graphOutputs.map(n => declared.has(n) ? (g.output.find(o => o.name === n) ?? valueInfo(specFor(n), safe(n))) : valueInfo(specFor(n), safe(n))),
      valueInfo: g.valueInfo.filter(v => produced.has(v.name))
    })
    const model = create(ModelProtoSchema, {
      irVersion: a.model.irVersion,
      opsetImport: a.model.opsetImport,
      producerName: 'fleetmesh',
      producerVersion: '0.1',
      domain: a.model.domain,
      modelVersion: a.model.modelVersion,
      functions: a.model.functions,
      metadataProps: [...a.model.metadataProps],
      graph
    })
    let params = 0
    for (const t of inits) params += elementCount(t.dims.map(Number))
    for (const c of constNodes) { const v = c.attribute.find(x => x.name === 'value'); if (v?.t !== undefined) params += elementCount(v.t.dims.map(Number)) }
    stages.push({
      index: s,
      bytes: toBinary(ModelProtoSchema, model),
      nodes: slice.length,
      flops: slice.reduce((sum, n) => sum + n.flops, 0),
      estMs: slice.reduce((sum, n) => sum + (n.ms ?? 0), 0),
      params,
      inputs,
      outputs
    })
  }
  return stages
}
