/**
 * A fleet node: a libp2p host with this fleet's membership around it. Every
 * peer (vehicle, client, bootstrap) is built here: the connection gater and
 * the membership proof come first, then every fleet protocol (DHT, gossip,
 * infer, shard, offer) is gated behind proven membership. A node of an open
 * fleet (no credentials, asked for explicitly) has none of that. Either way,
 * each peer may open each protocol's streams only so fast.
 */
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey, StreamMiddleware } from '@libp2p/interface'
import { AUTONAT_PROTOCOL, DCUTR_PROTOCOL, GOSSIP_PROTOCOLS, INFER_COMPRESSED_PROTOCOL, INFER_PROTOCOL, INFER_REUSE_PROTOCOL, OFFER_PROTOCOL, PUNCH_PROTOCOL, RELAY_HOP_PROTOCOL, RESULT_PROTOCOL, RESULT_REUSE_PROTOCOL, RELAY_STOP_PROTOCOL, SHARD_PROTOCOL, checkCellName, enrollProtocol, kadProtocol, memberProtocol } from '../protocols/ids.ts'
import { openCertificate } from '../protocols/membership.ts'
import type { Role } from '../protocols/membership.ts'
import { nodeComponents } from './components.ts'
import type { NodeComponents } from './components.ts'
import { createHost } from './host.ts'
import { fieldSettings } from './network.ts'
import type { Host, HostInit } from './host.ts'
import { CredentialsError } from './membership/credentials.ts'
import type { Credentials } from './membership/credentials.ts'
import { Enroller } from './membership/enrollment.ts'
import { Denylist, Membership } from './membership/membership.ts'
import type { OwnCredentials } from './membership/membership.ts'
import { TopicGuard } from './membership/topics.ts'
import type { FleetMetrics } from './metrics.ts'
import { streamRateLimit } from './peer-limits.ts'
import { RedialBackoff } from './redial-backoff.ts'

export interface NodeInit extends Omit<HostInit, 'privateKey' | 'metricsRegistry' | 'connectionGater' | 'recordTrust' | 'start' | 'fleet'> {
  privateKey: PrivateKey
  metrics: FleetMetrics
  /** This peer's credentials; undefined only for an open fleet. */
  credentials?: Credentials
  /** Where an enrolling vehicle keeps the certificate it gets. */
  credentialsFile?: string
  /** How long a peer has to prove membership after connecting. @default 5000 */
  proofTimeoutMs?: number
  /** Locality cells whose capacity topics this node takes part in. @default [DEFAULT_CELL] */
  cells?: string[]
}

export interface FleetNode {
  host: Host
  components: NodeComponents
  membership?: Membership
  enroller?: Enroller
  topics: TopicGuard
  /** Membership first, then the host, then enrollment and the first proofs. */
  start: () => Promise<void>
  stop: () => Promise<void>
}

/** Fleet protocols and the roles a peer needs for each, inbound and outbound. */
const GATED: Array<[string | ((fleet: string) => string), { inbound?: Role[], outbound?: Role[] }]> = [
  [kadProtocol, {}],
  ...GOSSIP_PROTOCOLS.map(p => [p, {}] as [string, object]),
  [INFER_PROTOCOL, { outbound: ['vehicle'] }],
  [INFER_REUSE_PROTOCOL, { outbound: ['vehicle'] }],
  [INFER_COMPRESSED_PROTOCOL, { outbound: ['vehicle'] }],
  [SHARD_PROTOCOL, {}],
  [OFFER_PROTOCOL, { inbound: ['vehicle'], outbound: ['client', 'publisher'] }],
  [RESULT_PROTOCOL, { inbound: ['vehicle'], outbound: ['client', 'publisher'] }],
  [RESULT_REUSE_PROTOCOL, { inbound: ['vehicle'], outbound: ['client', 'publisher'] }],
  // a relay carries members only, and only a member may ask a node to dial it back or punch a hole
  [RELAY_HOP_PROTOCOL, {}],
  [RELAY_STOP_PROTOCOL, {}],
  [DCUTR_PROTOCOL, {}],
  [PUNCH_PROTOCOL, {}],
  [AUTONAT_PROTOCOL, {}]
]

/**
 * Inbound streams one peer may open per protocol: a rate per second and a
 * burst. Generous for honest use (a busy client, a joining node's DHT
 * walk), so that one peer cannot flood a node with streams.
 */
const STREAM_RATES: Array<[string | ((fleet: string) => string), number, number]> = [
  [kadProtocol, 50, 200],
  ...GOSSIP_PROTOCOLS.map(p => [p, 2, 10] as [string, number, number]),
  [INFER_PROTOCOL, 100, 200],
  [INFER_REUSE_PROTOCOL, 100, 200],
  [INFER_COMPRESSED_PROTOCOL, 100, 200],
  // above the shard byte budget (node/models/shard-exchange.ts) in 1 MiB ranges, which is what limits shard serving
  [SHARD_PROTOCOL, 20, 100],
  [OFFER_PROTOCOL, 20, 50],
  [RESULT_PROTOCOL, 100, 200],
  [RESULT_REUSE_PROTOCOL, 100, 200],
  [memberProtocol, 5, 20],
  [RELAY_HOP_PROTOCOL, 20, 60],
  [RELAY_STOP_PROTOCOL, 20, 60],
  [DCUTR_PROTOCOL, 5, 20],
  [PUNCH_PROTOCOL, 2, 5],
  [AUTONAT_PROTOCOL, 1, 5],
  [enrollProtocol, 1, 5]
]

