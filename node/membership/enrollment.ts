/**
 * Enrollment: vehicles get their certificates without a person in the loop.
 *
 * An `IssuerService` runs on a bootstrap peer that holds a delegated issuer
 * certificate (never the authority key): on `/fleetmesh/<fleet>/enroll/1.0.0`
 * it takes an enrollment grant signed by the authority (or a member's current
 * chain, to renew) and issues a certificate for the connection's own,
 * authenticated peer id, limited to the roles it may issue.
 *
 * An `Enroller` runs on a vehicle provisioned with a grant: it asks the
 * bootstrap peers for a certificate on first start, keeps it in its data
 * directory, and renews it when a third of its life is left.
 */
import { TypedEventEmitter } from '@libp2p/interface'
import { lpStream, repeatingTask } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { ComponentLogger, Connection, Libp2p, Logger, Startable, Stream } from '@libp2p/interface'
import type { RepeatingTask } from '@libp2p/utils'
import { enrollProtocol } from '../../protocols/ids.ts'
import { MAX_PROOF_BYTES, NotAMemberError, decodeEnrollRequest, decodeEnrollResponse, encodeEnrollRequest, encodeEnrollResponse, openCertificate, openGrant } from '../../protocols/membership.ts'
import type { EnrollRequest, FleetTrust, Role } from '../../protocols/membership.ts'
import { second } from '../../protocols/limits.ts'
import { saveCredentials } from './credentials.ts'
import type { Credentials, Issuer } from './credentials.ts'
import type { Membership, OwnCredentials } from './membership.ts'

export interface IssuerServiceComponents {
  logger: ComponentLogger
  registrar: Pick<Libp2p, 'handle' | 'unhandle'>
  membership: Pick<Membership, 'verify' | 'trust'>
}

export interface IssuerServiceInit {
  /** This peer as a delegated issuer: its key and its own certificate chain. */
  issuer: Issuer
  /** Roles it may issue (from its certificate). */
  mayIssue: Role[]
  /** Validity of the certificates it issues. @default 7 days */
  days?: number
  /** Enrollments answered per peer per minute. @default 6 */
  perPeerPerMinute?: number
}

export class IssuerService implements Startable {
  private readonly c: IssuerServiceComponents
  private readonly init: IssuerServiceInit
  private readonly log: Logger
  private readonly recent = new Map<string, number[]>()

  constructor (components: IssuerServiceComponents, init: IssuerServiceInit) {
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:issuer')
  }

  async start (): Promise<void> {
    await this.c.registrar.handle(enrollProtocol(this.c.membership.trust.fleet), (stream, conn) => { void this.serve(stream, conn) }, { maxInboundStreams: 16, runOnLimitedConnection: true })
  }

  async stop (): Promise<void> {
    await this.c.registrar.unhandle(enrollProtocol(this.c.membership.trust.fleet))
  }

  private limited (peer: string, now = Date.now()): boolean {
    const times = (this.recent.get(peer) ?? []).filter(t => t > now - 60_000)
    times.push(now)
    this.recent.set(peer, times)
    if (this.recent.size > 10_000) this.recent.clear()
    return times.length > (this.init.perPeerPerMinute ?? 6)
  }

  /** What role a request entitles the connection's peer to, or why not. */
  private async entitlement (req: EnrollRequest, peer: string, now: number): Promise<Role[]> {
    const trust = this.c.membership.trust
    if ('grant' in req) {
      const { grant, signer } = await openGrant(req.grant)
      if (signer !== trust.authority) throw new NotAMemberError('grant is not signed by the fleet authority')
      if (grant.fleet !== trust.fleet) throw new NotAMemberError(`grant is for fleet ${grant.fleet}`)
      if (grant.notAfter < now) throw new NotAMemberError('grant expired')
      return [grant.role]
    }
    return (await this.c.membership.verify(req.renew, peer)).roles
  }

  private async serve (stream: Stream, conn: Connection): Promise<void> {
    const peer = conn.remotePeer.toString()
    const lp = lpStream(stream, { maxDataLength: MAX_PROOF_BYTES })
    try {
      const req = decodeEnrollRequest((await lp.read({ signal: AbortSignal.timeout(5 * second) })).subarray())
      let answer
      if (this.limited(peer)) answer = { refused: 'too many enrollments, try again later' }
      else {
        try {
          const roles = await this.entitlement(req, peer, Date.now())
          const beyond = roles.filter(r => !this.init.mayIssue.includes(r))
          if (beyond.length > 0) throw new NotAMemberError(`this issuer may not issue ${beyond.join(', ')}`)
          answer = { issued: await this.init.issuer.issue(peer, { roles, days: this.init.days ?? 7 }) }
          this.log('issued %s to %s', roles.join(','), peer)
        } catch (err) {
          answer = { refused: (err as Error).message }
        }
      }
      await lp.write(encodeEnrollResponse(answer))
      await stream.close()
    } catch (err) {
      stream.abort(err as Error)
    }
  }
}

export interface EnrollerComponents {
  logger: ComponentLogger
  dialer: Pick<Libp2p, 'dialProtocol'>
}

