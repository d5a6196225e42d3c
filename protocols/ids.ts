/**
 * Protocol ids, topic names, DHT record namespaces and signing domains. DHT
 * and gossip names are per fleet so two fleets never mix; stream protocols
 * are shared (peers only dial peers they found through their own fleet).
 * A breaking change to a wire format gets a new id here (`/2.0.0`, `/2`).
 */
import type { RecordKind } from './envelope.ts'

export const DEFAULT_FLEET = 'dev'

export const INFER_PROTOCOL = '/fleetmesh/infer/2.0.0'
/** The same frames on a stream that carries jobs one after another: after its answer it takes the caller's next request. */
export const INFER_REUSE_PROTOCOL = '/fleetmesh/infer/2.1.0'
/** The same kept stream, whose requests may carry tensors compressed (TENSOR_ENCODING_ZSTD, protocols/compression.ts). */
export const INFER_COMPRESSED_PROTOCOL = '/fleetmesh/infer/2.2.0'
/** The infer protocols a caller offers, the one it prefers first. */
export const INFER_PROTOCOLS = [INFER_COMPRESSED_PROTOCOL, INFER_REUSE_PROTOCOL, INFER_PROTOCOL]
/** Whether an infer stream of this protocol takes the caller's next request after its answer. */
export function keptInfer (protocol: string | undefined): boolean { return protocol === INFER_REUSE_PROTOCOL || protocol === INFER_COMPRESSED_PROTOCOL }
/** Whether the peer on an infer stream of this protocol reads compressed tensors. */
export function readsCompressed (protocol: string | undefined): boolean { return protocol === INFER_COMPRESSED_PROTOCOL }
export const SHARD_PROTOCOL = '/fleetmesh/shard/2.0.0'
export const OFFER_PROTOCOL = '/fleetmesh/offer/2.0.0'
/** Direct return: the last hop sends a job's result frame straight to the client. */
export const RESULT_PROTOCOL = '/fleetmesh/result/1.0.0'
/** Direct return on a kept stream: result frames one after another, each of another job. */
export const RESULT_REUSE_PROTOCOL = '/fleetmesh/result/1.1.0'

/** libp2p's NAT traversal protocols, which fleetmesh gates to members: circuit relay v2 (hop, stop), DCUtR, AutoNAT. */
export const RELAY_HOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/hop'
export const RELAY_STOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/stop'
export const DCUTR_PROTOCOL = '/libp2p/dcutr'
export const AUTONAT_PROTOCOL = '/libp2p/autonat/1.0.0'
/** fleetmesh's TCP hole punching with predicted ports (node/hole-punch.ts), beside DCUtR. */
export const PUNCH_PROTOCOL = '/fleetmesh/punch/1.0.0'

export function kadProtocol (fleet: string): string { return `/fleetmesh/${fleet}/kad/1.0.0` }
/**
 * The fleet a peer's protocols (as identify lists them) say it is in, and
 * whether that fleet takes members only (it speaks a membership protocol),
 * or undefined for a peer that speaks no fleet's.
 */
export function fleetOfProtocols (protocols: string[]): { fleet: string, membersOnly: boolean } | undefined {
  const spoken = protocols.map(p => /^\/fleetmesh\/([^/]+)\/(member|kad)\//.exec(p)).filter(m => m !== null)
  const members = spoken.find(m => m[2] === 'member') ?? spoken[0]
  return members !== undefined ? { fleet: members[1], membersOnly: members[2] === 'member' } : undefined
}
/** gossipsub's stream protocols (fleet topics travel on them). */
export const GOSSIP_PROTOCOLS = ['/meshsub/1.2.0', '/meshsub/1.1.0', '/meshsub/1.0.0', '/floodsub/1.0.0']
export function jobsTopic (fleet: string): string { return `/fleetmesh/${fleet}/jobs/2` }
/**
 * Capacity heartbeats travel inside locality cells (a depot, a garage, a
 * coarse geohash: where a car is parked), one topic per cell, so what a car
 * hears grows with its cell, not with the fleet (README, "A million cars").
 */
export function capacityTopic (fleet: string, cell: string = DEFAULT_CELL): string { return `/fleetmesh/${fleet}/capacity/${cell}/3` }

/** The cell of a node that names none: a fleet on one machine or one site is one cell. */
export const DEFAULT_CELL = 'default'
const CELL_RE = /^[a-z0-9][a-z0-9.-]{0,31}$/
export function checkCellName (cell: string): string {
  if (!CELL_RE.test(cell)) throw new TypeError(`invalid cell name "${cell}": use 1-32 of a-z, 0-9, . and - (e.g. a region or a geohash like u33db)`)
  return cell
}

/** DHT key namespaces: `/fmcap/<peer id>` and `/fmmodel/<name>`. */
export const CAPACITY_RECORD_NAMESPACE = 'fmcap'
export const MODEL_RECORD_NAMESPACE = 'fmmodel'

/** Signed record kinds (see envelope.ts). */
export const CAPACITY_RECORD: RecordKind = { domain: 'fleetmesh-capacity-record', payloadType: '/fleetmesh/capacity-record/1' }
export const MODEL_RECORD: RecordKind = { domain: 'fleetmesh-model-record', payloadType: '/fleetmesh/model-record/1' }

const FLEET_RE = /^[a-z0-9][a-z0-9-]{0,31}$/
export function checkFleetName (fleet: string): string {
  if (!FLEET_RE.test(fleet)) throw new TypeError(`invalid fleet name "${fleet}": use 1-32 of a-z, 0-9 and -`)
  return fleet
}

/** Membership proof, right after connecting (not gated: it is how a peer gets in). */
export function memberProtocol (fleet: string): string { return `/fleetmesh/${fleet}/member/1.0.0` }
/** Enrollment: a provisioned vehicle gets its certificate from an issuer (not gated). */
export function enrollProtocol (fleet: string): string { return `/fleetmesh/${fleet}/enroll/1.0.0` }
/** Revocation lists, signed by the fleet authority. */
export function revocationsTopic (fleet: string): string { return `/fleetmesh/${fleet}/revocations/1` }
