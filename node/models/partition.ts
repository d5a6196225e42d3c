/**
 * ONNX partitioner: splits any ONNX model into K pipeline stages.
 *
 * 1. `analyzeModel` decodes the model (onnx-buf), treats initializers and
 *    Constant nodes as replicable (each stage gets its own copy), and runs one
 *    probe through onnxruntime with every intermediate tensor added as a graph
 *    output, which gives the dtype and shape of every tensor (there is no shape
 *    inference in JS). Node costs are estimated FLOPs from those shapes.
 * 2. `planCuts` picks K-1 cut positions in topological order: near each
 *    balanced FLOP target it takes the cut with the fewest bytes crossing it.
 * 3. `buildStages` writes one ONNX model per stage. A stage's inputs are the
 *    tensors it reads that earlier stages (or the caller) produce, including
 *    tensors read by If/Loop/Scan bodies; what crosses a cut may be several
 *    tensors (skip connections), and tensors may pass through a stage.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import {
  GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, TensorProto_DataLocation, TensorProto_DataType, TensorShapeProtoSchema, TensorShapeProto_DimensionSchema,
  TypeProtoSchema, TypeProto_TensorSchema, ValueInfoProtoSchema, AttributeProto_AttributeType
} from 'onnx-buf'
import type { GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from 'onnx-buf'
import { readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { createSession, ort, runSession, sessionOptions } from './ort.ts'
import { elementCount, itemSize } from '../../protocols/tensor-codec.ts'
import type { DType, Tensor } from '../../protocols/tensor-codec.ts'

/**
 * Shape entries are sizes, or null where the size is free (symbolic).
 * `probe` is the shape seen while planning (used to warm sessions up).
 */
export interface TensorSpec { name: string, dtype: DType, shape: Array<number | null>, probe?: number[] }

export class InvalidModelError extends Error {
  readonly name = 'InvalidModelError'
  readonly code = 'ERR_INVALID_MODEL'
}

const ONNX_TO_DTYPE: Partial<Record<number, DType>> = {
  [TensorProto_DataType.FLOAT]: 'float32',
  [TensorProto_DataType.UINT8]: 'uint8',
  [TensorProto_DataType.INT8]: 'int8',
  [TensorProto_DataType.UINT16]: 'uint16',
  [TensorProto_DataType.INT16]: 'int16',
  [TensorProto_DataType.INT32]: 'int32',
  [TensorProto_DataType.INT64]: 'int64',
  [TensorProto_DataType.BOOL]: 'bool',
  [TensorProto_DataType.FLOAT16]: 'float16',
  [TensorProto_DataType.DOUBLE]: 'float64',
  [TensorProto_DataType.UINT32]: 'uint32',
  [TensorProto_DataType.UINT64]: 'uint64'
}
const DTYPE_TO_ONNX = Object.fromEntries(Object.entries(ONNX_TO_DTYPE).map(([k, v]) => [v, Number(k)])) as Record<DType, number>

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

/**
 * Moves tensors stored as external data (a `.data` file beside the model)
 * into the model, so the model and every stage cut from it stand alone.
 */
export async function inlineExternalData (model: ModelProto, baseDir: string | undefined): Promise<number> {
  const tensors: TensorProto[] = []
  const visit = (g: GraphProto): void => {
    tensors.push(...g.initializer)
    for (const n of g.node) {
      for (const a of n.attribute) {
        if (a.t !== undefined) tensors.push(a.t)
        if (a.g !== undefined) visit(a.g)
        for (const sub of a.graphs) visit(sub)
      }
    }
  }
  if (model.graph !== undefined) visit(model.graph)
  const files = new Map<string, Uint8Array>()
  let inlined = 0
  for (const t of tensors) {
    if (t.dataLocation !== TensorProto_DataLocation.EXTERNAL) continue
    const entry = (k: string): string | undefined => t.externalData.find(e => e.key === k)?.value
    const location = entry('location')
    if (location === undefined) throw new InvalidModelError(`tensor ${t.name}: external data without a location`)
    if (baseDir === undefined) throw new InvalidModelError(`tensor ${t.name} lives in external file ${location}: give the model as a file path so it can be read`)
    if (location.includes('..') || location.startsWith('/')) throw new InvalidModelError(`tensor ${t.name}: external data location ${location} leaves the model's directory`)
    let data = files.get(location)
    if (data === undefined) {
      try { data = await readFile(join(baseDir, location)) } catch (err) {
        throw new InvalidModelError(`tensor ${t.name}: cannot read external data ${location}: ${(err as Error).message}`)
      }
      files.set(location, data)
    }
    const offset = Number(entry('offset') ?? 0)
    const length = entry('length') !== undefined ? Number(entry('length')) : data.byteLength - offset
    if (offset < 0 || offset + length > data.byteLength) throw new InvalidModelError(`tensor ${t.name}: external data ${location} is too short (needs bytes ${offset}..${offset + length}, has ${data.byteLength})`)
    t.rawData = data.slice(offset, offset + length)
    t.externalData = []
    t.dataLocation = TensorProto_DataLocation.DEFAULT
    inlined++
  }
  return inlined
}

