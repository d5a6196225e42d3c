/**
 * Fleet membership at run time: who has proved membership, with which roles.
 *
 * Right after a connection opens, the dialling side sends its certificate
 * chain on `/fleetmesh/<fleet>/member/1.0.0` and reads the other's. A peer
 * that has not proved membership within `proofTimeoutMs` is disconnected and
 * denied for `denyMs` (the connection gater refuses it); every fleet
 * protocol (DHT, gossip, infer, shard, offer) runs behind a middleware that
 * waits for the proof and refuses non-members. Revocation lists, signed by
 * the authority, come with proofs and on the revocations topic; a revoked
 * peer is disconnected at once.
 */
import { TypedEventEmitter } from '@libp2p/interface'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { lpStream, repeatingTask } from '@libp2p/utils'
import type { ComponentLogger, Connection, ConnectionGater, IdentifyResult, Libp2p, Logger, PeerId, Startable, Stream, StreamMiddleware } from '@libp2p/interface'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import type { RepeatingTask } from '@libp2p/utils'
import { fleetOfProtocols, memberProtocol, revocationsTopic } from '../../protocols/ids.ts'
import { MAX_PROOF_BYTES, NotAMemberError, decodeProof, encodeProof, openRevocations, verifyChain } from '../../protocols/membership.ts'
import type { Certificate, FleetTrust, Revocations, Role } from '../../protocols/membership.ts'
import { second } from '../../protocols/limits.ts'

/** Peers refused for a while: the connection gater consults it. */
export class Denylist {
  private readonly until = new Map<string, number>()
  /** Peers the current revocation list names. */
  revoked = new Set<string>()

  deny (peer: string, ms: number, now = Date.now()): void { this.until.set(peer, Math.max(this.until.get(peer) ?? 0, now + ms)) }

  isDenied (peer: string, now = Date.now()): boolean {
    if (this.revoked.has(peer)) return true
    const u = this.until.get(peer)
    if (u === undefined) return false
    if (u > now) return true
    this.until.delete(peer)
    return false
  }

  /** A libp2p connection gater refusing denied peers before and after encryption. */
  gater (): ConnectionGater {
    const denied = (id: PeerId): boolean => this.isDenied(id.toString())
    return { denyDialPeer: denied, denyInboundEncryptedConnection: denied, denyOutboundEncryptedConnection: denied }
  }
}

/** How long a refusal waits for identify to say which fleet a peer speaks. */
const IDENTIFY_WAIT_MS = 1000

/** This node's own certificate chain (it may change: a vehicle enrolls or renews). */
export interface OwnCredentials { chain: () => Uint8Array[] | undefined }

export interface MembershipComponents {
  peerId: PeerId
  logger: ComponentLogger
  registrar: Pick<Libp2p, 'handle' | 'unhandle'>
  connections: Pick<Libp2p, 'getConnections' | 'hangUp' | 'addEventListener' | 'removeEventListener'> & { peerStore?: Pick<Libp2p['peerStore'], 'get'> }
  pubsub: Pick<GossipSub, 'subscribe' | 'publish' | 'addEventListener' | 'removeEventListener' | 'topicValidators'>
}

export interface MembershipInit {
  trust: FleetTrust
  own: OwnCredentials
  denylist: Denylist
  /** A revocation list to start from (sealed). */
  revocations?: Uint8Array
  /** How long a peer has to prove membership after connecting. @default 5000 */
  proofTimeoutMs?: number
  /** How long a peer that failed is refused. @default 30000 */
  denyMs?: number
}

export interface MembershipEvents {
  proven: CustomEvent<{ peer: string, cert: Certificate }>
  refused: CustomEvent<{ peer: string, reason: string }>
  /** A peer closed the stream on reading our proof, without its own: it does not take our certificate. Not refused for it. */
  declined: CustomEvent<{ peer: string, reason: string }>
  revocations: CustomEvent<Revocations>
}

