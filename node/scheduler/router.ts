/**
 * Route selection: pure functions, no I/O, so they are easy to test and to
 * reuse in a simulator. A route is one peer per stage; the chosen route
 * minimises predicted time (per-stage compute scaled by the peer's queue,
 * plus moving the hand-off tensors) and prefers distinct peers per stage.
 */

export interface Candidate {
  peer: string
  addrs: string[]
  /** Items queued at the peer (its latest heartbeat) plus ours in flight there. */
  load: number
  /** Measured ms per item for this stage at this peer (0 when unknown). */
  msPerItem: number
}

export interface RouteCosts {
  /** Fallback ms per stage when a peer has no measurement yet. */
  stageMs: number[]
  /** Bytes each stage hands to the next one. */
  handOffBytes: number[]
  /** Assumed bytes per ms between peers. @default 100_000 (100 MB/s) */
  bytesPerMs?: number
  /** Added once per repeated peer in a route. @default 1e6 (only when nothing else fits) */
  reusePenaltyMs?: number
  /**
   * Peers whose predicted times differ by less than about this fraction are
   * treated as equal (random tie-break), so work spreads over replicas and
   * measurements taken on a busy machine do not pin every job to one peer.
   * @default 0.15
   */
  spread?: number
}

export class NoRouteError extends Error {
  readonly name = 'NoRouteError'
  readonly code = 'ERR_NO_ROUTE'
  readonly stage: number
  constructor (stage: number, detail = 'no eligible vehicle serves it right now') {
    super(`no route: stage ${stage}: ${detail}`)
    this.stage = stage
  }
}

export function predictedMs (c: Candidate, stage: number, costs: RouteCosts): number {
  const ms = c.msPerItem > 0 ? c.msPerItem : (costs.stageMs[stage] ?? 10)
  return ms * (1 + c.load) + (costs.handOffBytes[stage] ?? 0) / (costs.bytesPerMs ?? 100_000)
}

/**
 * Picks one candidate per stage. `candidates[i]` are the peers for stage
 * `first + i`. Exhaustive search when small, greedy otherwise; ties are broken
 * by `random` so near-equal peers share the work.
 */
export function chooseRoute (candidates: Candidate[][], costs: RouteCosts, first = 0, random: () => number = Math.random): Candidate[] {
  candidates.forEach((c, i) => { if (c.length === 0) throw new NoRouteError(first + i) })
  const penalty = costs.reusePenaltyMs ?? 1e6
  const spread = costs.spread ?? 0.15
  const jitter = candidates.map(cs => cs.map(() => 1 + random() * spread))
  const space = candidates.reduce((p, c) => p * c.length, 1)
  if (space <= 4096) {
    let best: Candidate[] = []; let bestCost = Infinity
    const pick: Candidate[] = []
    const walk = (i: number, cost: number): void => {
      if (cost >= bestCost) return
      if (i === candidates.length) { bestCost = cost; best = [...pick]; return }
      candidates[i].forEach((c, j) => {
        const reuse = pick.some(p => p.peer === c.peer) ? penalty : 0
        pick.push(c)
        walk(i + 1, cost + predictedMs(c, first + i, costs) * jitter[i][j] + reuse)
        pick.pop()
      })
    }
    walk(0, 0)
    return best
  }
  const route: Candidate[] = []
  candidates.forEach((cs, i) => {
    let best = cs[0]; let bestCost = Infinity
    cs.forEach((c, j) => {
      const cost = predictedMs(c, first + i, costs) * jitter[i][j] + (route.some(p => p.peer === c.peer) ? penalty : 0)
      if (cost < bestCost) { bestCost = cost; best = c }
    })
    route.push(best)
  })
  return route
}
