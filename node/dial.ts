/**
 * Dialling a peer by id with address hints: the one place fleetmesh opens
 * streams to other peers (hops, shard providers, batch clients). Hints (from
 * a heartbeat, a route or an announcement) are added to the peer store only
 * while there is no connection to the peer. Streams may run over a relayed
 * (limited) connection: a car behind NAT is reached through a relay until
 * hole punching gives a direct one.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { AbortOptions, Connection, PeerId, Stream } from '@libp2p/interface'
import type { Host } from './host.ts'

export interface DialOptions extends AbortOptions {
  /** Addresses where the peer may be reached. */
  addrs?: string[]
}

const LOOPBACK = /^\/(ip4\/127\.|ip6\/::1\/)/

/** Peer ids kept parsed: parsing one from its string (an Ed25519 key from base58) costs tens of microseconds. */
const PARSED_PEER_IDS = 1024

export class PeerDialer {
  private readonly host: Pick<Host, 'getConnections' | 'peerStore' | 'dialProtocol'>
  /** The peer ids last parsed from strings, at most PARSED_PEER_IDS, the oldest forgotten first. */
  private readonly ids = new Map<string, PeerId>()
  /** Whether a connection's remote address is loopback (an address never changes). */
  private readonly loopback = new WeakMap<Connection, boolean>()

  constructor (host: Pick<Host, 'getConnections' | 'peerStore' | 'dialProtocol'>) {
    this.host = host
  }

  /** Whether this node is connected to `peer` over loopback (the same host): a link faster than compressing for it. */
  sameHost (peer: string): boolean {
    let id
    try { id = this.idOf(peer) } catch { return false }
    return this.host.getConnections(id).some(c => {
      let is = this.loopback.get(c)
      if (is === undefined) { is = LOOPBACK.test(c.remoteAddr.toString()); this.loopback.set(c, is) }
      return is
    })
  }

  /** `peer` parsed (asked per message: whether to compress, where a result goes); throws on a malformed id. */
  idOf (peer: string): PeerId {
    let id = this.ids.get(peer)
    if (id === undefined) {
      id = peerIdFromString(peer)
      if (this.ids.size >= PARSED_PEER_IDS) this.ids.delete(this.ids.keys().next().value!)
      this.ids.set(peer, id)
    }
    return id
  }

  /** Opens a stream for `protocol` (the first of these the peer speaks) to `peer` (a peer id or its string). */
  async dialProtocol (peer: string | PeerId, protocol: string | string[], opts: DialOptions = {}): Promise<Stream> {
    const id = typeof peer === 'string' ? this.idOf(peer) : peer
    const addrs = opts.addrs ?? []
    if (addrs.length > 0 && this.host.getConnections(id).length === 0) {
      await this.host.peerStore.merge(id, { multiaddrs: addrs.map(a => multiaddr(a)) }, opts)
    }
    // fleet protocols also run over relayed connections, within the relay's limits
    const dial = async (): Promise<Stream> => await this.host.dialProtocol(id, protocol, { runOnLimitedConnection: true, ...opts })
    try {
      return await dial()
    } catch (err) {
      // a relayed connection closed as it opened: DCUtR replaced it with a direct one (the peer dialled us
      // back), which the second dial finds
      if ((err as Error).name !== 'ConnectionClosedError' || opts.signal?.aborted === true) throw err
      return await dial()
    }
  }
}
