/**
 * Fleet membership (schema: protocols/membership.proto): member certificates,
 * enrollment grants and revocation lists, each a signed RecordEnvelope with
 * its own domain, and the check of a certificate chain against the fleet's
 * authority. Pure: no I/O; callers pass the clock.
 */
import type { PrivateKey } from '@libp2p/interface'
import { decodeMessage, encodeMessage, list, num, text, time } from './codec.ts'
import { openRecord, sealRecord } from './envelope.ts'
import type { RecordKind } from './envelope.ts'
import { MalformedFrameError } from './errors.ts'
import { EnrollRequestSchema, EnrollResponseSchema, EnrollmentGrantSchema, MemberCertificateSchema, MembershipProofSchema, RevocationListSchema, Role as WireRole } from './gen/membership_pb.ts'
import { CLOCK_SKEW_MS, KiB, MAX_CREDENTIAL_BYTES, MAX_PEER_ID_CHARS } from './limits.ts'

export { MAX_CREDENTIAL_BYTES }

export type Role = 'vehicle' | 'client' | 'publisher' | 'bootstrap' | 'relay'
export const ROLES: readonly Role[] = ['vehicle', 'client', 'publisher', 'bootstrap', 'relay']
const WIRE: Record<Role, WireRole> = { vehicle: WireRole.VEHICLE, client: WireRole.CLIENT, publisher: WireRole.PUBLISHER, bootstrap: WireRole.BOOTSTRAP, relay: WireRole.RELAY }
const roleOf = (r: number): Role | undefined => ROLES.find(x => WIRE[x] === r)

export function parseRole (s: string): Role {
  if (!(ROLES as readonly string[]).includes(s)) throw new TypeError(`unknown role "${s}": use ${ROLES.join(', ')}`)
  return s as Role
}

export const CERTIFICATE: RecordKind = { domain: 'fleetmesh-member-certificate', payloadType: '/fleetmesh/member-certificate/1' }
export const GRANT: RecordKind = { domain: 'fleetmesh-enrollment-grant', payloadType: '/fleetmesh/enrollment-grant/1' }
export const REVOCATIONS: RecordKind = { domain: 'fleetmesh-revocation-list', payloadType: '/fleetmesh/revocation-list/1' }

/** Largest revocation list. */
export const MAX_REVOCATIONS_BYTES = 256 * KiB
/** Largest membership proof or enrollment message. */
export const MAX_PROOF_BYTES = 2 * MAX_CREDENTIAL_BYTES + MAX_REVOCATIONS_BYTES + 64

/** A fleet as a peer knows it: its name and its authority's peer id (the public key). */
export interface FleetTrust { fleet: string, authority: string }

export interface Certificate {
  fleet: string
  peer: string
  roles: Role[]
  notBefore: number
  notAfter: number
  serial: string
  /** Roles this peer may issue certificates for (delegated issuers only). */
  mayIssue: Role[]
  /** A gateway bearer token's limits (its `peer` is "token:<name>"). */
  gateway?: { maxConcurrency: number, maxBodyBytes: number }
}

export interface Grant { fleet: string, role: Role, notAfter: number, id: string }

export interface Revocations { fleet: string, seq: number, issuedAt: number, peers: string[], serials: string[] }

function roles (rs: number[], field: string): Role[] {
  return list(rs, field, 8).map(r => {
    const role = roleOf(r)
    if (role === undefined) throw new MalformedFrameError(field, `unknown role ${r}`)
    return role
  })
}

export async function sealCertificate (c: Certificate, key: PrivateKey): Promise<Uint8Array> {
  return await sealRecord(CERTIFICATE, encodeMessage(MemberCertificateSchema, {
    fleet: c.fleet,
    peer: c.peer,
    roles: c.roles.map(r => WIRE[r]),
    notBeforeMs: c.notBefore,
    notAfterMs: c.notAfter,
    serial: c.serial,
    mayIssue: c.mayIssue.map(r => WIRE[r]),
    ...(c.gateway !== undefined ? { gateway: c.gateway } : {})
  }), key)
}

