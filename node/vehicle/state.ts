/**
 * Vehicle state: what the car says about itself, and where it comes from.
 * Shared data only (no I/O): sources live in sources.ts, the policy in policy.ts.
 */

import type { NetworkKind, VehicleState } from '../../protocols/capacity.ts'

export type { NetworkKind, VehicleState }

/** A reading: the state and when it was true (epoch ms on the source's clock). */
export interface StateReading { state: VehicleState, at: number }

export class InvalidStateError extends Error {
  readonly name = 'InvalidStateError'
  readonly code = 'ERR_INVALID_VEHICLE_STATE'
  readonly field: string
  constructor (field: string, problem: string) {
    super(`invalid vehicle state: ${field}: ${problem}`)
    this.field = field
  }
}

const NETWORKS: NetworkKind[] = ['wifi', 'cellular', 'none']

/** Validates a state object (as written by telematics); unknown fields are ignored. */
export function parseVehicleState (v: unknown): VehicleState {
  if (v === null || typeof v !== 'object') throw new InvalidStateError('state', 'must be an object')
  const o = v as Record<string, unknown>
  const bool = (f: string): boolean => {
    if (typeof o[f] !== 'boolean') throw new InvalidStateError(f, 'must be true or false')
    return o[f] as boolean
  }
  const num = (f: string, min: number, max: number): number => {
    const x = o[f]
    if (typeof x !== 'number' || !Number.isFinite(x) || x < min || x > max) throw new InvalidStateError(f, `must be a number in ${min}..${max}`)
    return x
  }
  let next: number | null = null
  if (o.nextDepartureAt !== null && o.nextDepartureAt !== undefined) {
    const d = typeof o.nextDepartureAt === 'string' ? Date.parse(o.nextDepartureAt) : o.nextDepartureAt
    if (typeof d !== 'number' || !Number.isFinite(d)) throw new InvalidStateError('nextDepartureAt', 'must be epoch ms, an ISO date or null')
    next = d
  }
  const network = o.network
  if (!NETWORKS.includes(network as NetworkKind)) throw new InvalidStateError('network', `must be one of ${NETWORKS.join(', ')}`)
  return {
    parked: bool('parked'),
    pluggedIn: bool('pluggedIn'),
    socPct: num('socPct', 0, 100),
    chargerKw: num('chargerKw', 0, 1000),
    computeTempC: num('computeTempC', -60, 200),
    nextDepartureAt: next,
    ownerOptIn: bool('ownerOptIn'),
    network: network as NetworkKind
  }
}

/** A laptop or server: always parked, plugged in and willing. */
export const ALWAYS_ON_STATE: VehicleState = {
  parked: true, pluggedIn: true, socPct: 100, chargerKw: 3, computeTempC: 40, nextDepartureAt: null, ownerOptIn: true, network: 'wifi'
}
