/**
 * Gateway bearer tokens. A token is a member certificate of the fleet for
 * the subject "token:<name>" with the client role and the gateway limits it
 * grants (requests in flight, body size), issued by the fleet authority or a
 * delegate that may issue clients, so it expires and can be revoked by
 * serial like any certificate. On the wire: `fm1.` and the certificate chain,
 * base64url, dot-separated (`Authorization: Bearer fm1....`).
 */
import { fromString, toString } from 'uint8arrays'
import { NotAMemberError, verifyChain } from '../../protocols/membership.ts'
import type { Certificate, FleetTrust } from '../../protocols/membership.ts'
import type { Issuer } from '../membership/credentials.ts'
import { HttpError } from './repository.ts'

const PREFIX = 'fm1'
const MAX_TOKEN_CHARS = 8192

export interface TokenLimits { maxConcurrency: number, maxBodyBytes: number }

/** Limits a token gets unless its issuer says otherwise. */
export const DEFAULT_TOKEN_LIMITS: TokenLimits = { maxConcurrency: 4, maxBodyBytes: 16 * 1024 * 1024 }

export interface TokenOptions extends Partial<TokenLimits> {
  /** @default 30 */
  days?: number
}

/** Issues a gateway token for `name`. */
export async function issueToken (issuer: Issuer, name: string, o: TokenOptions = {}): Promise<string> {
  if (!/^[\w.@-]{1,64}$/.test(name)) throw new TypeError(`token name ${JSON.stringify(name)}: use 1-64 letters, digits, . @ _ -`)
  const chain = await issuer.issue(`token:${name}`, {
    roles: ['client'],
    days: o.days ?? 30,
    gateway: { maxConcurrency: o.maxConcurrency ?? DEFAULT_TOKEN_LIMITS.maxConcurrency, maxBodyBytes: o.maxBodyBytes ?? DEFAULT_TOKEN_LIMITS.maxBodyBytes }
  })
  return [PREFIX, ...chain.map(c => toString(c, 'base64url'))].join('.')
}

/** What a verified token allows. */
export interface TokenGrant { subject: string, serial: string, limits: TokenLimits, notAfter: number }

/**
 * Checks bearer tokens against a fleet's trust (and its revocations);
 * verified tokens are remembered until they expire, so a request costs a
 * map lookup, not a signature check.
 */
export class TokenVerifier {
  private readonly trust: FleetTrust
  private readonly revoked: (peer: string, serial: string) => boolean
  private readonly cache = new Map<string, TokenGrant>()

  constructor (trust: FleetTrust, revoked: (peer: string, serial: string) => boolean = () => false) {
    this.trust = trust
    this.revoked = revoked
  }

  /** The grant of an `Authorization` header's token; throws HttpError 401 (none, malformed) or 403 (not valid). */
  async check (authorization: string | undefined, now = Date.now()): Promise<TokenGrant> {
    const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? '')
    if (m === null) throw new HttpError(401, 'a bearer token is required (Authorization: Bearer <token from fleetmesh fleet token>)')
    const token = m[1]
    const hit = this.cache.get(token)
    if (hit !== undefined && hit.notAfter > now && !this.revoked(hit.subject, hit.serial)) return hit
    this.cache.delete(token)
    const parts = token.split('.')
    if (token.length > MAX_TOKEN_CHARS || parts[0] !== PREFIX || parts.length < 2 || parts.length > 3) throw new HttpError(401, 'the bearer token is not a fleetmesh gateway token')
    let cert: Certificate
    try {
      const chain = parts.slice(1).map(p => fromString(p, 'base64url'))
      cert = await verifyChain(this.trust, chain, { now, revoked: this.revoked })
    } catch (err) {
      throw new HttpError(err instanceof NotAMemberError ? 403 : 401, `the bearer token is not valid: ${(err as Error).message}`)
    }
    if (!cert.peer.startsWith('token:') || !cert.roles.includes('client')) throw new HttpError(403, 'the certificate is not a gateway token')
    const grant = { subject: cert.peer, serial: cert.serial, limits: cert.gateway ?? DEFAULT_TOKEN_LIMITS, notAfter: cert.notAfter }
    if (this.cache.size > 10_000) this.cache.clear()
    this.cache.set(token, grant)
    return grant
  }
}
