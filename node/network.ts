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
 * The DHT's upkeep, which at a million cars is most of what an idle car's
 * DHT costs (README, "A million cars"): each of these starts a walk of
 * about 20 to 35 queries whose answers carry 20 peers each, and in a large
 * fleet nearly every query opens a connection (Noise, identify and the
 * membership proof: about 2.4 KB each way).
 *
 * TABLE_REFRESH_MS: how often the routing table is refreshed, a walk towards
 * a random key of each bucket (about log2 N of them, at most 16).
 * @libp2p/kad-dht 16.4.5 does it every 5 minutes with no option; node/host.ts
 * sets it. Parked cars churn slowly, and connections, lookups and the
 * queries a car answers keep the table filled between refreshes.
 */
export const TABLE_REFRESH_MS = 6 * 60 * 60_000
/** How often the DHT looks up the node's own id to keep its closest neighbours known (@libp2p/kad-dht: 5 minutes). */
export const SELF_QUERY_MS = 60 * 60_000
/**
 * How a DHT walk fans out: queries in flight (alpha) and disjoint paths.
 * Classic Kademlia's 3 and 1 query about K peers plus one per doubling of
 * the fleet; @libp2p/kad-dht's defaults (10 and 10, S/Kademlia's disjoint
 * paths against peers that lie about the table, which a fleet's membership
 * gate keeps out) queried 31 peers per walk at 100 nodes already, against
 * 22 (bench/dht-walk.ts).
 */
export const DHT_WALK = { alpha: 3, disjointPaths: 1 }
/**
 * How often libp2p's connection monitor pings each connection (from both
 * ends) to measure its round trip and to close it if the peer is gone. Each
 * ping is a stream of its own: multistream-select, yamux and Noise frames
 * cost about 400 B each way on top of the 32 B ping (README, "A million
 * cars"); the link meter reads the round trip it measures.
 */
export const CONNECTION_PING_MS = 5 * 60_000
/**
 * How often yamux pings each connection (one 12-byte frame and its answer):
 * keeps NAT and firewall mappings of idle connections warm between the
 * connection monitor's pings, for about 1 B/s each way.
 */
export const MUXER_KEEPALIVE_MS = 60_000

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
