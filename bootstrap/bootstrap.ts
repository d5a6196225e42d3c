/**
 * The bootstrap peer: a DHT server with a stable identity that new peers dial
 * first. It relays the fleet's gossip topics, and relays connections to
 * members behind NAT (circuit relay v2, members only, within limits); it
 * schedules nothing. With a
 * delegated issuer certificate (`may_issue`), it also issues certificates to
 * vehicles that enroll with a grant, and renews members' certificates; it
 * never holds the authority key.
 */
import { start } from '@libp2p/interface'
import { FleetMetrics } from '../node/metrics.ts'
import { hostAddrs, loadOrCreateKey } from '../node/host.ts'
import type { Host, RelayLimits } from '../node/host.ts'
import { addressReach, fleetReach } from '../node/network.ts'
import type { Multiaddr } from '@multiformats/multiaddr'
import { Issuer } from '../node/membership/credentials.ts'
import type { Credentials } from '../node/membership/credentials.ts'
import { IssuerService } from '../node/membership/enrollment.ts'
import { createNode } from '../node/node.ts'
import type { FleetNode } from '../node/node.ts'
import { DEFAULT_CELL, DEFAULT_FLEET, capacityTopic, jobsTopic } from '../protocols/ids.ts'
import { openCertificate } from '../protocols/membership.ts'

export interface BootstrapInit {
  /** Identity key file; created on first start. */
  keyFile: string
  /** @default DEFAULT_BOOTSTRAP_LISTEN */
  listen?: string[]
  /** @default 'dev' */
  fleet?: string
  /** Other bootstrap peers to join. @default [] */
  peers?: string[]
  /** Its certificate (role bootstrap, perhaps may-issue vehicle); undefined only for an open fleet. */
  credentials?: Credentials
  /** What it relays for members behind NAT (circuit relay v2). @default DEFAULT_RELAY_LIMITS */
  relay?: RelayLimits
  /** Locality cells whose capacity gossip it carries. @default [DEFAULT_CELL] */
  cells?: string[]
}

/** Every interface, IPv4 and IPv6, on the well-known port. */
export const DEFAULT_BOOTSTRAP_LISTEN = ['/ip4/0.0.0.0/tcp/4001', '/ip6/::/tcp/4001']

export interface Bootstrap { host: Host, node: FleetNode, addrs: string[], issuer?: IssuerService, stop: () => Promise<void> }

export async function startBootstrap (init: BootstrapInit): Promise<Bootstrap> {
  const fleet = init.fleet ?? DEFAULT_FLEET
  const privateKey = await loadOrCreateKey(init.keyFile)
  const listen = init.listen ?? DEFAULT_BOOTSTRAP_LISTEN
  const cells = init.cells ?? [DEFAULT_CELL]
  const node = await createNode(fleet, {
    cells,
    privateKey,
    metrics: new FleetMetrics(),
    listen,
    bootstrap: init.peers ?? [],
    dhtServer: true,
    relayServer: init.relay ?? {},
    // loopback addresses are announced only by a bootstrap peer that listens on nothing else
    announceLoopback: fleetReach(listen) === 'loopback',
    mdns: false,
    relayReservations: false,
    ...(init.credentials !== undefined ? { credentials: init.credentials } : {})
  })
  let issuer: IssuerService | undefined
  const chain = init.credentials?.chain
  if (chain !== undefined && node.membership !== undefined) {
    const { cert } = await openCertificate(chain[0])
    if (cert.mayIssue.length > 0) issuer = new IssuerService({ ...node.components, membership: node.membership }, { issuer: new Issuer(privateKey, fleet, chain), mayIssue: cert.mayIssue })
  }
  await node.start()
  trustOwnAddresses(node.host)
  if (issuer !== undefined) await start(issuer)
  // members of the topic meshes, so gossip flows between peers that only know us
  // it carries the gossip of the cells it is told to (on one machine or one site: the one default cell)
  for (const cell of cells) node.host.services.pubsub.subscribe(capacityTopic(fleet, cell))
  node.host.services.pubsub.subscribe(jobsTopic(fleet))
  return {
    host: node.host,
    node,
    addrs: hostAddrs(node.host),
    ...(issuer !== undefined ? { issuer } : {}),
    async stop () {
      await issuer?.stop()
      await node.stop()
    }
  }
}

/**
 * A bootstrap peer is run on an address others can dial (that is its job),
 * so its public listen addresses are announced at once instead of waiting
 * for AutoNAT dial-backs from peers that have not joined yet. AutoNAT still
 * withdraws one that turns out not to be reachable.
 */
function trustOwnAddresses (host: Host): void {
  const components = (host as unknown as { components: { transportManager: { getAddrs: () => Multiaddr[] }, addressManager: { confirmObservedAddr: (a: Multiaddr, o: { type: 'transport', ttl: number }) => void } } }).components
  for (const addr of components.transportManager.getAddrs()) {
    if (addressReach(addr.toString()) === 'internet') components.addressManager.confirmObservedAddr(addr, { type: 'transport', ttl: 24 * 3_600_000 })
  }
}
