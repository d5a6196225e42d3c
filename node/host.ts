/**
 * The one place that builds a libp2p node: TCP + Noise + Yamux, identify,
 * ping, a fleet-specific Kademlia DHT, gossipsub and Prometheus metrics, and
 * for networks in the field circuit relay v2 (a client everywhere, a server
 * on bootstrap peers), DCUtR hole punching, AutoNAT, UPnP and mDNS.
 * Vehicles, clients and the bootstrap peer all call `createHost`; only their
 * options differ.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap as bootstrapDiscovery } from '@libp2p/bootstrap'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { gossipsub } from '@libp2p/gossipsub'
import { autoNAT } from '@libp2p/autonat'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { dcutr } from '@libp2p/dcutr'
import { identify } from '@libp2p/identify'
import { mdns } from '@libp2p/mdns'
import { uPnPNAT } from '@libp2p/upnp-nat'
import { kadDHT, passthroughMapper, removePrivateAddressesMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { FLEET_GOSSIP, fastMessageId, fleetScoring } from './membership/scoring.ts'
import { prometheusMetrics } from '@libp2p/prometheus-metrics'
import { tcp } from '@libp2p/tcp'
import { isLoopback, repeatingTask } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Identify } from '@libp2p/identify'
import type { KadDHT } from '@libp2p/kad-dht'
import type { Ping } from '@libp2p/ping'
import type { ComponentLogger, ConnectionGater, Libp2p, PrivateKey, ServiceMap } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Registry } from 'prom-client'
import { DEFAULT_FLEET, checkFleetName, kadProtocol } from '../protocols/ids.ts'
import { MAX_INFER_FRAME_BYTES, MiB, second } from '../protocols/limits.ts'
import { recordSelectors, recordValidators } from './membership/records.ts'
import type { RecordTrust } from './membership/records.ts'
import { growingWindows } from './yamux-windows.ts'
import { nativeTls } from './native-tls.ts'
import { CONNECTION_PING_MS, DHT_WALK, MUXER_KEEPALIVE_MS, SELF_QUERY_MS, TABLE_REFRESH_MS } from './network.ts'
import { holePunch } from './hole-punch.ts'
import type { HolePunchInit } from './hole-punch.ts'

export type HostServices = {
  identify: Identify
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
} & ServiceMap

/**
 * What a relay carries for members. Control traffic always fits; activations
 * and shards only within these limits (a relayed connection that reaches one
 * is closed and dialled again).
 */
export interface RelayLimits {
  /** Reservations held at once. @default 128 */
  maxReservations?: number
  /** Longest life of one relayed connection, ms. @default 600000 */
  durationMs?: number
  /** Most bytes one relayed connection carries (each way). @default 256 MiB */
  dataBytes?: number
}

export const DEFAULT_RELAY_LIMITS: Required<RelayLimits> = { maxReservations: 128, durationMs: 600_000, dataBytes: 256 * MiB }
export type Host = Libp2p<HostServices>

export interface HostInit {
  /** Node identity. @default a fresh Ed25519 key */
  privateKey?: PrivateKey
  /** Listen addresses. @default ['/ip4/127.0.0.1/tcp/0'] */
  listen?: string[]
  /** Bootstrap peer multiaddrs (with /p2p/<id>). @default [] */
  bootstrap?: string[]
  /** Fleet name: DHT protocol and topics are per fleet. @default 'dev' */
  fleet?: string
  /**
   * Answer DHT queries: always (bootstrap peers, a fleet on one machine or
   * LAN), never, or `auto`: only while the node has a public address others
   * can dial (verified by AutoNAT, mapped by UPnP). @default true
   */
  dhtServer?: boolean | 'auto'
  /** Hold circuit relay reservations, so that peers can reach this one behind NAT through a relay. @default false */
  relayReservations?: boolean
  /** Relay for other members (bootstrap and public peers), within these limits; absent: no relay service. */
  relayServer?: RelayLimits
  /** Find peers on the local network with multicast DNS (cars parked together). @default false */
  mdns?: boolean
  /** TCP hole punching between members whose only connection is relayed (node/hole-punch.ts). @default public addresses only */
  holePunch?: HolePunchInit
  /** Ask the home router for a port mapping (UPnP IGD). @default false */
  upnp?: boolean
  /** Announce loopback addresses (one machine); off in the field. @default true */
  announceLoopback?: boolean
  /** Which of its addresses the node announces (overrides `announceLoopback`; tests that hide direct addresses). */
  announceFilter?: (addrs: Multiaddr[]) => Multiaddr[]
  /** Connections held at once; past it libp2p closes the least valuable. @default libp2p's 300 */
  maxConnections?: number
  /** New inbound connections accepted per second from one IP address. @default 100 */
  inboundConnectionsPerSecond?: number
  /**
   * Keep private and loopback addresses in DHT peer records. Needed on one
   * machine or a LAN; turn off on the open internet. @default true
   */
  privateAddresses?: boolean
  /** Where libp2p's own metrics (transport, DHT, gossip) are registered; none when absent. */
  metricsRegistry?: Registry
  /** Start the node at once (else the caller calls `start()`). @default true */
  start?: boolean
  /** Refuses peers before and after encryption (members only: see node/membership/). */
  connectionGater?: ConnectionGater
  /** DHT records must carry certificate chains of this fleet. @default none (an open fleet) */
  recordTrust?: RecordTrust
  /**
   * Connection encryption offered, in order of preference. 'tls' is libp2p's
   * TLS 1.3 run on the TCP socket itself (node/native-tls.ts): it moves
   * about 1.6x Noise's bytes per second for the same handshake CPU
   * (bench/transport.ts), so it comes first; Noise is accepted from peers
   * that prefer it. 'tls-duplex' is the same protocol through @libp2p/tls's
   * JavaScript duplex, kept for bench/transport.ts to compare.
   * @default ['tls', 'noise']
   */
  encryption?: Array<'tls' | 'noise' | 'tls-duplex'>
  /** How a DHT walk fans out (bench/dht-walk.ts compares). @default DHT_WALK (node/network.ts) */
  dhtWalk?: { alpha: number, disjointPaths: number }
}

