/**
 * TCP hole punching with predicted ports (`/fleetmesh/punch/1.0.0`), a
 * libp2p service beside DCUtR. DCUtR dials the addresses a peer has
 * confirmed as public, which a car behind a home router or carrier-grade NAT
 * never has: its outgoing TCP connections leave from fresh ports, none of
 * them its listen port. Most NATs (Linux MASQUERADE, most home routers) keep
 * a connection's source port when it is free, though, so a car can say where
 * its next connection will come from: its NAT's public address (observed by
 * peers it reaches directly) and a local port it picks. Both cars exchange
 * those over the relayed connection, then dial each other from them at once;
 * the crossing SYNs open both NATs and meet as one TCP connection (a
 * simultaneous open), which libp2p upgrades with the dialing side of the
 * relayed connection as the initiator. A NAT that picks random ports
 * (symmetric, `--random-fully`) defeats the prediction: the pair stays on
 * the relay, and tries again only after PUNCH_RETRY_MS.
 *
 * Only members punch (the protocol is gated like DCUtR), a peer can only
 * name plain TCP addresses, each dial goes to the peer id it punches for
 * (Noise fails against anyone else), and one punch per peer runs at a time.
 */
import { createServer } from 'node:net'
import { isLoopback, isPrivate, lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { ComponentLogger, Connection, CounterGroup, IdentifyResult, Libp2pEvents, Logger, Metrics, MultiaddrConnection, PeerId, Startable, Stream, TypedEventTarget, Upgrader } from '@libp2p/interface'
import type { ConnectionManager, Registrar, TransportManager } from '@libp2p/interface-internal'
import type { Multiaddr } from '@multiformats/multiaddr'
import { MalformedFrameError } from '../protocols/errors.ts'
import { INFER_PROTOCOLS, OFFER_PROTOCOL, PUNCH_PROTOCOL, RESULT_PROTOCOL, RESULT_REUSE_PROTOCOL, SHARD_PROTOCOL } from '../protocols/ids.ts'
import { MAX_PUNCH_MESSAGE_BYTES, minute, second } from '../protocols/limits.ts'
import { decodePunchMessage, encodePunchMessage } from '../protocols/punch.ts'
import type { PunchMessage } from '../protocols/punch.ts'

/** How long both sides keep dialing after SYNC. */
export const PUNCH_WINDOW_MS = 6 * second
/** A pair whose punch failed (a symmetric NAT, a firewall) stays on the relay this long before trying again. */
export const PUNCH_RETRY_MS = 5 * minute
/** Pause between one side's dial attempts: a SYN that met a closed NAT is answered with a reset, and the next one may cross. */
const REDIAL_MS = 60
/** Streams of real work: a relayed connection that carries one is closed only after they end. */
const WORK_PROTOCOLS = new Set([...INFER_PROTOCOLS, SHARD_PROTOCOL, RESULT_PROTOCOL, RESULT_REUSE_PROTOCOL, OFFER_PROTOCOL])

export interface HolePunchInit {
  /**
   * Which of this node's observed addresses may be named: `public` (the
   * field) or `any` (tests on one machine, where every address is loopback).
   * @default 'public'
   */
  addresses?: 'public' | 'any'
  /** Start punching this long after a relayed connection is identified (DCUtR goes first). @default 1000 */
  delayMs?: number
}

export interface HolePunchComponents {
  peerId: PeerId
  registrar: Registrar
  connectionManager: ConnectionManager
  transportManager: TransportManager
  upgrader: Upgrader
  events: TypedEventTarget<Libp2pEvents>
  logger: ComponentLogger
  metrics?: Metrics
}

export type PunchOutcome = 'direct' | 'failed' | 'no-address' | 'refused'

export class HolePunch implements Startable {
  private readonly c: HolePunchComponents
  private readonly log: Logger
  private readonly anyAddress: boolean
  private readonly delayMs: number
  private readonly running = new Set<string>()
  /** Peers whose punch this node is answering (dialing them back) now. */
  private readonly answering = new Set<string>()
  private readonly retryAt = new Map<string, number>()
  /** This node's address as peers it reaches directly see it, per IP family ('ip4', 'ip6'). */
  private readonly observed = new Map<string, string>()
  private readonly outcomes?: CounterGroup
  private controller = new AbortController()
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  private readonly responder: Upgrader

  constructor (components: HolePunchComponents, init: HolePunchInit = {}) {
    this.c = components
    this.log = components.logger.forComponent('fleetmesh:hole-punch')
    this.anyAddress = init.addresses === 'any'
    this.delayMs = init.delayMs ?? 1000
    this.responder = responderOf(components.upgrader)
    this.outcomes = components.metrics?.registerCounterGroup('fleetmesh_hole_punches_total', { label: 'outcome', help: 'TCP hole punches by outcome' })
  }

  readonly [Symbol.toStringTag] = 'fleetmesh/hole-punch'

  async start (): Promise<void> {
    this.controller = new AbortController()
    await this.c.registrar.handle(PUNCH_PROTOCOL, (stream, connection) => { void this.answer(stream, connection) }, { runOnLimitedConnection: true })
    this.c.events.addEventListener('peer:identify', this.onIdentify)
  }

  async stop (): Promise<void> {
    this.controller.abort()
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    this.c.events.removeEventListener('peer:identify', this.onIdentify)
    await this.c.registrar.unhandle(PUNCH_PROTOCOL)
  }

  /** Learns this node's public address from direct connections; starts a punch over relayed ones this node dialed. */
  private readonly onIdentify = (evt: CustomEvent<IdentifyResult>): void => {
    const { connection, observedAddr, protocols } = evt.detail
    if (connection.limits === undefined) {
      if (observedAddr !== undefined) this.observe(observedAddr)
      return
    }
    if (connection.direction !== 'outbound' || !protocols.includes(PUNCH_PROTOCOL)) return
    const t = setTimeout(() => {
      this.timers.delete(t)
      void this.punch(connection).then(outcome => { this.log('punch to %p: %s', connection.remotePeer, outcome) })
    }, this.delayMs)
    this.timers.add(t)
  }

  private observe (addr: Multiaddr): void {
    const [ip, tcp] = addr.getComponents()
    if (tcp?.name !== 'tcp' || (ip.name !== 'ip4' && ip.name !== 'ip6')) return
    const bare = multiaddr(`/${ip.name}/${ip.value ?? ''}/tcp/1`)
    if (!this.anyAddress && (isPrivate(bare) || isLoopback(bare))) return
    this.observed.set(ip.name, ip.value ?? '')
  }

  /** The dialing side: CONNECT, CONNECT back, SYNC, half a round trip, dial. */
  async punch (relayed: Connection): Promise<PunchOutcome> {
    const peer = relayed.remotePeer
    const key = peer.toString()
    if (this.running.has(key) || this.answering.has(key) || (this.retryAt.get(key) ?? 0) > Date.now() || this.hasDirect(peer)) return 'refused'
    const family = [...this.observed.keys()][0]
    if (family === undefined) return this.count('no-address')
    this.running.add(key)
    let stream: Stream | undefined
    try {
      const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(PUNCH_WINDOW_MS * 2)])
      const port = await freePort()
      stream = await relayed.newStream(PUNCH_PROTOCOL, { runOnLimitedConnection: true, signal })
      const lp = lpStream(stream, { maxDataLength: MAX_PUNCH_MESSAGE_BYTES })
      const t0 = performance.now()
      await lp.write(encodePunchMessage({ type: 'connect', addrs: [this.ownAddr(family, port)] }), { signal })
      const theirs = expect(decodePunchMessage((await lp.read({ signal })).subarray()), 'connect')
      const rtt = performance.now() - t0
      await lp.write(encodePunchMessage({ type: 'sync' }), { signal })
      await stream.close({ signal })
      await sleep(rtt / 2, signal)
      return await this.dialFrom(relayed, port, theirs.addrs, true)
    } catch (err) {
      stream?.abort(err as Error)
      // the other side declined (it punches towards us itself, or has no public address): not a failure
      if ((err as Error).name === 'UnexpectedEOFError') return this.count('refused')
      this.log('punch to %p failed: %e', peer, err)
      return this.failed(key)
    } finally {
      this.running.delete(key)
    }
  }

  /** The other side: answer CONNECT with this node's address, dial when SYNC comes. */
  private async answer (stream: Stream, relayed: Connection): Promise<void> {
    const key = relayed.remotePeer.toString()
    const family = [...this.observed.keys()][0]
    if (relayed.limits === undefined) {
      stream.abort(new Error('not a relayed connection'))
      return
    }
    // both sides punching at once (each dialed the other through the relay): the lower peer id's punch goes on
    const ours = this.running.has(key)
    // a punch that failed is not answered again before PUNCH_RETRY_MS, nor one while this node still dials
    // back the one before: the addresses a peer names are dialled many times over, and a member must not be
    // able to aim that at someone else on demand
    const first = !this.answering.has(key)
    const busy = !first || (ours && this.c.peerId.toString() < key) || (this.retryAt.get(key) ?? 0) > Date.now()
    if (first) this.answering.add(key)
    try {
      const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(PUNCH_WINDOW_MS * 2)])
      const lp = lpStream(stream, { maxDataLength: MAX_PUNCH_MESSAGE_BYTES })
      const theirs = expect(decodePunchMessage((await lp.read({ signal })).subarray()), 'connect')
      if (busy || family === undefined) {
        // declined: the end of the stream without an answer
        this.log('declined a punch from %p: %s', relayed.remotePeer, busy ? 'our own punch goes on, or one failed lately' : 'no public address')
        await stream.close({ signal })
        return
      }
      const port = await freePort()
      await lp.write(encodePunchMessage({ type: 'connect', addrs: [this.ownAddr(family, port)] }), { signal })
      expect(decodePunchMessage((await lp.read({ signal })).subarray()), 'sync')
      await stream.close({ signal })
      await this.dialFrom(relayed, port, theirs.addrs, false)
    } catch (err) {
      this.log('punch from %p failed: %e', relayed.remotePeer, err)
      stream.abort(err as Error)
      this.failed(key)
    } finally {
      if (first) this.answering.delete(key)
    }
  }

  /**
   * Dials the peer's addresses from `port` until a connection opens or the
   * window ends. `initiator`: this side runs multistream-select and Noise as
   * the dialer (the other side of a simultaneous open must not).
   */
  private async dialFrom (relayed: Connection, port: number, addrs: Multiaddr[], initiator: boolean): Promise<PunchOutcome> {
    const peer = relayed.remotePeer
    const targets = addrs.map(a => a.encapsulate(`/p2p/${peer.toString()}`))
    const deadline = Date.now() + PUNCH_WINDOW_MS
    let i = 0
    while (Date.now() < deadline && !this.controller.signal.aborted) {
      const target = targets[i++ % targets.length]
      try {
        // straight to the TCP transport: the dial queue keeps neither the local port nor the role (the
        // connection manager still tracks the connection, from its connection:open event)
        const transport = this.c.transportManager.dialTransportForMultiaddr(target)
        if (transport === undefined) throw new Error(`no transport dials ${target.toString()}`)
        // a signal that ends the attempt and nothing after it: the socket keeps listening to it
        const conn = await this.withDeadline(deadline - Date.now(), async (signal) => await transport.dial(target, {
          upgrader: initiator ? this.c.upgrader : this.responder,
          localPort: port,
          signal
        } as Parameters<typeof transport.dial>[1]))
        this.log('direct connection to %p via %a from port %d', peer, conn.remoteAddr, port)
        this.closeWhenIdle(relayed)
        return this.count('direct')
      } catch (err) {
        if (this.hasDirect(peer)) return this.count('direct')
        this.log.trace('dial %a from %d: %e', target, port, err)
        await sleep(REDIAL_MS, this.controller.signal).catch(() => {})
      }
    }
    return this.failed(peer.toString())
  }

  /** Runs `f` with a signal that aborts after `ms` or when the service stops, and never once `f` is done. */
  private async withDeadline<T> (ms: number, f: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const attempt = new AbortController()
    const onStop = (): void => { attempt.abort(this.controller.signal.reason) }
    const timer = setTimeout(() => { attempt.abort(new Error('hole punch window ended')) }, Math.max(100, ms))
    this.controller.signal.addEventListener('abort', onStop, { once: true })
    try {
      return await f(attempt.signal)
    } finally {
      clearTimeout(timer)
      this.controller.signal.removeEventListener('abort', onStop)
    }
  }

  private ownAddr (family: string, port: number): Multiaddr {
    return multiaddr(`/${family}/${this.observed.get(family) ?? ''}/tcp/${port}`)
  }

  private hasDirect (peer: PeerId): boolean {
    return this.c.connectionManager.getConnections(peer).some(c => c.limits === undefined && c.status === 'open')
  }

  /** Closes the relayed connection once no work runs on it (streams already open finish there). */
  private closeWhenIdle (relayed: Connection, waitedMs = 0): void {
    const busy = relayed.streams.some(s => WORK_PROTOCOLS.has(s.protocol ?? ''))
    if (!busy || waitedMs >= minute) {
      relayed.close().catch(err => { this.log('closing relayed connection to %p: %e', relayed.remotePeer, err) })
      return
    }
    const t = setTimeout(() => { this.timers.delete(t); this.closeWhenIdle(relayed, waitedMs + second) }, second)
    this.timers.add(t)
  }

  private failed (key: string): PunchOutcome {
    this.retryAt.set(key, Date.now() + PUNCH_RETRY_MS)
    return this.count('failed')
  }

  private count (outcome: PunchOutcome): PunchOutcome {
    this.outcomes?.increment({ [outcome]: true })
    return outcome
  }
}