export class Membership extends TypedEventEmitter<MembershipEvents> implements Startable {
  readonly trust: FleetTrust
  private readonly c: MembershipComponents
  private readonly init: MembershipInit
  private readonly log: Logger
  private readonly members = new Map<string, Certificate>()
  private readonly waiters = new Map<string, Set<() => void>>()
  private readonly verified = new Map<string, Certificate>()
  /** Certificates verified from chains that gossip carried, by subject: a short keep-alive carries none. */
  private readonly heard = new Map<string, Certificate>()
  private revocationList?: { list: Revocations, sealed: Uint8Array }
  private readonly sweeper: RepeatingTask
  private readonly onConnect = (evt: CustomEvent<Connection>): void => { this.connected(evt.detail) }
  private readonly onRevocations = (evt: CustomEvent<Message>): void => {
    if (evt.detail.topic === revocationsTopic(this.trust.fleet)) void this.adoptRevocations(evt.detail.data)
  }

  constructor (components: MembershipComponents, init: MembershipInit) {
    super()
    this.c = components
    this.init = init
    this.trust = init.trust
    this.log = components.logger.forComponent('fleetmesh:membership')
    this.sweeper = repeatingTask(() => { this.sweep() }, 30 * second)
  }

  private get proofTimeoutMs (): number { return this.init.proofTimeoutMs ?? 5 * second }

  /** Before the node starts: the proof handler and the connection listener must be there first. */
  async start (): Promise<void> {
    if (this.init.revocations !== undefined) await this.adoptRevocations(this.init.revocations)
    await this.c.registrar.handle(memberProtocol(this.trust.fleet), (stream, connection) => { void this.answer(stream, connection) }, { maxInboundStreams: 8, maxOutboundStreams: 8, runOnLimitedConnection: true })
    this.c.connections.addEventListener('connection:open', this.onConnect)
    this.c.pubsub.topicValidators.set(revocationsTopic(this.trust.fleet), async (_from, msg) => await this.validateRevocations(msg))
    this.sweeper.start()
  }

  /** After the node started: the revocations topic, and any connection opened meanwhile. */
  afterStart (): void {
    this.c.pubsub.subscribe(revocationsTopic(this.trust.fleet))
    this.c.pubsub.addEventListener('message', this.onRevocations)
    for (const conn of this.c.connections.getConnections()) this.connected(conn)
  }

  async stop (): Promise<void> {
    this.sweeper.stop()
    this.c.connections.removeEventListener('connection:open', this.onConnect)
    this.c.pubsub.removeEventListener('message', this.onRevocations)
    await this.c.registrar.unhandle(memberProtocol(this.trust.fleet))
  }

  /** The certificate of a peer that proved membership (and is still valid), else undefined. */
  certificate (peer: string, now = Date.now()): Certificate | undefined {
    const c = this.members.get(peer)
    if (c === undefined) return undefined
    if (c.notAfter < now || this.init.denylist.isDenied(peer, now)) { this.members.delete(peer); return undefined }
    return c
  }

  isMember (peer: string): boolean { return this.certificate(peer) !== undefined }

  hasRole (peer: string, role: Role): boolean { return this.certificate(peer)?.roles.includes(role) === true }

  /** Resolves with the peer's certificate once it has proved membership; rejects when `signal` aborts first. */
  async waitFor (peer: string, signal: AbortSignal): Promise<Certificate> {
    for (;;) {
      const cert = this.certificate(peer)
      if (cert !== undefined) return cert
      if (this.init.denylist.isDenied(peer)) throw new NotAMemberError(`${peer} is refused`)
      signal.throwIfAborted()
      await new Promise<void>((resolve) => {
        const set = this.waiters.get(peer) ?? new Set()
        const done = (): void => { set.delete(done); signal.removeEventListener('abort', done); resolve() }
        set.add(done)
        this.waiters.set(peer, set)
        signal.addEventListener('abort', done, { once: true })
      })
    }
  }

