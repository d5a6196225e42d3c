/**
 * The one place that builds a libp2p node: TCP + Noise + Yamux, identify,
 * ping, a fleet-specific Kademlia DHT and gossipsub. Vehicles, clients and the
 * bootstrap peer all call `createHost`; only their options differ.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap as bootstrapDiscovery } from '@libp2p/bootstrap'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper, removePrivateAddressesMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { multiaddr } from '@multiformats/multiaddr'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Identify } from '@libp2p/identify'
import type { KadDHT } from '@libp2p/kad-dht'
import type { Ping } from '@libp2p/ping'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { DEFAULT_FLEET, checkFleetName, kadProtocol } from '../protocols/ids.ts'
import { MAX_INFER_FRAME_BYTES, MiB } from '../protocols/limits.ts'
import { CAPACITY_RECORD_NAMESPACE, decodeCapacityRecord } from '../protocols/capacity.ts'
import type { RecordVerifier } from '../protocols/capacity.ts'
import { MODEL_RECORD_NAMESPACE, decodeModelRecord } from '../protocols/jobs.ts'
import { peerIdFromString } from '@libp2p/peer-id'

export type HostServices = {
  identify: Identify
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
}
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
  /** Answer DHT queries (bootstrap peers and reachable nodes). @default true */
  dhtServer?: boolean
  /** New inbound connections accepted per second from one IP address. @default 100 */
  inboundConnectionsPerSecond?: number
  /**
   * Keep private and loopback addresses in DHT peer records. Needed on one
   * machine or a LAN; turn off on the open internet. @default true
   */
  privateAddresses?: boolean
}

/**
 * Yamux windows. A stream starts with INITIAL_STREAM_WINDOW of credit; the
 * yamux default (256 KiB) made every 1 MB activation wait for several
 * window-update round trips between busy processes. Yamux does not negotiate
 * this value: every fleetmesh peer must use the same one, which holds because
 * all of them are built here.
 */
export const INITIAL_STREAM_WINDOW = 4 * MiB
const MAX_STREAM_WINDOW = 16 * MiB

export async function createHost (init: HostInit = {}): Promise<Host> {
  const fleet = checkFleetName(init.fleet ?? DEFAULT_FLEET)
  const bootstrapList = init.bootstrap ?? []
  const host = await createLibp2p({
    ...(init.privateKey !== undefined ? { privateKey: init.privateKey } : {}),
    addresses: { listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'] },
    connectionManager: {
      // many vehicles share one address (one test machine, or a carrier-grade NAT):
      // libp2p's default of 5 new connections per second per host turned joiners away
      inboundConnectionThreshold: init.inboundConnectionsPerSecond ?? 100,
      maxIncomingPendingConnections: 64
    },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({
      streamOptions: {
        initialStreamWindowSize: INITIAL_STREAM_WINDOW,
        maxStreamWindowSize: MAX_STREAM_WINDOW,
        maxReadBufferLength: MAX_INFER_FRAME_BYTES + MiB
      }
    })],
    peerDiscovery: bootstrapList.length > 0 ? [bootstrapDiscovery({ list: bootstrapList, timeout: 0 })] : [],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: kadProtocol(fleet),
        clientMode: !(init.dhtServer ?? true),
        peerInfoMapper: (init.privateAddresses ?? true) ? passthroughMapper : removePrivateAddressesMapper,
        initialQuerySelfInterval: 500,
        validators: {
          [CAPACITY_RECORD_NAMESPACE]: async (key, value) => { await decodeCapacityRecord(value, peerPublicKey, { key }) },
          [MODEL_RECORD_NAMESPACE]: async (key, value) => { await decodeModelRecord(value, peerPublicKey, key) }
        },
        selectors: {
          [CAPACITY_RECORD_NAMESPACE]: (_key, values) => selectNewest(values, 'seq'),
          [MODEL_RECORD_NAMESPACE]: (_key, values) => selectNewest(values, 'publishedAt')
        }
      }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        emitSelf: false
      })
    }
  })
  if (bootstrapList.length > 0) keepJoined(host, bootstrapList)
  return host
}

/** How often a peer with no connections dials its bootstrap peers again. */
export const REJOIN_INTERVAL_MS = 2000

/**
 * Bootstrap discovery dials once; a refused or lost connection would leave a
 * peer alone for good. While a peer has no connections, dial the bootstrap
 * peers again every REJOIN_INTERVAL_MS.
 */
function keepJoined (host: Host, bootstrap: string[]): void {
  const timer = setInterval(() => {
    if (host.status !== 'started') return
    if (host.getConnections().length > 0) return
    for (const a of bootstrap) void host.dial(multiaddr(a), { signal: AbortSignal.timeout(REJOIN_INTERVAL_MS) }).catch(() => {})
  }, REJOIN_INTERVAL_MS)
  timer.unref()
  host.addEventListener('stop', () => { clearInterval(timer) }, { once: true })
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
export function hostAddrs (host: Host): string[] {
  return host.getMultiaddrs().map(a => a.toString())
}

/** The public key inside a peer id (Ed25519 and secp256k1 ids embed it). */
export function peerPublicKey (peer: string): RecordVerifier {
  const key = peerIdFromString(peer).publicKey
  if (key === undefined) throw new Error(`peer id ${peer} does not embed its public key`)
  return key
}

/** Index of the signed record whose body has the highest `field` (records that fail to parse lose). */
function selectNewest (values: Uint8Array[], field: string): number {
  let best = 0; let bestSeq = -1
  values.forEach((v, i) => {
    try {
      const body = JSON.parse(JSON.parse(new TextDecoder().decode(v)).body)
      if (typeof body[field] === 'number' && body[field] > bestSeq) { bestSeq = body[field]; best = i }
    } catch {}
  })
  return best
}