/**
 * Each protocol's middleware chain: the peer's stream rate first (cheap),
 * then the membership gate where the protocol has one. libp2p's `use`
 * replaces a protocol's chain, so each chain is set once, whole.
 */
function guardStreams (host: Host, fleet: string, metrics: FleetMetrics, gate?: (roles: { inbound?: Role[], outbound?: Role[] }) => StreamMiddleware): void {
  copyMiddlewareChains(host)
  const id = (p: string | ((fleet: string) => string)): string => typeof p === 'string' ? p : p(fleet)
  const chains = new Map<string, StreamMiddleware[]>()
  for (const [protocol, rate, burst] of STREAM_RATES) chains.set(id(protocol), [streamRateLimit(id(protocol), rate, burst, p => { metrics.streamRefused(p) })])
  if (gate !== undefined) for (const [protocol, roles] of GATED) chains.set(id(protocol), [...chains.get(id(protocol)) ?? [], gate(roles)])
  for (const [protocol, chain] of chains) host.use(protocol, chain)
}

/**
 * libp2p 3.3.11 (the newest) appends each inbound stream's handler to the
 * middleware array it keeps for the protocol (connection.js, onIncomingStream),
 * so the chain grows with every stream and outbound streams run old handlers.
 * The registrar hands out a copy here instead.
 */
function copyMiddlewareChains (host: Host): void {
  const registrar = (host as unknown as { components?: { registrar?: { getMiddleware?: (p: string) => unknown[] } } }).components?.registrar
  const get = registrar?.getMiddleware?.bind(registrar)
  if (registrar === undefined || get === undefined) throw new Error('libp2p changed: no registrar.getMiddleware to wrap (see node/node.ts)')
  registrar.getMiddleware = (protocol: string) => [...get(protocol)]
}

export async function createNode (fleetName: string, init: NodeInit): Promise<FleetNode> {
  const cred = init.credentials
  const me = peerIdFromPrivateKey(init.privateKey).toString()
  if (cred !== undefined) {
    if (cred.trust.fleet !== fleetName) throw new CredentialsError(`the credentials are for fleet ${cred.trust.fleet}, not ${fleetName}`)
    if (cred.chain !== undefined && (await openCertificate(cred.chain[0])).cert.peer !== me && cred.grant === undefined) {
      throw new CredentialsError(`the certificate is for another peer, not ${me} (issue one for this peer id)`)
    }
  }
  const denylist = new Denylist()
  // peers that hang up at once are not redialled at once (node/redial-backoff.ts)
  const backoff = new RedialBackoff()
  const { privateKey, metrics, credentials, credentialsFile, proofTimeoutMs, cells, ...hostInit } = init
  const guard = { fleet: fleetName, ...(cells !== undefined ? { cells: cells.map(checkCellName) } : {}) }
  const host = await createHost({
    // behind NAT, on a LAN or on one machine: what the bootstrap addresses say (node/network.ts)
    ...fieldSettings(init.bootstrap ?? []),
    ...hostInit,
    fleet: fleetName,
    privateKey,
    metricsRegistry: metrics.registry,
    start: false,
    connectionGater: backoff.gater(cred !== undefined ? denylist.gater() : {}),
    ...(cred !== undefined ? { recordTrust: { trust: cred.trust, revoked: (p: string) => denylist.revoked.has(p) } } : {})
  })
  backoff.watch(host)
  const components = nodeComponents(host, privateKey, metrics)
  if (cred === undefined) {
    guardStreams(host, fleetName, metrics)
    const topics = new TopicGuard(components, guard)
    return { host, components, topics, start: async () => { topics.start(); await host.start() }, stop: async () => { topics.stop(); await host.stop() } }
  }
  const leaf = cred.chain !== undefined ? (await openCertificate(cred.chain[0])).cert : undefined
  const usable = leaf?.peer === me ? cred.chain : undefined
  // vehicles enroll with a grant, and renew their certificate from a bootstrap peer before it expires
  const renews = leaf?.roles.includes('vehicle') === true && (init.bootstrap ?? []).length > 0
  const enroller = usable === undefined || cred.grant !== undefined || renews
    ? new Enroller({ ...components, dialer: host }, { trust: cred.trust, credentials: { ...cred, ...(usable !== undefined ? { chain: usable } : {}) }, issuers: init.bootstrap ?? [], file: credentialsFile ?? '' })
    : undefined
  const own: OwnCredentials = enroller ?? { chain: () => usable }
  const membership = new Membership({ ...components, connections: host }, {
    trust: cred.trust,
    own,
    denylist,
    ...(proofTimeoutMs !== undefined ? { proofTimeoutMs } : {})
  })
  components.membership = membership
  components.credentials = own
  const topics = new TopicGuard(components, guard)
  guardStreams(host, fleetName, metrics, roles => membership.gate(roles))
  if (enroller !== undefined && usable === undefined && cred.grant === undefined) throw new CredentialsError('the credentials hold neither a certificate for this peer nor an enrollment grant')
  enroller?.addEventListener('enrolled', () => { void membership.proveAll() })
  return {
    host,
    components,
    membership,
    topics,
    ...(enroller !== undefined ? { enroller } : {}),
    async start () {
      await membership.start()
      topics.start()
      await host.start()
      membership.afterStart()
      await enroller?.start()
    },
    async stop () {
      enroller?.stop()
      topics.stop()
      await membership.stop()
      await host.stop()
    }
  }
}