  /**
   * A stream middleware: the stream goes on once its peer has proved
   * membership, with one of `roles.inbound` / `roles.outbound` when given.
   */
  gate (roles: { inbound?: Role[], outbound?: Role[] } = {}): StreamMiddleware {
    // async, so a refusal rejects the middleware chain (and the caller's dial) instead of leaving it waiting
    return async (stream: Stream, connection: Connection, next) => {
      const peer = connection.remotePeer.toString()
      const wanted = stream.direction === 'inbound' ? roles.inbound : roles.outbound
      try {
        const cert = await this.waitFor(peer, AbortSignal.timeout(this.proofTimeoutMs))
        if (wanted !== undefined && !wanted.some(r => cert.roles.includes(r))) throw new NotAMemberError(`${peer} is not a ${wanted.join(' or ')}`)
      } catch (err) {
        const refusal = err instanceof NotAMemberError ? err : new NotAMemberError(`${peer} has not proved membership: ${(err as Error).message}`)
        stream.abort(refusal)
        throw refusal
      }
      next(stream, connection)
    }
  }

  /**
   * Checks a certificate chain a message carries for `sender` (gossip,
   * records): a member with `role`. Verified chains are cached until they expire.
   */
  async checkSender (sender: string, chain: Uint8Array[] | undefined, role: Role): Promise<Certificate> {
    let cert = this.certificate(sender)
    if (cert === undefined) {
      if (chain === undefined || chain.length === 0) {
        cert = this.heardCertificate(sender)
        if (cert === undefined) throw new NotAMemberError(`${sender} sent no certificate and has not proved membership`)
      } else cert = await this.verify(chain, sender)
    }
    if (!cert.roles.includes(role)) throw new NotAMemberError(`${sender} is not a ${role}`)
    return cert
  }

  /** Verifies a chain for `subject` (cached by the chain's bytes). */
  async verify (chain: Uint8Array[], subject: string): Promise<Certificate> {
    const key = Buffer.concat(chain).toString('base64')
    const cached = this.verified.get(key)
    const now = Date.now()
    if (cached !== undefined && cached.peer === subject && cached.notAfter > now && !this.isRevoked(cached.peer, cached.serial)) return this.remember(cached)
    const cert = await verifyChain(this.trust, chain, { now, subject, revoked: (p, s) => this.isRevoked(p, s) })
    if (this.verified.size > 4096) this.verified.clear()
    this.verified.set(key, cert)
    return this.remember(cert)
  }

  /** Remembers a certificate gossip carried, by subject (most recent last, so the first is forgotten when full). */
  private remember (cert: Certificate): Certificate {
    this.heard.delete(cert.peer)
    this.heard.set(cert.peer, cert)
    if (this.heard.size > 4096) this.heard.delete(this.heard.keys().next().value!)
    return cert
  }

  /** Whether a peer proved membership on a connection, or gossip carried its valid certificate. */
  knows (peer: string): boolean { return this.certificate(peer) !== undefined || this.heardCertificate(peer) !== undefined }

  /** The certificate a peer's earlier gossip carried, while it is valid, not revoked and the peer not refused. */
  heardCertificate (peer: string, now = Date.now()): Certificate | undefined {
    const c = this.heard.get(peer)
    if (c === undefined) return undefined
    if (c.notAfter < now || this.isRevoked(c.peer, c.serial) || this.init.denylist.isDenied(peer, now)) { this.heard.delete(peer); return undefined }
    return c
  }

  /** Whether a peer (or token subject) or a certificate serial is on the fleet's revocation list. */
  isRevoked (peer: string, serial: string): boolean {
    const r = this.revocationList?.list
    return r !== undefined && (r.peers.includes(peer) || r.serials.includes(serial))
  }

  /** The newest revocation list known (sealed), to pass on. */
  get revocations (): Uint8Array | undefined { return this.revocationList?.sealed }

