/**
 * How often to check a vehicle's stage runs (pure bookkeeping), after
 * BOINC's adaptive replication: a vehicle new to a stage has every run
 * checked until `warmup` checks agreed; then a run is checked with
 * probability max(`minRate`, 1 / agreed checks), so proven vehicles cost
 * little and a vehicle that starts lying later is still caught. A vehicle
 * that loses a check starts again from zero.
 */
export interface ReputationInit {
  /** Checks that must agree before sampling starts. @default 3 */
  warmup?: number
  /** Lowest check probability. @default 0.02 */
  minRate?: number
  /** Most (peer, stage) pairs remembered. @default 100000 */
  maxEntries?: number
}

export class Reputation {
  private readonly agreed = new Map<string, number>()
  private readonly warmup: number
  private readonly minRate: number
  private readonly maxEntries: number

  constructor (init: ReputationInit = {}) {
    this.warmup = init.warmup ?? 3
    this.minRate = init.minRate ?? 0.02
    this.maxEntries = init.maxEntries ?? 100_000
  }

  /** Probability that a run of `stage` on `peer` is checked. */
  rate (peer: string, stage: number): number {
    const n = this.agreed.get(`${peer}/${stage}`) ?? 0
    return n < this.warmup ? 1 : Math.max(this.minRate, 1 / n)
  }

  /** Whether to check this run (`random` in [0, 1)). */
  shouldCheck (peer: string, stage: number, random = Math.random()): boolean {
    return random < this.rate(peer, stage)
  }

  /** A check of `peer`'s run of `stage` agreed. */
  agree (peer: string, stage: number): void {
    const k = `${peer}/${stage}`
    const n = (this.agreed.get(k) ?? 0) + 1
    this.agreed.delete(k)
    this.agreed.set(k, n)
    if (this.agreed.size > this.maxEntries) this.agreed.delete(this.agreed.keys().next().value!)
  }

  /** The peer lost a check: every stage starts again from zero. */
  reset (peer: string): void {
    for (const k of [...this.agreed.keys()]) if (k.startsWith(`${peer}/`)) this.agreed.delete(k)
  }

  agreedChecks (peer: string, stage: number): number { return this.agreed.get(`${peer}/${stage}`) ?? 0 }
}
