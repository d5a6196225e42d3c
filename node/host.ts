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
import type { GossipSub } from '@libp2p/gossipsub'
import type { Identify } from '@libp2p/identify'
import type { KadDHT } from '@libp2p/kad-dht'
import type { Ping } from '@libp2p/ping'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { DEFAULT_FLEET, checkFleetName, kadProtocol } from '../protocols/ids.ts'
import { MAX_INFER_FRAME_BYTES, MiB } from '../protocols/limits.ts'

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
  return await createLibp2p({
    ...(init.privateKey !== undefined ? { privateKey: init.privateKey } : {}),
    addresses: { listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'] },
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
        initialQuerySelfInterval: 500
      }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        emitSelf: false
      })
    }
  })
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