/**
 * The upgrader for the side of a simultaneous open that is not the
 * initiator: multistream-select and Noise as the listener, and yamux as the
 * server. libp2p's `initiator: false` does the first two but leaves the
 * connection `outbound`, so yamux made both ends clients ("Both endpoints are
 * clients"): the connection turns inbound first.
 */
function responderOf (upgrader: Upgrader): Upgrader {
  return new Proxy(upgrader, {
    get: (target, prop) => {
      if (prop === 'upgradeOutbound') {
        return async (maConn: MultiaddrConnection, opts: Parameters<Upgrader['upgradeOutbound']>[1]) => {
          (maConn as { direction: 'inbound' | 'outbound' }).direction = 'inbound'
          return await target.upgradeOutbound(maConn, { ...opts, initiator: false })
        }
      }
      const v = Reflect.get(target, prop) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    }
  })
}

function expect<T extends PunchMessage['type']> (m: PunchMessage, type: T): Extract<PunchMessage, { type: T }> {
  if (m.type !== type) throw new MalformedFrameError('punch message', `expected ${type}, got ${m.type}`)
  return m as Extract<PunchMessage, { type: T }>
}

/** A local TCP port free right now (the OS picks it). */
async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, () => {
      const addr = server.address()
      server.close(() => { typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no port')) })
    })
  })
}

async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = (): void => { clearTimeout(t); reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

export function holePunch (init: HolePunchInit = {}): (components: HolePunchComponents) => HolePunch {
  return (components) => new HolePunch(components, init)
}