  /** Takes a revocation list if it is the authority's and newer; disconnects the peers it revokes. */
  async adoptRevocations (sealed: Uint8Array): Promise<boolean> {
    let list: Revocations
    try { list = await openRevocations(sealed, this.trust) } catch (err) {
      this.log('bad revocation list: %e', err)
      return false
    }
    if (this.revocationList !== undefined && list.seq <= this.revocationList.list.seq) return false
    this.revocationList = { list, sealed }
    this.init.denylist.revoked = new Set(list.peers)
    for (const [peer, cert] of this.members) {
      if (!this.isRevoked(peer, cert.serial)) continue
      const id = this.peerIdOf(peer)
      if (id !== undefined) this.refuse(id, 'revoked')
      else this.members.delete(peer)
    }
    this.verified.clear()
    this.log('revocation list %d: %d peers, %d certificates', list.seq, list.peers.length, list.serials.length)
    this.safeDispatchEvent('revocations', { detail: list })
    return true
  }

  private async validateRevocations (msg: Message): Promise<TopicValidatorResult> {
    try {
      const list = await openRevocations(msg.data, this.trust)
      return this.revocationList === undefined || list.seq > this.revocationList.list.seq ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    } catch { return TopicValidatorResult.Reject }
  }

  /** Publishes the newest revocation list on the fleet's topic. */
  async publishRevocations (): Promise<void> {
    if (this.revocationList !== undefined) await this.c.pubsub.publish(revocationsTopic(this.trust.fleet), this.revocationList.sealed)
  }

  private peerIdOf (peer: string): PeerId | undefined {
    return this.c.connections.getConnections().find(c => c.remotePeer.toString() === peer)?.remotePeer
  }

  private connected (conn: Connection): void {
    const peer = conn.remotePeer.toString()
    if (this.certificate(peer) !== undefined) return
    if (conn.direction === 'outbound') void this.prove(conn)
    // whoever has not proved membership by the deadline is disconnected and refused for a while
    setTimeout(() => {
      if (this.certificate(peer) !== undefined || conn.status !== 'open') return
      this.refuse(conn.remotePeer, 'no membership proof in time')
    }, this.proofTimeoutMs).unref()
  }

  /** Sends our proof on a connection we opened and checks the other side's answer. */
  async prove (conn: Connection): Promise<void> {
    const chain = this.init.own.chain()
    if (chain === undefined) return // enrolling: there is nothing to show yet
    let stream: Stream | undefined
    try {
      stream = await conn.newStream(memberProtocol(this.trust.fleet), { signal: AbortSignal.timeout(this.proofTimeoutMs), runOnLimitedConnection: true })
      const lp = lpStream(stream, { maxDataLength: MAX_PROOF_BYTES })
      await lp.write(encodeProof(chain, this.revocations))
      await this.accept(conn.remotePeer, (await lp.read({ signal: AbortSignal.timeout(this.proofTimeoutMs) })).subarray())
      await stream.close()
    } catch (err) {
      stream?.abort(err as Error)
      if (err instanceof NotAMemberError) { this.refuse(conn.remotePeer, err.message); return }
      // a peer of another fleet (or none) is refused now, saying which, not when its time to prove runs out
      const why = (err as Error).name === 'UnsupportedProtocolError' ? await this.notInFleet(conn.remotePeer) : undefined
      if (why !== undefined) { this.refuse(conn.remotePeer, why); return }
      this.log('membership proof to %p failed: %e', conn.remotePeer, err)
      if ((err as Error).name === 'UnexpectedEOFError') this.safeDispatchEvent('declined', { detail: { peer: conn.remotePeer.toString(), reason: 'it closed the stream on reading this peer\'s proof, without its own: it does not take this peer\'s certificate (another authority\'s, expired or revoked?)' } })
    }
  }

