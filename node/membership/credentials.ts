/**
 * Credentials as files, and the fleet authority.
 *
 * A credentials file (JSON, `fleetmesh-credentials/1`) names the fleet and its
 * authority and holds what one peer needs: its certificate chain (and, for a
 * client made with `--new-key`, its private key), or an enrollment grant for
 * a vehicle that will get its certificate by itself. The authority key signs
 * certificates, grants and revocation lists; it stays with the fleet's owner.
 */
import { randomUUID } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { checkFleetName } from '../../protocols/ids.ts'
import { openCertificate, openGrant, sealCertificate, sealGrant, sealRevocations } from '../../protocols/membership.ts'
import type { FleetTrust, Revocations, Role } from '../../protocols/membership.ts'

export const CREDENTIALS_FORMAT = 'fleetmesh-credentials/1'
const DAY = 24 * 3600_000

export interface Credentials {
  trust: FleetTrust
  /** This peer's certificate chain (its certificate first). */
  chain?: Uint8Array[]
  /** An enrollment grant, for a vehicle that gets its certificate from an issuer. */
  grant?: Uint8Array
  /** This peer's private key, when the credentials were made with one. */
  key?: PrivateKey
}

export class CredentialsError extends Error {
  readonly name = 'CredentialsError'
  readonly code = 'ERR_CREDENTIALS'
}

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64')
const unb64 = (s: unknown, field: string, path: string): Uint8Array => {
  if (typeof s !== 'string') throw new CredentialsError(`${path}: ${field} must be base64`)
  return new Uint8Array(Buffer.from(s, 'base64'))
}

export async function loadCredentials (path: string): Promise<Credentials> {
  let doc: any
  try { doc = JSON.parse(await readFile(path, 'utf8')) } catch (err) {
    throw new CredentialsError(`cannot read credentials ${path}: ${(err as Error).message}`)
  }
  if (doc?.format !== CREDENTIALS_FORMAT) throw new CredentialsError(`${path}: not a fleetmesh credentials file (format ${String(doc?.format)})`)
  if (typeof doc.fleet !== 'string' || typeof doc.authority !== 'string') throw new CredentialsError(`${path}: needs fleet and authority`)
  const c: Credentials = { trust: { fleet: checkFleetName(doc.fleet), authority: doc.authority } }
  if (doc.chain !== undefined) c.chain = (Array.isArray(doc.chain) ? doc.chain : []).map((x: unknown, i: number) => unb64(x, `chain[${i}]`, path))
  if (doc.grant !== undefined) c.grant = unb64(doc.grant, 'grant', path)
  if (doc.key !== undefined) c.key = privateKeyFromProtobuf(unb64(doc.key, 'key', path))
  if (c.chain === undefined && c.grant === undefined) throw new CredentialsError(`${path}: holds neither a certificate nor an enrollment grant`)
  return c
}

export async function saveCredentials (path: string, c: Credentials): Promise<void> {
  const doc = {
    format: CREDENTIALS_FORMAT,
    fleet: c.trust.fleet,
    authority: c.trust.authority,
    ...(c.chain !== undefined ? { peer: (await openCertificate(c.chain[0])).cert.peer, chain: c.chain.map(b64) } : {}),
    ...(c.grant !== undefined ? { grant: b64(c.grant) } : {}),
    ...(c.key !== undefined ? { key: b64(privateKeyToProtobuf(c.key)) } : {})
  }
  await mkdir(dirname(path), { recursive: true })
  await writeFile(path, JSON.stringify(doc, null, 2) + '\n', { mode: 0o600 })
}

/** What a certificate or grant says, for `fleet show`. */
export async function describeCredentials (c: Credentials): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = { fleet: c.trust.fleet, authority: c.trust.authority }
  if (c.chain !== undefined) {
    const certs = await Promise.all(c.chain.map(async b => await openCertificate(b)))
    out.certificates = certs.map(({ cert, signer }) => ({ ...cert, signer, notBefore: new Date(cert.notBefore).toISOString(), notAfter: new Date(cert.notAfter).toISOString() }))
  }
  if (c.grant !== undefined) {
    const { grant, signer } = await openGrant(c.grant)
    out.grant = { ...grant, signer, notAfter: new Date(grant.notAfter).toISOString() }
  }
  return out
}

