/**
 * Simulated vehicles for `fleetmesh sim`: each car lives the commuter days
 * of `sim:random` (node/vehicle/sources.ts: randomDay, simulatedState) and
 * is judged by the real eligibility policy (node/vehicle/policy.ts), which
 * the simulator asks at every moment the car's state can change: arriving,
 * plugging in, unplugging, the departure margin, leaving, the state of
 * charge reaching the resume threshold, the end of a hold. Between those
 * moments nothing the policy reads changes, so a day costs a handful of
 * policy calls per car, and a million cars fit in minutes.
 */
import { EligibilityPolicy } from '../vehicle/policy.ts'
import type { PolicyConfig } from '../vehicle/policy.ts'
import { randomDay, simulatedState } from '../vehicle/sources.ts'
import type { SimSchedule } from '../vehicle/sources.ts'

const DAY_S = 24 * 3600

export interface CarDay {
  /** Eligible intervals, seconds from the start: [from, to) pairs, in order. */
  eligible: number[]
  /** Times the car became eligible or stopped being eligible (each is a heartbeat and a record put). */
  transitions: number[]
  /** Charger power while eligible, W (what the policy's power budget allows). */
  budgetW: number
}

/** The moments of one day (seconds from its start) at which the policy's verdict may change. */
function moments (sch: SimSchedule, policy: PolicyConfig): number[] {
  const out = new Set<number>([0])
  const battery = sch.batteryKwh ?? 75
  for (const s of sch.sessions) {
    const plug = s.plugIn ?? s.arrive
    const unplug = s.unplug ?? s.depart
    for (const t of [s.arrive, plug, unplug, s.depart, s.depart - policy.departureMarginMs / 1000]) out.add(t)
    // charging at kW from socAtArrival: when the resume threshold is reached
    const kw = s.chargerKw ?? 7.4
    if (s.socAtArrival < policy.resumeSocPct && kw > 0) out.add(plug + (policy.resumeSocPct - s.socAtArrival) / 100 * battery / kw * 3600 + 60)
  }
  return [...out].filter(t => t >= 0 && t < DAY_S).sort((a, b) => a - b)
}

/** One car's `days` days (a new random day each, from `seed`), judged by a policy with `config`. */
export function carDays (seed: number, days: number, config: Partial<PolicyConfig> = {}): CarDay {
  const policy = new EligibilityPolicy(config)
  const eligible: number[] = []
  const transitions: number[] = []
  let budgetW = 0
  let was = false
  for (let d = 0; d < days; d++) {
    const sch = randomDay(seed * 31 + d)
    const base = d * DAY_S
    const times = moments(sch, policy.config)
    const check = (t: number): void => {
      const state = simulatedState(sch, t, 0)
      const verdict = policy.evaluate({ state, at: (base + t) * 1000 }, (base + t) * 1000)
      if (verdict.eligible) budgetW = Math.max(budgetW, verdict.powerBudgetW)
      if (verdict.eligible !== was) {
        // interval bounds alternate: a start when it becomes eligible, an end when it stops; eligible at
        // the very start is how the car was before the simulated time began, not a change
        if (base + t > 0) transitions.push(base + t)
        eligible.push(base + t)
        was = verdict.eligible
      }
    }
    for (let i = 0; i < times.length; i++) {
      check(times[i])
      // a stop holds for minHoldMs: look again when it ends
      if (!was && i + 1 < times.length && times[i + 1] - times[i] > policy.config.minHoldMs / 1000) check(times[i] + policy.config.minHoldMs / 1000 + 1)
    }
  }
  if (was) eligible.push(days * DAY_S)
  return { eligible, transitions, budgetW }
}

/** Whether a car with these intervals is eligible at `t`. */
export function eligibleAt (intervals: ArrayLike<number>, t: number): boolean {
  for (let i = 0; i + 1 < intervals.length; i += 2) {
    if (t < intervals[i]) return false
    if (t < intervals[i + 1]) return true
  }
  return false
}

/** Seconds of eligibility within [from, to). */
export function eligibleSeconds (intervals: ArrayLike<number>, from: number, to: number): number {
  let s = 0
  for (let i = 0; i + 1 < intervals.length; i += 2) s += Math.max(0, Math.min(to, intervals[i + 1]) - Math.max(from, intervals[i]))
  return s
}
