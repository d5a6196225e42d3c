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
import { multiaddr } from '@multiformats/multiaddr'
import type { HostInit } from './host.ts'

export type Reach = 'loopback' | 'lan' | 'internet'

/** Defaults for `node` and `bootstrap`: every interface, IPv4 and IPv6. */
export const LISTEN_ALL = ['/ip4/0.0.0.0/tcp/0', '/ip6/::/tcp/0']

const LOOPBACK_V4 = /^127\./
const PRIVATE_V4 = /^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|169\.254\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)/

/** What kind of address a multiaddr's host is (a DNS name counts as the internet). */
export function addressReach (addr: string): Reach {
  const c = multiaddr(addr).getComponents()[0]
  if (c === undefined) throw new TypeError(`${addr} has no address`)
  if (c.name === 'ip4') return LOOPBACK_V4.test(c.value ?? '') ? 'loopback' : PRIVATE_V4.test(c.value ?? '') || c.value === '0.0.0.0' ? 'lan' : 'internet'
  if (c.name === 'ip6') {
    const v = (c.value ?? '').toLowerCase()
    if (v === '::1') return 'loopback'
    return /^(f[cd]|fe80)/.test(v) || v === '::' ? 'lan' : 'internet'
  }
  return 'internet'
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
