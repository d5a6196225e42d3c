/**
 * Backs off from peers that hang up at once.
 *
 * libp2p redials a peer it keeps alive (kad-dht's closest peers carry a
 * KEEP_ALIVE tag) the moment its connection closes, and a redial that
 * connects counts as a success, so nothing slows the next one. A peer that
 * refuses this node right after the handshake (a fleet's member denying a
 * node it cannot admit, for 30 s at a time) was dialled again some 50 times
 * a second: each a TLS handshake on that peer, and each against the
 * connections a second libp2p takes from one address (100), which every
 * peer behind the same address shares. In a test mesh that was an honest
 * node's dial reset at connect; in the field, every car behind one
 * carrier-grade NAT.
 *
 * Here, after `free` hang-ups in a row by a peer (`watch`: a connection this
 * node dialled that was its last to the peer; one replaced by another, as a
 * relayed one by a punched one, or a duplicate, is not), each within
 * `shortMs` of opening, dials to it are refused for `baseMs`, doubling up to
 * `maxMs`; a connection that lasts clears the count. Only this node's own
 * dials wait: the peer may still dial in, and hole punches dial the
 * transport directly.
 */
import type { ConnectionGater, Libp2p, PeerId } from '@libp2p/interface'

export interface RedialBackoffInit {
  /** A connection closed within this of opening is a hang-up. @default 2000 */
  shortMs?: number
  /** Hang-ups in a row redialled at once. @default 3 */
  free?: number
  /** The first wait. @default 1000 */
  baseMs?: number
  /** The longest wait. @default 300000 (5 minutes) */
  maxMs?: number
  /** Peers remembered at most (the oldest forgotten first). @default 4096 */
  maxPeers?: number
}

export class RedialBackoff {
  private readonly peers = new Map<string, { hangUps: number, until: number }>()
  private readonly o: Required<RedialBackoffInit>
  private readonly now: () => number

  constructor (init: RedialBackoffInit = {}, now: () => number = Date.now) {
    this.o = { shortMs: 2000, free: 3, baseMs: 1000, maxMs: 300_000, maxPeers: 4096, ...init }
    this.now = now
  }

  /** A connection to `peer`, open since `openedAt` (ms since the epoch), closed now. */
  closed (peer: string, openedAt: number): void {
    const now = this.now()
    if (now - openedAt >= this.o.shortMs) { this.peers.delete(peer); return }
    const p = this.peers.get(peer) ?? { hangUps: 0, until: 0 }
    p.hangUps++
    if (p.hangUps > this.o.free) p.until = now + Math.min(this.o.maxMs, this.o.baseMs * 2 ** (p.hangUps - this.o.free - 1))
    this.peers.delete(peer)
    this.peers.set(peer, p)
    if (this.peers.size > this.o.maxPeers) this.peers.delete(this.peers.keys().next().value!)
  }

  /** Whether a dial to `peer` waits now. */
  waits (peer: string): boolean { return (this.peers.get(peer)?.until ?? 0) > this.now() }

  /** Milliseconds until `peer` may be dialled again (0: now). */
  waitMs (peer: string): number { return Math.max(0, (this.peers.get(peer)?.until ?? 0) - this.now()) }

  /** Counts `host`'s hang-ups as its connections close. */
  watch (host: Pick<Libp2p, 'addEventListener' | 'getConnections'>): void {
    host.addEventListener('connection:close', (evt) => {
      const c = evt.detail
      if (c.direction !== 'outbound' || host.getConnections(c.remotePeer).some(o => o !== c && o.status === 'open')) return
      this.closed(c.remotePeer.toString(), c.timeline.open)
    })
  }

  /** `inner` (a connection gater, perhaps empty) that also holds back dials to peers in back-off. */
  gater (inner: ConnectionGater = {}): ConnectionGater {
    return { ...inner, denyDialPeer: async (id: PeerId) => this.waits(id.toString()) || (await inner.denyDialPeer?.(id) ?? false) }
  }
}
