/**
 * Certificate chains in gossip, checked by the real topic guard and a real Membership with real
 * certificates. A job or model announcement is accepted on the chain it carries from a sender with no
 * connection here (the decoder used to drop it, so only direct peers' announcements passed, and
 * forwarders were penalized for the rest).
 *
 * Short keep-alives carry no certificate chain (issue 12: the chain was most of a keep-alive's bytes).
 * A peer accepts one from a sender whose certificate it verified before (from the sender's full
 * heartbeat, or a proof on a connection); from anyone else it is ignored (not forwarded, no penalty),
 * and a full heartbeat without a chain, a revoked sender's keep-alive and a keep-alive from a member
 * of the wrong role are not accepted. Real certificates, a real Membership and the real topic guard.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { defaultLogger } from '@libp2p/logger'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { Denylist, Membership } from '../../node/membership/membership.ts'
import type { MembershipComponents } from '../../node/membership/membership.ts'
import { TopicGuard } from '../../node/membership/topics.ts'
import { createFleet } from '../../node/membership/credentials.ts'
import type { Issuer } from '../../node/membership/credentials.ts'
import { encodeHeartbeat, keepAliveOf } from '../../protocols/capacity.ts'
import type { Heartbeat } from '../../protocols/capacity.ts'
import { encodeJobsMessage } from '../../protocols/jobs.ts'
import { capacityTopic, jobsTopic } from '../../protocols/ids.ts'

const FLEET = 'ka-chain'
type Validator = (from: PeerId, msg: unknown) => Promise<TopicValidatorResult>

describe('certificate chains in gossip', () => {
  let authority: Issuer
  let validators: Map<string, Validator>
  let denylist: Denylist
  const member = async (roles: Array<'vehicle' | 'client' | 'publisher'>, issuer?: Issuer): Promise<{ id: PeerId, chain: Uint8Array[] }> => {
    const id = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    return { id, chain: await (issuer ?? authority).issue(id.toString(), { roles }) }
  }
  const full = (chain?: Uint8Array[]): Heartbeat => ({ ts: Date.now(), seq: 7, eligible: true, load: 0, slots: 2, stages: [{ manifest: 'm', stage: 0, cid: 'c', msPerItem: 3 }], addrs: ['/ip4/127.0.0.1/tcp/4001'], ...(chain !== undefined ? { membership: chain } : {}) })
  const deliver = async (topic: string, from: PeerId, data: Uint8Array): Promise<TopicValidatorResult> =>
    await validators.get(topic)!(from, { type: 'signed', from, topic, data, sequenceNumber: 1n, signature: new Uint8Array(64), key: from.publicKey })
  const cell = capacityTopic(FLEET)

  beforeEach(async () => {
    const fleet = await createFleet(FLEET)
    authority = fleet.authority
    validators = new Map()
    denylist = new Denylist()
    const pubsub = Object.assign(new EventTarget(), { topicValidators: validators, subscribe () {}, publish: async () => ({ recipients: [] }) })
    const components = {
      peerId: peerIdFromPrivateKey(await generateKeyPair('Ed25519')),
      logger: defaultLogger(),
      registrar: { handle: async () => {}, unhandle: async () => {} },
      connections: Object.assign(new EventTarget(), { getConnections: () => [], hangUp: async () => {} }),
      pubsub
    } as unknown as MembershipComponents
    const membership = new Membership(components, { trust: fleet.trust, own: { chain: () => undefined }, denylist })
    new TopicGuard({ logger: defaultLogger(), pubsub: pubsub as never, membership }, { fleet: FLEET }).start()
  })

  it('a job or model announcement is accepted on the chain it carries; without one, from a stranger, refused', async () => {
    const c = await member(['client'])
    const job = { job: 'job-1', manifest: 'bafkreib432rru55mgh4riuoujhi3g4a5pwxy5u63hh6ui3cbq2mrtxylle', items: 1, deadline: Date.now() + 60_000, issuedAt: Date.now(), addrs: [], requirements: {} }
    assert.equal(await deliver(jobsTopic(FLEET), c.id, encodeJobsMessage({ kind: 'job', job, membership: c.chain })), TopicValidatorResult.Accept)
    const p = await member(['publisher'])
    const model = { name: 'm', version: '1', manifest: job.manifest, stages: 2, publishedAt: Date.now(), addrs: [] }
    assert.equal(await deliver(jobsTopic(FLEET), p.id, encodeJobsMessage({ kind: 'model', model, membership: p.chain })), TopicValidatorResult.Accept)
    assert.equal(await deliver(jobsTopic(FLEET), c.id, encodeJobsMessage({ kind: 'model', model, membership: c.chain })), TopicValidatorResult.Reject, 'a client may not name models')
    const d = await member(['client'])
    assert.equal(await deliver(jobsTopic(FLEET), d.id, encodeJobsMessage({ kind: 'job', job })), TopicValidatorResult.Reject, 'no chain, no connection')
  })

  it('a keep-alive is smaller by its chain and carries none', async () => {
    const v = await member(['vehicle'])
    const ka = keepAliveOf(full(v.chain), 8)
    assert.equal(ka.membership, undefined)
    const chainBytes = v.chain.reduce((s, c) => s + c.byteLength, 0)
    const withChain = encodeHeartbeat({ ...ka, membership: v.chain }).byteLength
    assert.ok(encodeHeartbeat(ka).byteLength <= withChain - chainBytes, `${encodeHeartbeat(ka).byteLength} B, ${withChain} B with the ${chainBytes}-byte chain`)
  })

  it('accepted from a vehicle whose full heartbeat was verified; ignored from one never heard', async () => {
    const a = await member(['vehicle'])
    const b = await member(['vehicle'])
    assert.equal(await deliver(cell, a.id, encodeHeartbeat(keepAliveOf(full(a.chain), 8))), TopicValidatorResult.Ignore, 'before its full heartbeat')
    assert.equal(await deliver(cell, a.id, encodeHeartbeat(full(a.chain))), TopicValidatorResult.Accept)
    assert.equal(await deliver(cell, a.id, encodeHeartbeat(keepAliveOf(full(a.chain), 8))), TopicValidatorResult.Accept, 'after it')
    assert.equal(await deliver(cell, b.id, encodeHeartbeat(keepAliveOf(full(b.chain), 8))), TopicValidatorResult.Ignore, 'another vehicle, never heard')
  })

  it('hostile: a full heartbeat without a chain, a revoked sender, a client, another fleet\'s certificate', async () => {
    const a = await member(['vehicle'])
    assert.equal(await deliver(cell, a.id, encodeHeartbeat(full())), TopicValidatorResult.Reject, 'a full heartbeat must carry its chain')
    // revoked after its certificate was heard: its keep-alives are no longer accepted
    assert.equal(await deliver(cell, a.id, encodeHeartbeat(full(a.chain))), TopicValidatorResult.Accept)
    denylist.revoked = new Set([a.id.toString()])
    assert.notEqual(await deliver(cell, a.id, encodeHeartbeat(keepAliveOf(full(a.chain), 9))), TopicValidatorResult.Accept, 'revoked')
    // a client whose certificate a job announcement carried may not heartbeat, short or full
    const c = await member(['client'])
    assert.equal(await deliver(jobsTopic(FLEET), c.id, encodeJobsMessage({ kind: 'job', job: { job: 'job-2', manifest: 'bafkreib432rru55mgh4riuoujhi3g4a5pwxy5u63hh6ui3cbq2mrtxylle', items: 1, deadline: Date.now() + 60_000, issuedAt: Date.now(), addrs: [], requirements: {} }, membership: c.chain })), TopicValidatorResult.Accept)
    assert.equal(await deliver(cell, c.id, encodeHeartbeat(keepAliveOf(full(), 3))), TopicValidatorResult.Reject, 'a client\'s keep-alive')
    // a certificate of another fleet's authority is never verified, so that sender's keep-alives are never accepted
    const stranger = await member(['vehicle'], (await createFleet(FLEET)).authority)
    assert.equal(await deliver(cell, stranger.id, encodeHeartbeat(full(stranger.chain))), TopicValidatorResult.Reject)
    assert.equal(await deliver(cell, stranger.id, encodeHeartbeat(keepAliveOf(full(stranger.chain), 8))), TopicValidatorResult.Ignore)
  })
})
