/**
 * Attempt budgets (pure).
 */
import type { Tensor } from '../../protocols/tensor.ts'
import type { Candidate } from './router.ts'

/**
 * How long an attempt may take: a fixed allowance plus, per stage, six
 * times what the holder's heartbeat says a run takes with its queue (at
 * least 500 ms), plus three times the route's predicted network time (its
 * links' measured RTT and bandwidth: a car on a slow link is not "slow").
 * A peer that claims to be fast and then stalls runs out of it. A routing
 * penalty (a suspect's) is no queue and gives the attempt no more time.
 */
export function attemptBudget (route: Candidate[], inputs: Tensor[], networkMs = 0): number {
  const items = Math.max(1, inputs[0]?.dims[0] ?? 1)
  return Math.ceil(2000 + 3 * networkMs + route.reduce((sum, c) => sum + Math.max(500, 6 * c.msPerItem * items * (1 + c.load)), 0))
}