export async function openCertificate (bytes: Uint8Array): Promise<{ cert: Certificate, signer: string }> {
  const { signer, payload } = await openRecord(CERTIFICATE, bytes, 'certificate', MAX_CREDENTIAL_BYTES)
  const c = decodeMessage(MemberCertificateSchema, payload, 'certificate', MAX_CREDENTIAL_BYTES)
  const cert: Certificate = {
    fleet: text(c.fleet, 'certificate.fleet', 32),
    peer: text(c.peer, 'certificate.peer', MAX_PEER_ID_CHARS),
    roles: roles(c.roles, 'certificate.roles'),
    notBefore: time(c.notBeforeMs, 'certificate.notBefore'),
    notAfter: time(c.notAfterMs, 'certificate.notAfter'),
    serial: text(c.serial, 'certificate.serial', 64),
    mayIssue: roles(c.mayIssue, 'certificate.mayIssue'),
    ...(c.gateway !== undefined ? { gateway: { maxConcurrency: num(c.gateway.maxConcurrency, 'certificate.gateway.maxConcurrency', 1, 1_000_000), maxBodyBytes: num(c.gateway.maxBodyBytes, 'certificate.gateway.maxBodyBytes', 1, 0xffffffff) } } : {})
  }
  return { cert, signer }
}

export async function sealGrant (g: Grant, key: PrivateKey): Promise<Uint8Array> {
  return await sealRecord(GRANT, encodeMessage(EnrollmentGrantSchema, { fleet: g.fleet, role: WIRE[g.role], notAfterMs: g.notAfter, id: g.id }), key)
}

export async function openGrant (bytes: Uint8Array): Promise<{ grant: Grant, signer: string }> {
  const { signer, payload } = await openRecord(GRANT, bytes, 'grant', MAX_CREDENTIAL_BYTES)
  const g = decodeMessage(EnrollmentGrantSchema, payload, 'grant', MAX_CREDENTIAL_BYTES)
  const role = roleOf(g.role)
  if (role === undefined) throw new MalformedFrameError('grant.role', `unknown role ${g.role}`)
  return { grant: { fleet: text(g.fleet, 'grant.fleet', 32), role, notAfter: time(g.notAfterMs, 'grant.notAfter'), id: text(g.id, 'grant.id', 64) }, signer }
}

export async function sealRevocations (r: Revocations, key: PrivateKey): Promise<Uint8Array> {
  return await sealRecord(REVOCATIONS, encodeMessage(RevocationListSchema, { fleet: r.fleet, seq: r.seq, issuedAtMs: r.issuedAt, peers: r.peers, serials: r.serials }), key)
}

/** Opens a revocation list; it must be the fleet authority's. */
export async function openRevocations (bytes: Uint8Array, trust: FleetTrust): Promise<Revocations> {
  const { signer, payload } = await openRecord(REVOCATIONS, bytes, 'revocations', MAX_REVOCATIONS_BYTES)
  if (signer !== trust.authority) throw new MalformedFrameError('revocations.signature', 'not signed by the fleet authority')
  const r = decodeMessage(RevocationListSchema, payload, 'revocations', MAX_REVOCATIONS_BYTES)
  if (r.fleet !== trust.fleet) throw new MalformedFrameError('revocations.fleet', `is ${r.fleet}, not ${trust.fleet}`)
  return { fleet: r.fleet, seq: num(r.seq, 'revocations.seq', 0, 0xffffffff), issuedAt: time(r.issuedAtMs, 'revocations.issuedAt'), peers: list(r.peers, 'revocations.peers', 10_000), serials: list(r.serials, 'revocations.serials', 10_000) }
}

export function encodeProof (chain: Uint8Array[], revocations?: Uint8Array): Uint8Array {
  return encodeMessage(MembershipProofSchema, { chain, ...(revocations !== undefined ? { revocations } : {}) })
}

export function decodeProof (bytes: Uint8Array): { chain: Uint8Array[], revocations?: Uint8Array } {
  const p = decodeMessage(MembershipProofSchema, bytes, 'membership proof', MAX_PROOF_BYTES)
  if (p.chain.length < 1 || p.chain.length > 2) throw new MalformedFrameError('membership proof.chain', `has ${p.chain.length} certificates, needs 1 or 2`)
  return { chain: p.chain, ...(p.revocations.byteLength > 0 ? { revocations: p.revocations } : {}) }
}

export type EnrollRequest = { grant: Uint8Array } | { renew: Uint8Array[] }
export type EnrollResponse = { issued: Uint8Array[] } | { refused: string }

export function encodeEnrollRequest (r: EnrollRequest): Uint8Array {
  return encodeMessage(EnrollRequestSchema, { credential: 'grant' in r ? { case: 'grant', value: r.grant } : { case: 'renew', value: { chain: r.renew } } })
}

