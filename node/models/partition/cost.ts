/**
 * What a node costs: estimated FLOPs from tensor shapes, and kernel times
 * measured with onnxruntime's profiler.
 */
import { create, toBinary } from '@bufbuild/protobuf'
import { GraphProtoSchema, ModelProtoSchema, NodeProtoSchema } from 'onnx-buf'
import type { NodeProto } from 'onnx-buf'
import { readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { ort, runSession, sessionOptions } from '../ort.ts'
import { elementCount } from '../../../protocols/tensor.ts'
import type { Tensor } from '../../../protocols/tensor.ts'
import type { ModelAnalysis } from './analysis.ts'
import { attrInt } from './onnx.ts'

/** Estimated FLOPs of one node from tensor shapes. */
export function nodeFlops (n: NodeProto, dimsOf: (name: string) => number[] | undefined): number {
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
