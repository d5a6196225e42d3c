/**
 * `--scenario day`: vehicles follow simulated commuter days while jobs keep
 * running, and the run reports departures, drains and how fast withdrawals
 * took effect.
 */
import type { SimSchedule } from '../vehicle/sources.ts'
import { percentile } from './jobs.ts'
import type { VehicleReport } from './mesh.ts'

/** Sim seconds per hour. */
const H = 3600

/**
 * Commuter days: everyone starts at home, plugged in (parked since long
 * before the day starts, so the day can begin whenever the mesh is ready);
 * vehicle i leaves at 3 + 14 i / N hours for 5 hours, the first two leave
 * again in the evening, so stays overlap and every stage keeps a holder at
 * home (for the default 6 vehicles and 3 stages). Vehicle 2 comes back below
 * the resume SoC and waits to charge. `wallStart` is when the day begins on
 * the wall clock (the swarm moves it with a `sim-start` message).
 */
export function scenarioSchedules (n: number, durationS: number, wallStart: number): SimSchedule[] {
  return Array.from({ length: n }, (_, i) => {
    const away: Array<[number, number]> = [[3 + 14 * i / n, 5]]
    if (i < 2) away.push([19.5 + i, 3])
    const sessions: SimSchedule['sessions'] = []
    let from = -365 * 24 * H
    let soc = 70
    for (const [start, len] of away) {
      sessions.push({ arrive: from, depart: start * H, socAtArrival: soc, chargerKw: 7.4, network: 'wifi', computeTempC: 45 + i })
      from = (start + len) * H
      soc = i === 2 ? 45 : 60
    }
    sessions.push({ arrive: from, depart: 36 * H, socAtArrival: soc, chargerKw: 7.4, network: 'wifi', computeTempC: 45 + i })
    return { speed: 24 * H / durationS, wallStart, sessions }
  })
}

export interface DayFigures { departures: number, drained: number, withdrawP95Ms: number }

/**
 * Departures (eligibility lost), drains finished within the bound, and per
 * departure the time from losing eligibility to the last new work routed to
 * that vehicle before it came back (the withdrawal delay).
 */
export function dayFigures (reports: VehicleReport[], routeLog: Array<{ peers: string[], at: number }>, drainBoundMs: number): DayFigures {
  const deps = reports.filter(x => x.e.type === 'ineligible')
  const withdraw = deps.map(d => {
    const back = reports.find(x => x.vehicle === d.vehicle && x.e.type === 'eligible' && x.e.at > d.e.at)?.e.at ?? Infinity
    const last = Math.max(d.e.at, ...routeLog.filter(r => r.at > d.e.at && r.at < back && r.peers.includes(d.peer)).map(r => r.at))
    return last - d.e.at
  })
  return {
    departures: deps.length,
    drained: reports.filter(x => x.e.type === 'departed' && x.e.drained === true && x.e.ms <= drainBoundMs).length,
    withdrawP95Ms: Math.round(percentile(withdraw, 95))
  }
}