  /** The protocols `remote` names when identify has run, or none after `ms`. */
  private async identified (remote: PeerId, ms: number): Promise<string[]> {
    return await new Promise<string[]>(resolve => {
      const done = (protocols: string[]): void => { clearTimeout(timer); this.c.connections.removeEventListener('peer:identify', onIdentify); resolve(protocols) }
      const onIdentify = (evt: CustomEvent<IdentifyResult>): void => { if (evt.detail.peerId.equals(remote)) done(evt.detail.protocols) }
      const timer = setTimeout(() => { done([]) }, ms)
      this.c.connections.addEventListener('peer:identify', onIdentify)
    })
  }

  /**
   * Why a peer that refused this fleet's membership protocol is refused: the
   * fleet it speaks, when identify told; undefined when identify says it
   * speaks this fleet's (a member starting or stopping: not refused for it).
   */
  private async notInFleet (remote: PeerId): Promise<string | undefined> {
    // the peer store may not hold the peer's protocols until identify has run
    const spoken = fleetOfProtocols((await this.c.connections.peerStore?.get(remote).catch(() => undefined))?.protocols ?? []) ?? fleetOfProtocols(await this.identified(remote, IDENTIFY_WAIT_MS))
    if (spoken === undefined) return `it does not speak fleet ${this.trust.fleet}'s membership protocol`
    if (spoken.fleet === this.trust.fleet) return spoken.membersOnly ? undefined : `it is in an open fleet named ${spoken.fleet}, without membership`
    return `it is in ${spoken.membersOnly ? 'fleet' : 'the open fleet'} ${spoken.fleet}, not ${this.trust.fleet}`
  }

  /** Proves membership again on every connection (after enrolling or renewing). */
  async proveAll (): Promise<void> {
    await Promise.all(this.c.connections.getConnections().filter(c => c.direction === 'outbound' || !this.isMember(c.remotePeer.toString())).map(async c => { await this.prove(c) }))
  }

  /** Handler: read the peer's proof, check it, answer with ours. */
  private async answer (stream: Stream, conn: Connection): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: MAX_PROOF_BYTES })
    try {
      await this.accept(conn.remotePeer, (await lp.read({ signal: AbortSignal.timeout(this.proofTimeoutMs) })).subarray())
      const chain = this.init.own.chain()
      if (chain !== undefined) await lp.write(encodeProof(chain, this.revocations))
      await stream.close()
    } catch (err) {
      stream.abort(err as Error)
      if (err instanceof NotAMemberError) this.refuse(conn.remotePeer, err.message)
    }
  }

  private async accept (remote: PeerId, bytes: Uint8Array): Promise<void> {
    const peer = remote.toString()
    let proof
    try { proof = decodeProof(bytes) } catch (err) { throw new NotAMemberError(`bad membership proof: ${(err as Error).message}`) }
    if (proof.revocations !== undefined) await this.adoptRevocations(proof.revocations)
    const cert = await this.verify(proof.chain, peer)
    this.members.set(peer, cert)
    for (const w of this.waiters.get(peer) ?? []) w()
    this.waiters.delete(peer)
    this.safeDispatchEvent('proven', { detail: { peer, cert } })
  }

  private refuse (remote: PeerId, reason: string): void {
    const peer = remote.toString()
    this.members.delete(peer)
    this.init.denylist.deny(peer, this.init.denyMs ?? 30 * second)
    this.log('refusing %p: %s', remote, reason)
    this.safeDispatchEvent('refused', { detail: { peer, reason } })
    for (const w of this.waiters.get(peer) ?? []) w()
    void this.c.connections.hangUp(remote).catch(() => {})
  }

  /** Forgets certificates that expired and disconnects their peers. */
  private sweep (now = Date.now()): void {
    for (const [peer, cert] of this.members) {
      if (cert.notAfter >= now) continue
      const id = this.peerIdOf(peer)
      this.members.delete(peer)
      if (id !== undefined) void this.c.connections.hangUp(id).catch(() => {})
    }
  }
}