function tensorTypeOf (vi: ValueInfoProto): { elemType: number, shape: Array<number | null> | undefined } | undefined {
  if (vi.type?.value.case !== 'tensorType') return undefined
  const tt = vi.type.value.value
  const shape = tt.shape?.dim.map(d => d.value.case === 'dimValue' ? Number(d.value.value) : null)
  return { elemType: tt.elemType, shape }
}

function specOf (vi: ValueInfoProto, probe?: { dtype: DType, dims: number[] }): TensorSpec {
  const t = tensorTypeOf(vi)
  const dtype = (t !== undefined ? ONNX_TO_DTYPE[t.elemType] : undefined) ?? probe?.dtype
  if (dtype === undefined) throw new InvalidModelError(`tensor ${vi.name}: unsupported or missing element type`)
  const shape = t?.shape ?? probe?.dims.map(() => null) ?? []
  return { name: vi.name, dtype, shape }
}

/** Names a graph reads from its enclosing scope (recursively through nested bodies). */
function outerReads (g: GraphProto): string[] {
  const defined = new Set<string>([...g.input.map(i => i.name), ...g.initializer.map(i => i.name)])
  const reads: string[] = []
  for (const n of g.node) {
    for (const name of [...n.input, ...subgraphReads(n)]) if (name !== '' && !defined.has(name)) reads.push(name)
    for (const o of n.output) defined.add(o)
  }
  return [...new Set(reads)]
}

function subgraphReads (n: NodeProto): string[] {
  const out: string[] = []
  for (const a of n.attribute) {
    if (a.type === AttributeProto_AttributeType.GRAPH && a.g !== undefined) out.push(...outerReads(a.g))
    if (a.type === AttributeProto_AttributeType.GRAPHS) for (const g of a.graphs) out.push(...outerReads(g))
  }
  return out
}

function attrInt (n: NodeProto, name: string): number | undefined {
  const a = n.attribute.find(x => x.name === name)
  return a === undefined ? undefined : Number(a.i)
}

/** Estimated FLOPs of one node from tensor shapes. */
function nodeFlops (n: NodeProto, dimsOf: (name: string) => number[] | undefined): number {
  const elems = (name: string): number => { const d = dimsOf(name); return d === undefined ? 0 : elementCount(d) }
  const outElems = n.output.reduce((s, o) => s + (o === '' ? 0 : elems(o)), 0)
  const in0 = n.input[0] !== undefined && n.input[0] !== '' ? elems(n.input[0]) : 0
  switch (n.opType) {
    case 'Conv': {
      const w = dimsOf(n.input[1]) ?? []
      return 2 * outElems * elementCount(w.slice(1))
    }
    case 'ConvTranspose': {
      const w = dimsOf(n.input[1]) ?? []
      return 2 * in0 * elementCount(w.slice(1))
    }
    case 'MatMul': {
      const a = dimsOf(n.input[0]) ?? [1]
      return 2 * outElems * (a.at(-1) ?? 1)
    }
    case 'Gemm': {
      const a = dimsOf(n.input[0]) ?? [1, 1]
      return 2 * outElems * ((attrInt(n, 'transA') ?? 0) === 1 ? a[0] : a[1])
    }
    default:
      return Math.max(outElems, in0)
  }
}

/** Deterministic pseudo-random numbers for probe inputs. */
function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (s + 0x6D2B79F5) >>> 0; let t = s; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296 }
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

