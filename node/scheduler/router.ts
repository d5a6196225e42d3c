/**
 * Route selection: pure functions, no I/O, so they are easy to test and to
 * reuse in a simulator. A route is one peer per stage; the chosen route
 * minimises predicted time and prefers distinct peers per stage. Predicted
 * time is compute x queue at each hop plus, for every link (client to first
 * hop, hop to hop, and the way back to the client), RTT + bytes / bandwidth
 * from measured link figures (node/scheduler/links.ts), with defaults for a
 * link nobody has measured yet.
 */
import type { LinkFigure } from '../../protocols/capacity.ts'

export interface Candidate {
  peer: string
  addrs: string[]
  /** Items queued at the peer (its latest heartbeat) plus ours in flight there. */
  load: number
  /**
   * Load counted for routing only, so the peer is chosen last (a suspect):
   * not a queue the peer has, so an attempt's time budget leaves it out.
   */
  penalty?: number
  /** Measured ms per item for this stage at this peer (0 when unknown). */
  msPerItem: number
  /** The peer's measured links to other peers (its heartbeat). */
  links?: LinkFigure[]
  /** The locality cell it was heard in. */
  cell?: string
}

export interface RouteCosts {
  /** Fallback ms per stage when a peer has no measurement yet. */
  stageMs: number[]
  /** Bytes each stage hands to the next one. */
  handOffBytes: number[]
  /** Assumed bytes per ms on a link whose throughput nobody has measured. @default 100_000 (100 MB/s) */
  bytesPerMs?: number
  /** Assumed round trip of a link nobody has measured, ms. @default 0 */
  rttMs?: number
  /** The client's own measured link to a peer. Without it (and without link figures) only hand-offs count. */
  clientLink?: (peer: string) => LinkFigure | undefined
  /** Bytes the client sends to the first hop. @default 0 */
  inputBytes?: number
  /** Bytes of the result. @default 0 */
  outputBytes?: number
  /** The result comes back hop by hop along the chain (else straight from the last hop). @default true */
  returnAlongChain?: boolean
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

/** Compute at a hop: its measured time per item (or the stage's fallback) scaled by its queue (and any penalty). */
export function computeMs (c: Candidate, stage: number, costs: RouteCosts): number {
  const ms = c.msPerItem > 0 ? c.msPerItem : (costs.stageMs[stage] ?? 10)
  return ms * (1 + routingLoad(c))
}

/** The load a candidate is routed by: its queue and any penalty. */
export function routingLoad (c: Candidate): number {
  return c.load + (c.penalty ?? 0)
}

/** What `a` or `b` measured of the link between them (either direction; `undefined` is the client). */
export function linkBetween (a: Candidate | undefined, b: Candidate | undefined, costs: RouteCosts): LinkFigure | undefined {
  if (a === undefined && b === undefined) return undefined
  if (a === undefined) return costs.clientLink?.(b!.peer)
  if (b === undefined) return costs.clientLink?.(a.peer)
  return a.links?.find(l => l.peer === b.peer) ?? b.links?.find(l => l.peer === a.peer)
}

/** Moving `bytes` over a link: its round trip plus bytes over its bandwidth (measured, else assumed). */
export function linkMs (fig: LinkFigure | undefined, bytes: number, costs: RouteCosts): number {
  const bw = fig !== undefined && fig.bytesPerMs > 0 ? fig.bytesPerMs : costs.bytesPerMs ?? 100_000
  return (fig !== undefined ? fig.rttMs : costs.rttMs ?? 0) + bytes / bw
}

/** Network time of a whole route: the input in, each hand-off, and the result back. */
export function networkMs (route: Candidate[], costs: RouteCosts, first = 0): number {
  let ms = linkMs(linkBetween(undefined, route[0], costs), costs.inputBytes ?? 0, costs)
  for (let i = 0; i + 1 < route.length; i++) ms += linkMs(linkBetween(route[i], route[i + 1], costs), costs.handOffBytes[first + i] ?? 0, costs)
  return ms + returnMs(route, costs)
}

/** Predicted time of a whole route (compute at each hop plus its network time). */
export function routeMs (route: Candidate[], costs: RouteCosts, first = 0): number {
  return route.reduce((sum, c, i) => sum + computeMs(c, first + i, costs), 0) + networkMs(route, costs, first)
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
      if (i === candidates.length) {
        const total = cost + returnMs(pick, costs)
        if (total < bestCost) { bestCost = total; best = [...pick] }
        return
      }
      candidates[i].forEach((c, j) => {
        const reuse = pick.some(p => p.peer === c.peer) ? penalty : 0
        const link = linkMs(linkBetween(pick.at(-1), c, costs), i === 0 ? (costs.inputBytes ?? 0) : (costs.handOffBytes[first + i - 1] ?? 0), costs)
        pick.push(c)
        walk(i + 1, cost + computeMs(c, first + i, costs) * jitter[i][j] + link + reuse)
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
      const link = linkMs(linkBetween(route.at(-1), c, costs), i === 0 ? (costs.inputBytes ?? 0) : (costs.handOffBytes[first + i - 1] ?? 0), costs)
      const cost = computeMs(c, first + i, costs) * jitter[i][j] + link + (route.some(p => p.peer === c.peer) ? penalty : 0)
      if (cost < bestCost) { bestCost = cost; best = c }
    })
    route.push(best)
  })
  return route
}

/** The result's way back to the client (see RouteCosts.returnAlongChain). */
function returnMs (route: Candidate[], costs: RouteCosts): number {
  const out = costs.outputBytes ?? 0
  if (!(costs.returnAlongChain ?? true)) return linkMs(linkBetween(route.at(-1), undefined, costs), out, costs)
  let ms = linkMs(linkBetween(route[0], undefined, costs), out, costs)
  for (let i = route.length - 1; i > 0; i--) ms += linkMs(linkBetween(route[i], route[i - 1], costs), out, costs)
  return ms
}

/**
 * Keeps a route inside the nearest cell: `cells` are the client's locality
 * cells, nearest first (its own, then its neighbours). The candidates of the
 * first cell that holds every stage, else those of the nearest cells
 * together, as few as hold every stage; candidates of no listed cell (found
 * through the DHT only) count as the farthest. Unchanged when no set of
 * cells holds every stage (the router then says which stage has nobody).
 */
export function inNearestCell (cands: Candidate[][], cells: string[]): Candidate[][] {
  if (cells.length < 2) return cands
  const rank = (c: Candidate): number => { const i = c.cell === undefined ? -1 : cells.indexOf(c.cell); return i < 0 ? cells.length : i }
  for (let r = 0; r < cells.length; r++) {
    const only = cands.map(stage => stage.filter(c => rank(c) === r))
    if (only.every(s => s.length > 0)) return only
  }
  for (let r = 1; r <= cells.length; r++) {
    const near = cands.map(stage => stage.filter(c => rank(c) <= r))
    if (near.every(s => s.length > 0)) return near
  }
  return cands
}