/**
 * Yamux windows. Every stream starts with the spec's 256 KiB of credit (yamux
 * does not negotiate it); each side then raises its own receive window to
 * STREAM_WINDOW with an ordinary window update as the stream opens, so a 1 MB
 * activation needs no window round trips, with peers built by anyone.
 */
export const STREAM_WINDOW = 4 * MiB
const MAX_STREAM_WINDOW = 16 * MiB

/** How often a peer with no connections dials its bootstrap peers again. */
export const REJOIN_INTERVAL_MS = 2 * second

function encrypter (e: 'tls' | 'noise' | 'tls-duplex'): ReturnType<typeof noise> | ReturnType<typeof nativeTls> {
  return e === 'noise' ? noise() : nativeTls({ duplexOnly: e === 'tls-duplex' })
}

export async function createHost (init: HostInit = {}): Promise<Host> {
  const fleet = checkFleetName(init.fleet ?? DEFAULT_FLEET)
  const bootstrapList = init.bootstrap ?? []
  const host = await createLibp2p({
    start: init.start ?? true,
    ...(init.connectionGater !== undefined ? { connectionGater: init.connectionGater } : {}),
    ...(init.privateKey !== undefined ? { privateKey: init.privateKey } : {}),
    addresses: {
      // '/p2p-circuit': find relays among connected peers and hold reservations on them
      listen: [...(init.listen ?? ['/ip4/127.0.0.1/tcp/0']), ...(init.relayReservations === true ? ['/p2p-circuit'] : [])],
      ...(init.announceFilter !== undefined ? { announceFilter: init.announceFilter } : init.announceLoopback === false ? { announceFilter: withoutLoopback } : {})
    },
    // libp2p pings every connection to measure its round trip (connection.rtt, which the link meter reads)
    // and to close it when the peer is gone: every 5 minutes, not 10 s, since each ping is a stream of its own
    // and idle links are what a car's control traffic is made of (README, "A million cars"); yamux's cheap
    // pings (below) keep NAT mappings warm in between
    connectionMonitor: { pingInterval: CONNECTION_PING_MS },
    connectionManager: {
      // many vehicles share one address (one test machine, or a carrier-grade NAT):
      // libp2p's default of 5 new connections per second per host turned joiners away
      inboundConnectionThreshold: init.inboundConnectionsPerSecond ?? 100,
      maxIncomingPendingConnections: 64,
      ...(init.maxConnections !== undefined ? { maxConnections: init.maxConnections } : {})
    },
    transports: [tcp(), circuitRelayTransport()],
    connectionEncrypters: (init.encryption ?? ['tls', 'noise']).map(encrypter),
    streamMuxers: [growingWindows(yamux({
      // a 12-byte ping frame each minute keeps an idle connection's NAT mapping warm
      enableKeepAlive: true,
      keepAliveInterval: MUXER_KEEPALIVE_MS,
      streamOptions: { maxStreamWindowSize: MAX_STREAM_WINDOW, maxReadBufferLength: MAX_INFER_FRAME_BYTES + MiB }
    }), STREAM_WINDOW)],
    peerDiscovery: [
      ...(bootstrapList.length > 0 ? [bootstrapDiscovery({ list: bootstrapList, timeout: 0 })] : []),
      ...(init.mdns === true ? [mdns({ serviceTag: `_fleetmesh-${fleet}._udp.local`, interval: 5000 })] : [])
    ],
    // the process's own metrics (event loop lag, GC) start with the first scrape (node/metrics.ts `render`)
    ...(init.metricsRegistry !== undefined ? { metrics: prometheusMetrics({ registry: init.metricsRegistry, collectDefaultMetrics: false }) } : {}),
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: kadProtocol(fleet),
        // undefined: libp2p's own switch, a server only while a public address is verified
        ...((init.dhtServer ?? true) === 'auto' ? {} : { clientMode: init.dhtServer === false }),
        peerInfoMapper: (init.privateAddresses ?? true) ? passthroughMapper : removePrivateAddressesMapper,
        initialQuerySelfInterval: 500,
        querySelfInterval: SELF_QUERY_MS,
        ...(init.dhtWalk ?? DHT_WALK),
        validators: recordValidators(init.recordTrust),
        selectors: recordSelectors
      }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        // gossip also flows over relayed connections (a car behind NAT)
        runOnLimitedConnection: true,
        // later copies of a message are dropped before their signature is checked again
        fastMsgIdFn: fastMessageId,
        ...FLEET_GOSSIP,
        ...fleetScoring(fleet)
      }),
      autonat: autoNAT(),
      dcutr: dcutr(),
      // DCUtR dials only confirmed public addresses, which a car behind NAT lacks: punch with predicted ports too
      punch: holePunch(init.holePunch),
      ...(init.upnp === true ? { upnp: uPnPNAT() } : {}),
      ...(init.relayServer !== undefined ? { relay: relayServer(init.relayServer) } : {})
    }
  })
  if (bootstrapList.length > 0) keepJoined(host, bootstrapList)
  slowTableRefresh(host)
  return host
}

