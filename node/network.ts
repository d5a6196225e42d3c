/**
 * Where a node runs, and what it needs there. The bootstrap addresses a node
 * is given say which network its fleet lives on:
 *
 * - `loopback`: one machine (the swarm, tests). Everything as it was: loopback
 *   addresses announced, every node a DHT server, no relay, no multicast.
 * - `lan`: private addresses (a depot, an office). Private addresses are
 *   what peers use; mDNS finds cars parked together.
 * - `internet`: a public bootstrap. A car is probably behind NAT (a home
 *   router, carrier-grade NAT on cellular), so it holds a reservation on a
 *   relay (the bootstrap peers relay for members), upgrades relayed
 *   connections with DCUtR where the NAT allows, answers DHT queries only
 *   while AutoNAT or UPnP says others can dial it, keeps loopback and private
 *   addresses off the DHT, and finds cars in the same depot with mDNS.
 */
import { isLoopback, isPrivate } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { HostInit } from './host.ts'

export type Reach = 'loopback' | 'lan' | 'internet'

/** Connections a vehicle holds at once: its cell's gossip mesh, DHT contacts, clients and pipeline neighbours. */
export const VEHICLE_MAX_CONNECTIONS = 64
/**
 * How often the DHT walks towards a random key of each bucket (about log2 N
 * of them) to refresh its routing table. @libp2p/kad-dht 16.4.5 does it every
 * 5 minutes with no option; node/host.ts sets it. Parked cars churn slowly,
 * and connections and lookups keep the table filled between refreshes.
 */
export const TABLE_REFRESH_MS = 30 * 60_000

/** Defaults for `node` and `bootstrap`: every interface, IPv4 and IPv6. */
export const LISTEN_ALL = ['/ip4/0.0.0.0/tcp/0', '/ip6/::/tcp/0']

/**
 * What kind of address a multiaddr's host is, by libp2p's own rules (the
 * ones its DHT and address manager use): loopback, private (RFC 1918, CGNAT,
 * link-local, unique local, documentation ranges, the wildcard) or the
 * internet (a DNS name included).
 */
export function addressReach (addr: string): Reach {
  const ma = multiaddr(addr)
  return isLoopback(ma) ? 'loopback' : isPrivate(ma) ? 'lan' : 'internet'
}

/** The widest reach among `addrs` (a fleet with one public bootstrap peer is on the internet). */
export function fleetReach (addrs: string[]): Reach {
  const order: Reach[] = ['loopback', 'lan', 'internet']
  return addrs.reduce<Reach>((r, a) => order.indexOf(addressReach(a)) > order.indexOf(r) ? addressReach(a) : r, 'loopback')
}

/**
 * Host settings for a node whose bootstrap peers (or, for a bootstrap peer,
 * whose own listen addresses) are `addrs`. Explicit settings override these.
 */
export function fieldSettings (addrs: string[]): Pick<HostInit, 'relayReservations' | 'dhtServer' | 'privateAddresses' | 'announceLoopback' | 'mdns'> {
  const reach = fleetReach(addrs)
  if (reach === 'loopback') return {}
  return {
    announceLoopback: false,
    mdns: true,
    ...(reach === 'internet' ? { relayReservations: true, dhtServer: 'auto', privateAddresses: false } : {})
  }
}