export function probeDims (spec: TensorSpec, override?: number[]): number[] {
  if (override !== undefined) {
    if (override.length !== spec.shape.length) throw new InvalidModelError(`probe shape for ${spec.name} has rank ${override.length}, the model declares ${spec.shape.length}`)
    return override
  }
  return spec.shape.map((d, i) => d ?? (i === 0 ? 1 : 64))
}

export function decodeModel (bytes: Uint8Array): ModelProto {
  let model: ModelProto
  try { model = fromBinary(ModelProtoSchema, bytes) } catch (err) {
    throw new InvalidModelError(`not a valid ONNX model: ${(err as Error).message}`)
  }
  if (model.graph === undefined || model.graph.node.length === 0) throw new InvalidModelError('not a valid ONNX model: it has no graph nodes')
  return model
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

/**
 * Measures each compute node's kernel time with onnxruntime's profiler on a
 * copy of the model whose compute nodes are renamed `fm_<index>` (so profile
 * events map back exactly), graph optimization off, one thread. Fills
 * `NodeInfo.ms` with the median over `runs` runs after a warm-up.
 */
export async function measureNodeTimes (a: ModelAnalysis, feeds: Tensor[], runs: number): Promise<void> {
  const g = a.model.graph!
  const index = new Map(a.nodes.map((n, i) => [n.node, i]))
  const renamed = g.node.map(n => {
    const i = index.get(n)
    return i === undefined ? n : create(NodeProtoSchema, { ...n, name: `fm_${i}` })
  })
  const copy = create(ModelProtoSchema, { ...a.model, graph: create(GraphProtoSchema, { ...g, node: renamed }) })
  const prefix = join(tmpdir(), `fleetmesh-profile-${process.pid}-${Date.now()}`)
  const session = await ort.InferenceSession.create(toBinary(ModelProtoSchema, copy), {
    ...sessionOptions({ graphOptimization: 'disabled' }), enableProfiling: true, profileFilePrefix: prefix
  } as ort.InferenceSession.SessionOptions)
  const files: string[] = []
  try {
    for (let r = 0; r <= runs; r++) await runSession(session, feeds)
    ;(session as unknown as { endProfiling: () => void }).endProfiling()
    const dir = dirname(prefix)
    files.push(...(await readdir(dir)).filter(f => f.startsWith(basename(prefix))).map(f => join(dir, f)))
    if (files.length === 0) return
    const events = JSON.parse(await readFile(files[0], 'utf8')) as Array<{ cat?: string, name?: string, dur?: number }>
    const samples = new Map<number, number[]>()
    for (const e of events) {
      const m = e.cat === 'Node' ? /^fm_(\d+)_kernel_time$/.exec(e.name ?? '') : null
      if (m === null) continue
      const i = Number(m[1])
      const list = samples.get(i) ?? []
      list.push((e.dur ?? 0) / 1000)
      samples.set(i, list)
    }
    for (const [i, list] of samples) {
      // the first sample is the warm-up run
      const runsOnly = list.length > 1 ? list.slice(1) : list
      runsOnly.sort((x, y) => x - y)
      a.nodes[i].ms = runsOnly[Math.floor(runsOnly.length / 2)]
    }
    for (const n of a.nodes) n.ms ??= 0
  } finally {
    await session.release()
    for (const f of files) await rm(f, { force: true })
  }
}

/** The cost a plan balances: measured ms when every node has one, else FLOPs. */
export function nodeCosts (a: ModelAnalysis): { costs: number[], unit: 'ms' | 'flops' } {
  if (a.nodes.length > 0 && a.nodes.every(n => n.ms !== undefined)) return { costs: a.nodes.map(n => n.ms!), unit: 'ms' }
  return { costs: a.nodes.map(n => n.flops), unit: 'flops' }
}

/** Bytes of each non-constant tensor at the probe shape. */
function probeBytes (a: ModelAnalysis, name: string): number {
  const p = a.probe.get(name)
  return p === undefined ? 0 : elementCount(p.dims) * itemSize(p.dtype)
}

/**
 * For every cut position c (between node c-1 and node c), the tensors crossing
 * it: produced before c (or a graph input) and read at or after c (or a graph output).
 */
export function crossingSets (a: ModelAnalysis): { at: (c: number) => string[], bytesAt: Float64Array } {
  const N = a.nodes.length
  const producer = new Map<string, number>()
  for (const s of a.inputs) producer.set(s.name, -1)
  a.nodes.forEach((n, i) => { for (const o of n.node.output) if (o !== '') producer.set(o, i) })
  const last = new Map<string, number>()
  a.nodes.forEach((n, i) => { for (const r of n.reads) last.set(r, i) })
  for (const o of a.outputs) last.set(o.name, N)
  const spans: Array<{ name: string, p: number, l: number }> = []
  for (const [name, p] of producer) {
    const l = last.get(name)
    if (l !== undefined && l > p) spans.push({ name, p, l })
  }
  const diff = new Float64Array(N + 2)
  for (const s of spans) { const b = probeBytes(a, s.name); diff[s.p + 1] += b; diff[s.l + 1] -= b }
  const bytesAt = new Float64Array(N + 1)
  let acc = 0
  for (let c = 0; c <= N; c++) { acc += diff[c]; bytesAt[c] = acc }
  return { at: (c: number) => spans.filter(s => s.p < c && c <= s.l).map(s => s.name), bytesAt }
}

export interface CutPlan { cuts: number[], stageFlops: number[], stageMs: number[], crossingBytes: number[], balancedBy: 'ms' | 'flops' }

/**
 * Chooses K-1 cuts. Around each balanced target (k/K of the total FLOPs) it
 * considers cuts whose prefix is within `tolerance` of a stage's share and
 * keeps the one with the fewest crossing bytes (ties: closest to the target).
 */
export function planCuts (a: ModelAnalysis, stages: number, tolerance = 0.1): CutPlan {
  const N = a.nodes.length
  if (!Number.isInteger(stages) || stages < 1) throw new RangeError(`stages must be a positive integer, got ${stages}`)
  if (stages > N) throw new RangeError(`cannot split ${N} compute nodes into ${stages} stages`)
  const { costs, unit } = nodeCosts(a)
  const prefix = new Float64Array(N + 1)
  for (let i = 0; i < N; i++) prefix[i + 1] = prefix[i] + costs[i]
  const total = prefix[N]
  const share = total / stages
  const { bytesAt } = crossingSets(a)
  const cuts: number[] = []
  let prev = 0
  for (let k = 1; k < stages; k++) {
    const target = share * k
    const lo = prev + 1; const hi = N - (stages - k)
    let best = -1; let bestBytes = Infinity; let bestDist = Infinity
    let closest = lo; let closestDist = Infinity
    for (let c = lo; c <= hi; c++) {
      const dist = Math.abs(prefix[c] - target)
      if (dist < closestDist) { closestDist = dist; closest = c }
      if (dist <= tolerance * share) {
        const b = bytesAt[c]
        if (b < bestBytes || (b === bestBytes && dist < bestDist)) { best = c; bestBytes = b; bestDist = dist }
      }
    }
    const c = best >= 0 ? best : closest
    cuts.push(c); prev = c
  }
  const bounds = [0, ...cuts, N]
  const sum = (from: number, to: number, f: (n: NodeInfo) => number): number => a.nodes.slice(from, to).reduce((x, n) => x + f(n), 0)
  return {
    cuts,
    stageFlops: bounds.slice(1).map((b, i) => sum(bounds[i], b, n => n.flops)),
    stageMs: bounds.slice(1).map((b, i) => sum(bounds[i], b, n => n.ms ?? 0)),
    crossingBytes: cuts.map(c => bytesAt[c]),
    balancedBy: unit
  }
}

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

function valueInfo (spec: TensorSpec, prefix: string): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name: spec.name,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, {
          elemType: DTYPE_TO_ONNX[spec.dtype],
          shape: create(TensorShapeProtoSchema, {
            dim: spec.shape.map((d, j) => create(TensorShapeProto_DimensionSchema, {
              value: d === null ? { case: 'dimParam', value: `${prefix}_d${j}` } : { case: 'dimValue', value: BigInt(d) }
            }))
          })
        })
      }
    })
  })
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

export function crossingBytesOf (a: ModelAnalysis, names: string[]): number {
  return names.reduce((s, n) => s + probeBytes(a, n), 0)
}
