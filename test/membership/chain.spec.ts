import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Issuer, createFleet } from '../../node/membership/credentials.ts'
import { NotAMemberError, openGrant, sealCertificate, verifyChain } from '../../protocols/membership.ts'
import type { Certificate, FleetTrust } from '../../protocols/membership.ts'

const DAY = 24 * 3600_000

describe('member certificates', () => {
  let authority: Issuer
  let trust: FleetTrust
  let peer: string
  before(async () => {
    ({ authority, trust } = await createFleet('chain-test'))
    peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
  })
  const rejects = async (p: Promise<unknown>, why: RegExp): Promise<void> => { await assert.rejects(p, (e: unknown) => e instanceof NotAMemberError && why.test(e.message)) }

  it('a certificate the authority signed proves membership with its roles', async () => {
    const chain = await authority.issue(peer, { roles: ['vehicle'] })
    const cert = await verifyChain(trust, chain, { now: Date.now(), subject: peer })
    assert.deepEqual(cert.roles, ['vehicle'])
    assert.equal(cert.peer, peer)
  })

  it('refuses another fleet, another peer, expiry, a future start, a foreign signer and revocation', async () => {
    const chain = await authority.issue(peer, { roles: ['vehicle'], days: 1 })
    await rejects(verifyChain({ ...trust, fleet: 'other' }, chain, { now: Date.now() }), /fleet/)
    await rejects(verifyChain(trust, chain, { now: Date.now(), subject: 'someone-else' }), /another peer/)
    await rejects(verifyChain(trust, chain, { now: Date.now() + 2 * DAY }), /expired/)
    await rejects(verifyChain(trust, chain, { now: Date.now() - DAY }), /not valid yet/)
    const stranger = await createFleet('chain-test')
    await rejects(verifyChain(trust, await stranger.authority.issue(peer, { roles: ['vehicle'] }), { now: Date.now() }), /not signed by the fleet authority/)
    await rejects(verifyChain(trust, chain, { now: Date.now(), revoked: p => p === peer }), /revoked/)
    await rejects(verifyChain(trust, [], { now: Date.now() }), /1 or 2/)
    await rejects(verifyChain(trust, [new Uint8Array([1, 2, 3])], { now: Date.now() }), /certificate/)
  })

  it('a delegated issuer may issue only the roles it was given, for no longer than it lives', async () => {
    const bootKey = await generateKeyPair('Ed25519')
    const boot = peerIdFromPrivateKey(bootKey).toString()
    const delegate = new Issuer(bootKey, trust.fleet, await authority.issue(boot, { roles: ['bootstrap'], mayIssue: ['vehicle'], days: 7 }))
    const ok = await verifyChain(trust, await delegate.issue(peer, { roles: ['vehicle'], days: 1 }), { now: Date.now(), subject: peer })
    assert.deepEqual(ok.roles, ['vehicle'])
    await rejects(verifyChain(trust, await delegate.issue(peer, { roles: ['publisher'], days: 1 }), { now: Date.now() }), /may not issue publisher/)
    await rejects(verifyChain(trust, await delegate.issue(peer, { roles: ['vehicle'], days: 30 }), { now: Date.now() }), /outlives/)
    await rejects(verifyChain(trust, (await delegate.issue(peer, { roles: ['vehicle'], days: 1 })).slice(0, 1), { now: Date.now() }), /no issuer certificate/)
    await rejects(verifyChain(trust, await delegate.issue(peer, { roles: ['vehicle'], days: 1 }), { now: Date.now(), revoked: p => p === boot }), /issuer certificate revoked/)
    // a member that was not made an issuer cannot issue
    const plainKey = await generateKeyPair('Ed25519')
    const plain = new Issuer(plainKey, trust.fleet, await authority.issue(peerIdFromPrivateKey(plainKey).toString(), { roles: ['vehicle'] }))
    await rejects(verifyChain(trust, await plain.issue(peer, { roles: ['vehicle'], days: 1 }), { now: Date.now() }), /may not issue vehicle/)
  })

  it('certificates and grants are signed records of their own kind', async () => {
    const grant = await authority.grant('vehicle', 30)
    assert.equal((await openGrant(grant)).grant.role, 'vehicle')
    // a grant is not a certificate, and a certificate signed by the right key over a grant's domain is not either
    await rejects(verifyChain(trust, [grant], { now: Date.now() }), /certificate/)
    const cert: Certificate = { fleet: trust.fleet, peer, roles: ['client'], notBefore: 0, notAfter: Date.now() + DAY, serial: 's', mayIssue: [] }
    assert.ok((await verifyChain(trust, [await sealCertificate(cert, authority.key)], { now: Date.now() })).roles.includes('client'))
  })
})