/** The DHT's routing-table refresh every TABLE_REFRESH_MS (node/network.ts): @libp2p/kad-dht 16.4.5 has no option for it. */
function slowTableRefresh (host: Host): void {
  const refresh = (host.services.dht as unknown as { routingTableRefresh?: { refreshInterval?: number } }).routingTableRefresh
  if (refresh?.refreshInterval === undefined) throw new Error('@libp2p/kad-dht changed: no routingTableRefresh.refreshInterval to set (see node/host.ts)')
  refresh.refreshInterval = TABLE_REFRESH_MS
}

function relayServer (limits: RelayLimits): ReturnType<typeof circuitRelayServer> {
  const l = { ...DEFAULT_RELAY_LIMITS, ...limits }
  return circuitRelayServer({
    reservations: {
      maxReservations: l.maxReservations,
      applyDefaultLimit: true,
      defaultDurationLimit: l.durationMs,
      defaultDataLimit: BigInt(l.dataBytes)
    }
  })
}

/** Addresses others can use: everything but loopback (relayed addresses through a loopback relay go too). */
export function withoutLoopback (addrs: Multiaddr[]): Multiaddr[] {
  return addrs.filter(a => !isLoopback(a))
}

/**
 * Bootstrap discovery dials once; a refused or lost connection would leave a
 * peer alone for good. While a peer has no connections, dial the bootstrap
 * peers again every REJOIN_INTERVAL_MS.
 */
function keepJoined (host: Host, bootstrap: string[]): void {
  const task = repeatingTask(async (opts) => {
    if (host.status !== 'started' || host.getConnections().length > 0) return
    await Promise.all(bootstrap.map(async a => { await host.dial(multiaddr(a), opts).catch(() => {}) }))
  }, REJOIN_INTERVAL_MS, { timeout: REJOIN_INTERVAL_MS })
  task.start()
  host.addEventListener('stop', () => { task.stop() }, { once: true })
}

/** Loads a private key from `path`, creating (and saving, mode 0600) one if absent. */
export async function loadOrCreateKey (path: string): Promise<PrivateKey> {
  try {
    const bytes = await readFile(path)
    try { return privateKeyFromProtobuf(bytes) } catch (err) {
      throw new Error(`key file ${path} is not a libp2p private key: ${(err as Error).message}`)
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const key = await generateKeyPair('Ed25519')
  await mkdir(dirname(path), { recursive: true })
  await writeFile(path, privateKeyToProtobuf(key), { mode: 0o600 })
  return key
}

/** Multiaddrs with the /p2p suffix, as strings. */
export function hostAddrs (host: Pick<Host, 'getMultiaddrs'>): string[] {
  return host.getMultiaddrs().map(a => a.toString())
}

/** Addresses without the /p2p suffix (for others to dial us by peer id plus hints). */
export function dialableAddrs (host: Pick<Host, 'getMultiaddrs'>): string[] {
  return hostAddrs(host).map(a => a.replace(/\/p2p\/[^/]+$/, ''))
}

export type { ComponentLogger }