export interface IssueOptions {
  roles: Role[]
  /** Validity from now. @default 30 days */
  days?: number
  /** Roles the holder may issue certificates for (a delegated issuer, e.g. a bootstrap peer). */
  mayIssue?: Role[]
  /** A gateway bearer token's limits. */
  gateway?: { maxConcurrency: number, maxBodyBytes: number }
}

/** A fleet authority (or a delegated issuer): a key that signs certificates. */
export class Issuer {
  readonly key: PrivateKey
  readonly peer: string
  readonly fleet: string
  /** The issuer's own certificate chain, when it is a delegate (not the authority). */
  readonly chain: Uint8Array[]

  constructor (key: PrivateKey, fleet: string, chain: Uint8Array[] = []) {
    this.key = key
    this.peer = peerIdFromPrivateKey(key).toString()
    this.fleet = checkFleetName(fleet)
    this.chain = chain
  }

  /** A certificate chain for `peer` (the new certificate, then this issuer's own when it is a delegate). */
  async issue (peer: string, o: IssueOptions, now = Date.now()): Promise<Uint8Array[]> {
    const cert = await sealCertificate({ fleet: this.fleet, peer, roles: o.roles, notBefore: now - 60_000, notAfter: now + (o.days ?? 30) * DAY, serial: randomUUID(), mayIssue: o.mayIssue ?? [], ...(o.gateway !== undefined ? { gateway: o.gateway } : {}) }, this.key)
    return [cert, ...this.chain.slice(0, 1)]
  }

  async grant (role: Role, days = 365, now = Date.now()): Promise<Uint8Array> {
    return await sealGrant({ fleet: this.fleet, role, notAfter: now + days * DAY, id: randomUUID() }, this.key)
  }

  async revocations (r: Omit<Revocations, 'fleet'>): Promise<Uint8Array> {
    return await sealRevocations({ ...r, fleet: this.fleet }, this.key)
  }
}

/** A new fleet: its authority (an Ed25519 key) and what peers must trust. */
export async function createFleet (fleet: string): Promise<{ authority: Issuer, trust: FleetTrust }> {
  const authority = new Issuer(await generateKeyPair('Ed25519'), fleet)
  return { authority, trust: { fleet: authority.fleet, authority: authority.peer } }
}

/** Credentials with a fresh key and a certificate for it (clients, tests, a swarm's own peers). */
export async function issueWithKey (issuer: Issuer, trust: FleetTrust, o: IssueOptions): Promise<Credentials> {
  const key = await generateKeyPair('Ed25519')
  return { trust, key, chain: await issuer.issue(peerIdFromPrivateKey(key).toString(), o) }
}

export async function loadAuthority (path: string, fleet: string): Promise<Issuer> {
  try { return new Issuer(privateKeyFromProtobuf(await readFile(path)), fleet) } catch (err) {
    throw new CredentialsError(`cannot read the authority key ${path}: ${(err as Error).message}`)
  }
}

/**
 * A fleet made on the spot (a local swarm, tests): its authority stays in
 * memory; certificates for keys kept in files, clients with their own keys,
 * grants for vehicles that enroll.
 */
export interface LocalFleet {
  authority: Issuer
  trust: FleetTrust
  /** Credentials for the peer whose key is in `keyFile` (created when missing). */
  forKeyFile: (keyFile: string, o: IssueOptions) => Promise<Credentials>
  /** A client (and publisher) with a new key. */
  client: (roles?: Role[]) => Promise<Credentials>
  grant: (role?: Role) => Promise<Credentials>
}

export async function localFleet (fleet: string, loadKey: (file: string) => Promise<PrivateKey>): Promise<LocalFleet> {
  const { authority, trust } = await createFleet(fleet)
  return {
    authority,
    trust,
    forKeyFile: async (keyFile, o) => ({ trust, chain: await authority.issue(peerIdFromPrivateKey(await loadKey(keyFile)).toString(), o) }),
    client: async (roles = ['client', 'publisher']) => await issueWithKey(authority, trust, { roles, days: 1 }),
    grant: async (role = 'vehicle') => ({ trust, grant: await authority.grant(role, 1) })
  }
}
