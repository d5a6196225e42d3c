/**
 * The eligibility policy: turns vehicle state into "may take work now" and a
 * power budget. Pure and clock-free (callers pass `now`), so every rule is
 * unit-tested. Hysteresis: once eligible, a car stays eligible until SoC falls
 * below `stopSocPct`; once stopped, it resumes only at `resumeSocPct` and not
 * before `minHoldMs` has passed since the stop, so it never flaps.
 */
import type { StateReading, VehicleState } from './state.ts'

export interface PolicyConfig {
  /** Resume (become eligible) only at or above this SoC. @default 50 */
  resumeSocPct: number
  /** Stop when SoC falls below this. @default 40 */
  stopSocPct: number
  /** Stop at or above this compute temperature. @default 80 */
  maxComputeTempC: number
  /** Stop this long before a planned departure (time to drain and cool down). @default 15 min */
  departureMarginMs: number
  /** Networks on which the car may work. @default ['wifi'] */
  allowedNetworks: Array<VehicleState['network']>
  /** After a stop, stay stopped at least this long. @default 5 min */
  minHoldMs: number
  /** A reading older than this counts as no state at all. @default 30 s */
  staleMs: number
  /** Most watts the computer may draw for fleet work. @default 300 */
  maxComputeWatts: number
  /** Share of the charger's power that fleet work may use. @default 0.1 */
  chargerShare: number
  /** Watts one running stage session draws. @default 60 */
  wattsPerSession: number
  /** Work only while the grid's price per kWh is at or below this (a source that knows it: evcc). @default Infinity (any) */
  maxTariff: number
  /** Work only while the site exports at least this many watts (solar surplus, evcc). @default 0 (off) */
  minSurplusW: number
}

export const minute = 60_000

export const DEFAULT_POLICY: PolicyConfig = {
  resumeSocPct: 50,
  stopSocPct: 40,
  maxComputeTempC: 80,
  departureMarginMs: 15 * minute,
  allowedNetworks: ['wifi'],
  minHoldMs: 5 * minute,
  staleMs: 30_000,
  maxComputeWatts: 300,
  chargerShare: 0.1,
  wattsPerSession: 60,
  maxTariff: Infinity,
  minSurplusW: 0
}

export interface Decision {
  eligible: boolean
  /** Why not (empty when eligible). */
  reasons: string[]
  /** Watts available for fleet work. */
  powerBudgetW: number
  /** Stage sessions that may run at once. */
  maxSessions: number
}

/** Watts and sessions the state allows, regardless of eligibility. */
export function powerBudget (s: VehicleState, c: PolicyConfig): { watts: number, sessions: number } {
  const watts = s.pluggedIn ? Math.min(c.maxComputeWatts, s.chargerKw * 1000 * c.chargerShare) : 0
  return { watts, sessions: Math.floor(watts / c.wattsPerSession) }
}

export class EligibilityPolicy {
  readonly config: PolicyConfig
  private eligible = false
  private stoppedAt = -Infinity

  constructor (config: Partial<PolicyConfig> = {}) {
    this.config = { ...DEFAULT_POLICY, ...config }
    if (this.config.stopSocPct > this.config.resumeSocPct) throw new RangeError(`stopSocPct (${this.config.stopSocPct}) must not exceed resumeSocPct (${this.config.resumeSocPct})`)
  }

  get isEligible (): boolean { return this.eligible }

  /** Evaluates a reading (or its absence) at `now` and updates the hysteresis state. */
  evaluate (reading: StateReading | undefined, now: number): Decision {
    const c = this.config
    const reasons: string[] = []
    if (reading === undefined) {
      reasons.push('no vehicle state')
    } else if (now - reading.at > c.staleMs) {
      reasons.push(`state is stale (${Math.round((now - reading.at) / 1000)} s old)`)
    }
    const s = reading?.state
    let budget = { watts: 0, sessions: 0 }
    if (s !== undefined && reasons.length === 0) {
      if (!s.ownerOptIn) reasons.push('owner has not opted in')
      if (!s.parked) reasons.push('not parked')
      if (!s.pluggedIn) reasons.push('not plugged in')
      const socFloor = this.eligible ? c.stopSocPct : c.resumeSocPct
      if (s.socPct < socFloor) reasons.push(`state of charge ${s.socPct}% below ${socFloor}%`)
      if (s.computeTempC >= c.maxComputeTempC) reasons.push(`compute at ${s.computeTempC} °C (limit ${c.maxComputeTempC})`)
      if (s.nextDepartureAt !== null && s.nextDepartureAt - now < c.departureMarginMs) reasons.push(`departure in ${Math.max(0, Math.round((s.nextDepartureAt - now) / minute))} min`)
      if (!c.allowedNetworks.includes(s.network)) reasons.push(`network ${s.network} not allowed`)
      if (c.maxTariff < Infinity) {
        if (s.tariffPerKwh === undefined) reasons.push(`no grid tariff known (maxTariff ${c.maxTariff} needs a source that has one, e.g. evcc)`)
        else if (s.tariffPerKwh > c.maxTariff) reasons.push(`grid tariff ${s.tariffPerKwh} above ${c.maxTariff}`)
      }
      if (c.minSurplusW > 0) {
        if (s.surplusW === undefined) reasons.push(`no solar surplus known (minSurplusW ${c.minSurplusW} needs a source that has one, e.g. evcc)`)
        else if (s.surplusW < c.minSurplusW) reasons.push(`solar surplus ${Math.round(s.surplusW)} W below ${c.minSurplusW} W`)
      }
      budget = powerBudget(s, c)
      if (budget.sessions < 1 && s.pluggedIn) reasons.push(`power budget ${Math.round(budget.watts)} W is below one session (${c.wattsPerSession} W)`)
    }
    if (!this.eligible && reasons.length === 0 && now - this.stoppedAt < c.minHoldMs) {
      reasons.push(`holding for ${Math.ceil((c.minHoldMs - (now - this.stoppedAt)) / 1000)} s after the last stop`)
    }
    const eligible = reasons.length === 0
    if (this.eligible && !eligible) this.stoppedAt = now
    this.eligible = eligible
    return { eligible, reasons, powerBudgetW: eligible ? budget.watts : 0, maxSessions: eligible ? budget.sessions : 0 }
  }
}
