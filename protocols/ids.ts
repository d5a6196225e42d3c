/**
 * Protocol ids and topic names. DHT and gossip names are per fleet so two
 * fleets never mix; stream protocols are shared (peers only dial peers they
 * found through their own fleet's DHT).
 */
export const DEFAULT_FLEET = 'dev'

export const INFER_PROTOCOL = '/fleetmesh/infer/1.0.0'
export const SHARD_PROTOCOL = '/fleetmesh/shard/1.0.0'
export const OFFER_PROTOCOL = '/fleetmesh/offer/1.0.0'

export function kadProtocol (fleet: string): string { return `/fleetmesh/${fleet}/kad/1.0.0` }
export function jobsTopic (fleet: string): string { return `/fleetmesh/${fleet}/jobs/1` }
export function capacityTopic (fleet: string): string { return `/fleetmesh/${fleet}/capacity/1` }

const FLEET_RE = /^[a-z0-9][a-z0-9-]{0,31}$/
export function checkFleetName (fleet: string): string {
  if (!FLEET_RE.test(fleet)) throw new TypeError(`invalid fleet name "${fleet}": use 1-32 of a-z, 0-9 and -`)
  return fleet
}
