/**
 * Which way a job's result comes back to the client: straight from the last
 * hop (direct return, node/runtime/direct-return.ts, with the receipts the
 * hops send ahead) or back along the chain.
 *
 * Straight, a result skips a hop's relaying, but it takes two messages more:
 * the last hop's result to the client and the first hops' receipts sent
 * ahead (the chain still answers). A large result is worth that everywhere.
 * A small one is not when every hop shares the client's machine while other
 * jobs of the client are in flight: the link saves nothing there, and each
 * message costs the CPU the other jobs' stages wait for (a local swarm's text
 * jobs with 4 in flight, five alternating pairs: 0.6 ms less CPU a job along
 * the chain, 81.1 against 79.4 jobs/s). A job alone still comes straight: it
 * ends sooner, on an idle machine.
 */

/**
 * When taps come back along the chain (runs to check), results smaller than
 * this come with them rather than straight from the last hop: opening a
 * stream costs both ends about 2 ms of CPU on the 2-core bench machine (a
 * one-process echo loop), relaying 64 KiB less.
 */
export const DIRECT_RETURN_MIN_BYTES = 64 * 1024

export interface ReturnFacts {
  /** The last stage's outputs, in bytes. */
  resultBytes: number
  /** The last hop reduces them (an output mode: text, top-k), so they are small. */
  reduced: boolean
  /** Taps come back along the chain (runs to be checked). */
  taps: boolean
  /** Other mesh jobs of this client in flight now. */
  others: number
  /** Whether every hop of the route is on this machine (loopback); asked only when it decides. */
  allOnThisMachine: () => boolean
}

/** Whether the result is to come straight from the last hop. */
export function returnsDirect (f: ReturnFacts): boolean {
  if (!f.reduced && f.resultBytes >= DIRECT_RETURN_MIN_BYTES) return true
  return !f.taps && !(f.others > 0 && f.allOnThisMachine())
}