export function decodeEnrollRequest (bytes: Uint8Array): EnrollRequest {
  const r = decodeMessage(EnrollRequestSchema, bytes, 'enroll request', MAX_PROOF_BYTES)
  if (r.credential.case === 'grant') return { grant: r.credential.value }
  if (r.credential.case === 'renew') return { renew: list(r.credential.value.chain, 'enroll request.renew', 2) }
  throw new MalformedFrameError('enroll request', 'needs a grant or a certificate to renew')
}

export function encodeEnrollResponse (r: EnrollResponse): Uint8Array {
  return encodeMessage(EnrollResponseSchema, { kind: 'issued' in r ? { case: 'issued', value: { chain: r.issued } } : { case: 'refused', value: r.refused } })
}

export function decodeEnrollResponse (bytes: Uint8Array): EnrollResponse {
  const r = decodeMessage(EnrollResponseSchema, bytes, 'enroll response', MAX_PROOF_BYTES)
  if (r.kind.case === 'issued') return { issued: list(r.kind.value.chain, 'enroll response.issued', 2) }
  if (r.kind.case === 'refused') return { refused: r.kind.value.slice(0, 512) }
  throw new MalformedFrameError('enroll response', 'neither issued nor refused')
}

/** A certificate chain that does not prove membership; `reason` says why. */
export class NotAMemberError extends Error {
  readonly name = 'NotAMemberError'
  readonly code = 'ERR_NOT_A_MEMBER'
}

export interface VerifyOptions {
  now: number
  /** The peer the chain must be for (the authenticated remote peer of a connection). */
  subject?: string
  /** Whether a peer or certificate serial is revoked. */
  revoked?: (peer: string, serial: string) => boolean
}

function checkWindow (c: Certificate, now: number, what: string): void {
  if (now + CLOCK_SKEW_MS < c.notBefore) throw new NotAMemberError(`${what} is not valid yet`)
  if (now - CLOCK_SKEW_MS > c.notAfter) throw new NotAMemberError(`${what} expired`)
}

/**
 * Checks a certificate chain: the first certificate is for `subject`, in this
 * fleet, valid now, not revoked, and signed by the authority, or by an issuer
 * whose own certificate (second in the chain) the authority signed and which
 * may issue every role the first one grants. Returns the first certificate.
 */
export async function verifyChain (trust: FleetTrust, chain: Uint8Array[], o: VerifyOptions): Promise<Certificate> {
  if (chain.length < 1 || chain.length > 2) throw new NotAMemberError(`a chain has 1 or 2 certificates, not ${chain.length}`)
  let leaf: { cert: Certificate, signer: string }
  try { leaf = await openCertificate(chain[0]) } catch (err) { throw new NotAMemberError(`certificate: ${(err as Error).message}`) }
  const c = leaf.cert
  if (c.fleet !== trust.fleet) throw new NotAMemberError(`certificate is for fleet ${c.fleet}, not ${trust.fleet}`)
  if (o.subject !== undefined && c.peer !== o.subject) throw new NotAMemberError('certificate is for another peer')
  checkWindow(c, o.now, 'certificate')
  if (o.revoked?.(c.peer, c.serial) === true) throw new NotAMemberError('certificate revoked')
  if (leaf.signer === trust.authority) return c
  if (chain.length < 2) throw new NotAMemberError('certificate is not signed by the fleet authority, and no issuer certificate came with it')
  let issuer: { cert: Certificate, signer: string }
  try { issuer = await openCertificate(chain[1]) } catch (err) { throw new NotAMemberError(`issuer certificate: ${(err as Error).message}`) }
  const i = issuer.cert
  if (issuer.signer !== trust.authority) throw new NotAMemberError('issuer certificate is not signed by the fleet authority')
  if (i.fleet !== trust.fleet || i.peer !== leaf.signer) throw new NotAMemberError('issuer certificate is not for the certificate\'s signer')
  checkWindow(i, o.now, 'issuer certificate')
  if (o.revoked?.(i.peer, i.serial) === true) throw new NotAMemberError('issuer certificate revoked')
  const beyond = c.roles.filter(r => !i.mayIssue.includes(r))
  if (beyond.length > 0) throw new NotAMemberError(`issuer may not issue ${beyond.join(', ')}`)
  if (c.notAfter > i.notAfter) throw new NotAMemberError('certificate outlives its issuer\'s')
  return c
}
