/** How long a job keeps away from a peer another hop said failed it. */
export const ACCUSED_EXCLUSION_MS = 5000

/** Peers one job keeps away from (node/client/pipeline.ts), each until a time. */
export class Exclusions {
  private readonly until = new Map<string, number>()
  add (peer: string, ms: number): void { this.until.set(peer, Date.now() + ms) }
  has (peer: string): boolean { return (this.until.get(peer) ?? 0) > Date.now() }
  current (): Set<string> { return new Set([...this.until.keys()].filter(p => this.has(p))) }
}
