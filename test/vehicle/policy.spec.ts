import assert from 'node:assert/strict'
import { DEFAULT_POLICY, EligibilityPolicy, minute, powerBudget } from '../../node/vehicle/policy.ts'
import type { VehicleState } from '../../node/vehicle/state.ts'

const good: VehicleState = { parked: true, pluggedIn: true, socPct: 70, chargerKw: 7.4, computeTempC: 45, nextDepartureAt: null, ownerOptIn: true, network: 'wifi' }
const at = (state: Partial<VehicleState>, t: number) => ({ state: { ...good, ...state }, at: t })

describe('eligibility policy', () => {
  it('is eligible when every rule holds, with a power budget', () => {
    const d = new EligibilityPolicy().evaluate(at({}, 0), 0)
    assert.equal(d.eligible, true)
    assert.deepEqual(d.reasons, [])
    assert.equal(d.powerBudgetW, 300) // min(300 W, 10% of 7.4 kW)
    assert.equal(d.maxSessions, 5)
  })

  const rules: Array<[string, Partial<VehicleState>, RegExp]> = [
    ['owner opt-in', { ownerOptIn: false }, /opted in/],
    ['parked', { parked: false }, /not parked/],
    ['plugged in', { pluggedIn: false }, /not plugged in/],
    ['resume SoC', { socPct: 49 }, /state of charge 49% below 50%/],
    ['temperature', { computeTempC: 80 }, /compute at 80 °C/],
    ['departure margin', { nextDepartureAt: 10 * minute }, /departure in 10 min/],
    ['network', { network: 'cellular' }, /network cellular not allowed/],
    ['power budget', { chargerKw: 0.5 }, /power budget 50 W/]
  ]
  for (const [rule, state, reason] of rules) {
    it(`refuses on ${rule}, naming the reason`, () => {
      const d = new EligibilityPolicy().evaluate(at(state, 0), 0)
      assert.equal(d.eligible, false)
      assert.equal(d.maxSessions, 0)
      assert.ok(d.reasons.some(r => reason.test(r)), d.reasons.join('; '))
    })
  }

  it('refuses without state and on stale state', () => {
    const p = new EligibilityPolicy({ staleMs: 30_000 })
    assert.match(p.evaluate(undefined, 0).reasons[0], /no vehicle state/)
    assert.match(p.evaluate(at({}, 0), 30_001).reasons[0], /stale/)
    assert.equal(new EligibilityPolicy().evaluate(at({}, 0), 30_000).eligible, true)
  })

  it('keeps working down to the stop threshold once eligible (hysteresis)', () => {
    const p = new EligibilityPolicy()
    assert.equal(p.evaluate(at({ socPct: 50 }, 0), 0).eligible, true)
    assert.equal(p.evaluate(at({ socPct: 45 }, 1000), 1000).eligible, true)
    assert.equal(p.evaluate(at({ socPct: 40 }, 2000), 2000).eligible, true)
    assert.equal(p.evaluate(at({ socPct: 39.9 }, 3000), 3000).eligible, false)
    // back to 45: below the resume threshold, still stopped
    assert.equal(p.evaluate(at({ socPct: 45 }, 4000 + DEFAULT_POLICY.minHoldMs), 4000 + DEFAULT_POLICY.minHoldMs).eligible, false)
  })

  it('changes eligibility at most once per hold time when SoC oscillates around a threshold', () => {
    const p = new EligibilityPolicy({ minHoldMs: 5 * minute })
    let changes = 0; let last: boolean | undefined
    const changeTimes: number[] = []
    // SoC swings 35..55 every 20 s for two hours
    for (let t = 0; t <= 120 * minute; t += 10_000) {
      const soc = (Math.floor(t / 20_000) % 2 === 0) ? 55 : 35
      const e = p.evaluate(at({ socPct: soc }, t), t).eligible
      if (last !== undefined && e !== last) { changes++; changeTimes.push(t) }
      last = e
    }
    assert.ok(changes >= 2, `it still resumes after holding (${changes} changes)`)
    for (let i = 1; i < changeTimes.length; i++) {
      // a stop is followed by a resume no sooner than the hold time
      if (i % 2 === 1) assert.ok(changeTimes[i] - changeTimes[i - 1] >= 5 * minute, `changes at ${changeTimes}`)
    }
  })

  it('holds after a stop even when everything is fine again', () => {
    const p = new EligibilityPolicy({ minHoldMs: 60_000 })
    p.evaluate(at({}, 0), 0)
    assert.equal(p.evaluate(at({ pluggedIn: false }, 1000), 1000).eligible, false)
    const held = p.evaluate(at({}, 2000), 2000)
    assert.equal(held.eligible, false)
    assert.match(held.reasons[0], /holding for 59 s/)
    assert.equal(p.evaluate(at({}, 61_000), 61_000).eligible, true)
  })

  it('stops ahead of a planned departure and resumes when none is planned', () => {
    const p = new EligibilityPolicy({ departureMarginMs: 15 * minute, minHoldMs: 0 })
    assert.equal(p.evaluate(at({ nextDepartureAt: 16 * minute }, 0), 0).eligible, true)
    assert.equal(p.evaluate(at({ nextDepartureAt: 16 * minute }, minute + 1), minute + 1).eligible, false)
    assert.equal(p.evaluate(at({ nextDepartureAt: null }, 2 * minute), 2 * minute).eligible, true)
  })

  it('scales sessions with the charger and caps them', () => {
    assert.deepEqual(powerBudget({ ...good, chargerKw: 3.7 }, DEFAULT_POLICY), { watts: 300, sessions: 5 })
    assert.deepEqual(powerBudget({ ...good, chargerKw: 1.4 }, DEFAULT_POLICY), { watts: 140, sessions: 2 })
    assert.deepEqual(powerBudget({ ...good, pluggedIn: false }, DEFAULT_POLICY), { watts: 0, sessions: 0 })
    assert.throws(() => new EligibilityPolicy({ stopSocPct: 60, resumeSocPct: 50 }), RangeError)
  })
})
