/**
 * Planning cuts: the tensors that cross each position in topological order,
 * and K-1 cut positions that balance the cost while moving few bytes.
 */
import { elementCount, itemSize } from '../../../protocols/tensor.ts'
import type { ModelAnalysis, NodeInfo } from './analysis.ts'
import { nodeCosts } from './cost.ts'

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
 * Chooses K-1 cuts. Around each balanced target (k/K of the total cost) it
 * considers cuts whose prefix is within `tolerance` of a stage's share and
 * keeps the one with the fewest crossing bytes (ties: closest to the target).
 *
 * The tolerance is 30%, because bytes cost more than imbalance: pp-ocrv4-rec
 * in two has a 0.45 MB cut at 60% of its measured time and 0.9 MB ones at
 * 50%. The 0.45 MB more take 3.7 ms on a gigabit link and 74 ms at 50 Mbit/s,
 * against about 3 ms of compute moved from one stage to the other; on one
 * machine they cost 1-2 ms of CPU a job (digests, encryption, copies). At
 * 10%, as before, the planner chose 0.9 MB.
 */
export function planCuts (a: ModelAnalysis, stages: number, tolerance = 0.3): CutPlan {
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

export function crossingBytesOf (a: ModelAnalysis, names: string[]): number {
  return names.reduce((s, n) => s + probeBytes(a, n), 0)
}
