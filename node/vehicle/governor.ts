/**
 * The governor owns a vehicle's eligibility. It applies the policy to the
 * state source every tick and acts on changes through the stage runtime:
 * when eligibility ends it stops new work at once (`pause`), announces it
 * (the `ineligible` event, which the advertiser publishes), drains in-flight
 * work within a bound (handing the rest back with DEPARTING) and only then
 * reports the car free to go (`departed`); when eligibility returns it
 * resumes the runtime with the power budget's session count.
 */
import { TypedEventEmitter } from '@libp2p/interface'
import { repeatingTask } from '@libp2p/utils'
import type { ComponentLogger, Logger, Startable } from '@libp2p/interface'
import type { RepeatingTask } from '@libp2p/utils'
import type { VehicleSummary } from '../../protocols/capacity.ts'
import type { StageRuntime } from '../runtime/stage-runtime.ts'
import { EligibilityPolicy } from './policy.ts'
import type { Decision, PolicyConfig } from './policy.ts'
import type { StateSource } from './sources.ts'

export interface GovernorComponents {
  logger: ComponentLogger
  runtime: Pick<StageRuntime, 'pause' | 'resume' | 'setMaxSessions' | 'drain'>
}

export interface GovernorInit {
  source: StateSource
  policy?: Partial<PolicyConfig>
  /** How long in-flight work may take to finish when the car must go. @default 10000 */
  drainMs?: number
  /** How often the state is evaluated. @default 200 */
  tickMs?: number
}

export interface EligibleEvent { at: number, maxSessions: number, powerBudgetW: number }
export interface IneligibleEvent { at: number, reasons: string[] }
/** Not eligible, and why, when the kind of reason changes (the first decision included): what keeps a car from work. */
export interface WaitingEvent { at: number, reasons: string[] }
export interface DepartedEvent { at: number, stoppedAt: number, inflight: number, finished: number, handedOff: number, drained: boolean, ms: number }

export interface GovernorEvents {
  eligible: CustomEvent<EligibleEvent>
  ineligible: CustomEvent<IneligibleEvent>
  waiting: CustomEvent<WaitingEvent>
  departed: CustomEvent<DepartedEvent>
}

export const DEFAULT_DRAIN_MS = 10_000

export class VehicleGovernor extends TypedEventEmitter<GovernorEvents> implements Startable {
  readonly source: StateSource
  readonly policy: EligibilityPolicy
  private readonly c: GovernorComponents
  private readonly drainMs: number
  private readonly log: Logger
  private readonly ticker: RepeatingTask
  private eligible = false
  private draining?: Promise<void>
  private last?: Decision
  /** The kinds of reason last said in a `waiting` event (numbers left out), to say them once. */
  private waitingFor = ''

  constructor (components: GovernorComponents, init: GovernorInit) {
    super()
    this.c = components
    this.source = init.source
    this.policy = new EligibilityPolicy(init.policy)
    this.drainMs = init.drainMs ?? DEFAULT_DRAIN_MS
    this.log = components.logger.forComponent('fleetmesh:governor')
    this.ticker = repeatingTask(() => { this.tick() }, init.tickMs ?? 200)
  }

  async start (): Promise<void> {
    await this.source.start()
    // nothing is taken before the first decision
    this.c.runtime.pause()
    this.c.runtime.setMaxSessions(0)
    this.tick()
    this.ticker.start()
  }

  /** Stops evaluating: the vehicle takes no new work from now on (work being drained still finishes). */
  async stop (): Promise<void> {
    this.ticker.stop()
    this.eligible = false
    this.c.runtime.pause()
    await this.draining
    await this.source.stop()
  }

  get isEligible (): boolean { return this.eligible }

  /** The latest decision (undefined before the first tick). */
  get decision (): Decision | undefined { return this.last }

  /** The vehicle's state and the latest decision, as heartbeats carry them. */
  summary (): VehicleSummary {
    const d = this.last ?? { eligible: false, reasons: ['starting'], powerBudgetW: 0, maxSessions: 0 }
    const r = this.source.read()
    const state = r?.state ?? { parked: false, pluggedIn: false, socPct: 0, chargerKw: 0, computeTempC: 0, nextDepartureAt: null, ownerOptIn: false, network: 'none' as const }
    return { source: this.source.description, ...state, reasons: d.reasons, powerBudgetW: d.powerBudgetW, clock: this.source.now() }
  }

  /** Evaluates the state once and acts on a change. */
  tick (): void {
    const d = this.policy.evaluate(this.source.read(), this.source.now())
    // a source that cannot be read says why (a missing file, an unreachable broker)
    const problem = this.source.lastError
    if (problem !== undefined) d.reasons = d.reasons.map(r => r === 'no vehicle state' || r.startsWith('state is stale') ? `${r}: ${problem}` : r)
    this.last = d
    const kinds = d.eligible ? '' : d.reasons.map(r => r.replace(/\d+(\.\d+)?/g, '#')).join('; ')
    if (kinds !== this.waitingFor) {
      this.waitingFor = kinds
      if (!d.eligible && !this.eligible) this.safeDispatchEvent('waiting', { detail: { at: Date.now(), reasons: d.reasons } })
    }
    if (d.eligible && !this.eligible && this.draining === undefined) {
      this.eligible = true
      this.c.runtime.resume(d.maxSessions)
      this.log('eligible: %d sessions', d.maxSessions)
      this.safeDispatchEvent('eligible', { detail: { at: Date.now(), maxSessions: d.maxSessions, powerBudgetW: d.powerBudgetW } })
    } else if (d.eligible && this.eligible) {
      this.c.runtime.setMaxSessions(d.maxSessions)
    } else if (!d.eligible && this.eligible) {
      this.eligible = false
      const stoppedAt = Date.now()
      // within this tick: no new work, and the withdrawal goes out at once
      this.c.runtime.pause()
      this.log('not eligible: %s', d.reasons.join('; '))
      this.safeDispatchEvent('ineligible', { detail: { at: stoppedAt, reasons: d.reasons } })
      this.draining = this.drain(stoppedAt).finally(() => { this.draining = undefined })
    }
  }

  private async drain (stoppedAt: number): Promise<void> {
    const r = await this.c.runtime.drain(this.drainMs)
    this.safeDispatchEvent('departed', { detail: { at: Date.now(), stoppedAt, inflight: r.inflight, finished: r.finished, handedOff: r.handedOff, drained: r.stuck === 0, ms: r.ms } })
  }
}
