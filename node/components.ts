/**
 * The parts of a node that fleetmesh's components may use. Each component
 * declares the few it needs (`Pick` of these) and gets them in its
 * constructor, js-libp2p style: `new X(components, init)`.
 */
import type { GossipSub } from '@libp2p/gossipsub'
import type { ComponentLogger, ContentRouting, Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import { PeerDialer } from './dial.ts'
import type { Host } from './host.ts'
import type { Membership, OwnCredentials } from './membership/membership.ts'
import type { FleetMetrics } from './metrics.ts'

export interface NodeComponents {
  peerId: PeerId
  privateKey: PrivateKey
  logger: ComponentLogger
  /** Registers and removes protocol handlers. */
  registrar: Pick<Libp2p, 'handle' | 'unhandle'>
  /** Opens streams to peers (with address hints). */
  dialer: PeerDialer
  pubsub: GossipSub
  contentRouting: ContentRouting
  /** This node's own addresses. */
  addresses: Pick<Libp2p, 'getMultiaddrs'>
  metrics: FleetMetrics
  /** Who proved fleet membership, with which roles (absent in an open fleet). */
  membership?: Membership
  /** This node's own certificate chain, to attach to what it publishes (absent in an open fleet). */
  credentials?: OwnCredentials
}

export function nodeComponents (host: Host, privateKey: PrivateKey, metrics: FleetMetrics): NodeComponents {
  return {
    peerId: host.peerId,
    privateKey,
    logger: host.logger,
    registrar: host,
    dialer: new PeerDialer(host),
    pubsub: host.services.pubsub,
    contentRouting: host.contentRouting,
    addresses: host,
    metrics
  }
}