export interface EnrollerInit {
  trust: FleetTrust
  /** The credentials it starts from: a grant, maybe a certificate from an earlier start. */
  credentials: Credentials
  /** Bootstrap peers (issuers) to ask. */
  issuers: string[]
  /** Where the certificate is kept between starts. */
  file: string
}

export interface EnrollerEvents {
  /** A certificate was issued (first enrollment or renewal). */
  enrolled: CustomEvent<{ notAfter: number, renewed: boolean }>
  error: CustomEvent<{ message: string }>
}

/** A vehicle got no certificate in time; the message says what the bootstrap peers answered. */
export class EnrollmentError extends Error {
  readonly name = 'EnrollmentError'
  readonly code = 'ERR_ENROLLMENT'
}

/** A vehicle's own credentials, kept current by enrolling and renewing. */
export class Enroller extends TypedEventEmitter<EnrollerEvents> implements Startable, OwnCredentials {
  private readonly c: EnrollerComponents
  private readonly init: EnrollerInit
  private readonly log: Logger
  private current?: Uint8Array[]
  /** Why the last attempt to enroll or renew gave no certificate, if it did not. */
  lastError?: string
  /** Per issuer, why its last attempt that reached it (or tried to) failed. */
  private readonly reasons = new Map<string, string>()
  private notAfter = 0
  private notBefore = 0
  private readonly task: RepeatingTask

  constructor (components: EnrollerComponents, init: EnrollerInit) {
    super()
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:enroller')
    this.task = repeatingTask(async (opts) => { await this.renewIfDue(opts?.signal) }, 5 * second, { timeout: 30 * second, runImmediately: true })
  }

  chain (): Uint8Array[] | undefined { return this.current }

  async start (): Promise<void> {
    if (this.init.credentials.chain !== undefined) await this.adopt(this.init.credentials.chain, false)
    this.task.start()
  }

  stop (): void { this.task.stop() }

  /** Resolves once this node holds a certificate (enrolling if needed), or rejects when `signal` aborts. */
  async ready (signal: AbortSignal): Promise<void> {
    while (this.current === undefined || this.notAfter < Date.now()) {
      signal.throwIfAborted()
      await new Promise<void>(resolve => {
        const done = (): void => { this.removeEventListener('enrolled', done); signal.removeEventListener('abort', done); resolve() }
        this.addEventListener('enrolled', done)
        signal.addEventListener('abort', done, { once: true })
      })
    }
  }

  private async adopt (chain: Uint8Array[], renewed: boolean): Promise<void> {
    const { cert } = await openCertificate(chain[0])
    this.current = chain
    this.notAfter = cert.notAfter
    this.notBefore = cert.notBefore
    this.safeDispatchEvent('enrolled', { detail: { notAfter: cert.notAfter, renewed } })
  }

  private async renewIfDue (signal?: AbortSignal): Promise<void> {
    const now = Date.now()
    const life = this.notAfter - this.notBefore
    if (this.current !== undefined && this.notAfter - now > life / 3) return
    const renewing = this.current !== undefined && this.notAfter > now
    const req: EnrollRequest = renewing ? { renew: this.current! } : this.init.credentials.grant !== undefined ? { grant: this.init.credentials.grant } : { renew: this.current ?? [] }
    const errors: string[] = []
    for (const addr of this.init.issuers) {
      try {
        const stream = await this.c.dialer.dialProtocol(multiaddr(addr), enrollProtocol(this.init.trust.fleet), { signal: signal ?? AbortSignal.timeout(10 * second), runOnLimitedConnection: true })
        const lp = lpStream(stream, { maxDataLength: MAX_PROOF_BYTES })
        await lp.write(encodeEnrollRequest(req))
        const answer = decodeEnrollResponse((await lp.read({ signal: signal ?? AbortSignal.timeout(10 * second) })).subarray())
        await stream.close()
        if ('refused' in answer) { errors.push(`${addr}: ${answer.refused}`); continue }
        // kept for the next start before anyone is told
        await saveCredentials(this.init.file, { ...this.init.credentials, chain: answer.issued })
        this.lastError = undefined
        await this.adopt(answer.issued, renewing)
        this.log('%s until %s', renewing ? 'renewed' : 'enrolled', new Date(this.notAfter).toISOString())
        return
      } catch (err) {
        // a peer held back (refused for a while) failed for a reason an earlier attempt found: that one is said again
        const why = (err as Error).name === 'DialDeniedError' ? this.reasons.get(addr) : undefined
        errors.push(`${addr}: ${why ?? enrollFailure(err as Error, this.init.trust.fleet)}`)
        if (why === undefined) this.reasons.set(addr, enrollFailure(err as Error, this.init.trust.fleet))
      }
    }
    if (signal?.aborted === true) return // stopping: nothing to report
    const message = `no certificate yet: ${errors.join('; ')}`
    this.lastError = message
    this.log(message)
    this.safeDispatchEvent('error', { detail: { message } })
  }
}

/** Why an issuer gave no certificate, in words that point at the usual cause. */
function enrollFailure (err: Error, fleet: string): string {
  if (err.name === 'UnsupportedProtocolError') return `it does not enroll members of fleet ${fleet} (is the grant for the fleet this bootstrap peer serves?)`
  if (err.name === 'DialDeniedError') return 'held back for a while: it proved no membership of this fleet in time'
  return err.message
}
