/**
 * The governor applies the eligibility policy to a vehicle's state source and
 * acts on changes: when eligibility ends it stops new work at once, publishes
 * the withdrawal, drains in-flight work within a bound (handing the rest back
 * with DEPARTING) and only then reports the car free to go; when eligibility
 * returns it takes work again and re-advertises.
 */
import type { CapacityAdvertiser } from '../capacity/advertiser.ts'
import type { StageServer } from '../runtime/stage-server.ts'
import { EligibilityPolicy } from './policy.ts'
import type { Decision, PolicyConfig } from './policy.ts'
import type { StateSource } from './sources.ts'
import type { VehicleSummary } from '../../protocols/capacity.ts'

export interface GovernorInit {
  source: StateSource
  policy?: Partial<PolicyConfig>
  /** How long in-flight work may take to finish when the car must go. @default 10000 */
  drainMs?: number
  /** How often the state is evaluated. @default 200 */
  tickMs?: number
}

export type GovernorEvent =
  | { type: 'eligible', at: number, maxSessions: number, powerBudgetW: number }
  | { type: 'ineligible', at: number, reasons: string[] }
  | { type: 'departed', at: number, stoppedAt: number, inflight: number, finished: number, handedOff: number, drained: boolean, ms: number }

export const DEFAULT_DRAIN_MS = 10_000

export class VehicleGovernor {
  readonly source: StateSource
  readonly policy: EligibilityPolicy
  private readonly stages: StageServer
  private readonly advertiser: CapacityAdvertiser
  private readonly drainMs: number
  private readonly tickMs: number
  private readonly emit: (e: GovernorEvent) => void
  private timer?: ReturnType<typeof setInterval>
  private eligible = false
  private draining?: Promise<void>
  last?: Decision

  constructor (stages: StageServer, advertiser: CapacityAdvertiser, init: GovernorInit, emit: (e: GovernorEvent) => void = () => {}) {
    this.stages = stages
    this.advertiser = advertiser
    this.source = init.source
    this.policy = new EligibilityPolicy(init.policy)
    this.drainMs = init.drainMs ?? DEFAULT_DRAIN_MS
    this.tickMs = init.tickMs ?? 200
    this.emit = emit
  }

  async start (): Promise<void> {
    await this.source.start()
    // nothing is taken before the first decision
    this.stages.accepting = false
    this.stages.setMaxSessions(0)
    this.tick()
    this.timer = setInterval(() => { this.tick() }, this.tickMs)
    this.timer.unref()
  }

  summary (d: Decision): VehicleSummary | undefined {
    const r = this.source.read()
    if (r === undefined) return undefined
    return { source: this.source.description, ...r.state, reasons: d.reasons, powerBudgetW: d.powerBudgetW, clock: this.source.now() }
  }

  /** Evaluates the state once and acts on a change. */
  tick (): void {
    const d = this.policy.evaluate(this.source.read(), this.source.now())
    this.last = d
    this.advertiser.vehicle = this.summary(d) ?? { source: this.source.description, parked: false, pluggedIn: false, socPct: 0, chargerKw: 0, computeTempC: 0, nextDepartureAt: null, ownerOptIn: false, network: 'none', reasons: d.reasons, powerBudgetW: 0, clock: this.source.now() }
    if (d.eligible && !this.eligible && this.draining === undefined) {
      this.eligible = true
      this.stages.setMaxSessions(d.maxSessions)
      this.stages.accepting = true
      this.emit({ type: 'eligible', at: Date.now(), maxSessions: d.maxSessions, powerBudgetW: d.powerBudgetW })
      void this.advertiser.beat()
      void this.advertiser.publishRecord()
    } else if (d.eligible && this.eligible) {
      this.stages.setMaxSessions(d.maxSessions)
    } else if (!d.eligible && this.eligible) {
      this.eligible = false
      const stoppedAt = Date.now()
      // within this tick: no new work, and the withdrawal goes out at once
      this.stages.accepting = false
      this.emit({ type: 'ineligible', at: stoppedAt, reasons: d.reasons })
      void this.advertiser.beat()
      this.draining = this.drain(stoppedAt).finally(() => { this.draining = undefined })
    }
  }

  private async drain (stoppedAt: number): Promise<void> {
    void this.advertiser.publishRecord()
    const r = await this.stages.drain(this.drainMs)
    this.stages.setMaxSessions(0)
    this.emit({ type: 'departed', at: Date.now(), stoppedAt, inflight: r.inflight, finished: r.finished, handedOff: r.handedOff, drained: r.stuck === 0, ms: r.ms })
  }

  get isEligible (): boolean { return this.eligible }

  async stop (): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    await this.draining
    await this.source.stop()
  }
}
