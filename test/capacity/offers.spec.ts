/**
 * Job announcements cannot make vehicles dial elsewhere en masse (issue #10:
 * fake announcements made vehicles dial the addresses they named 1434
 * times): a vehicle offers to one announcing client at most 2 times a second
 * (bursts of 5), at no more than 4 of the addresses it announced. The
 * responder is called directly; the dialer records what it was asked.
 */
import assert from 'node:assert/strict'
import { defaultLogger } from '@libp2p/logger'
import { OfferResponder } from '../../node/capacity/offer-responder.ts'
import type { PeerDialer } from '../../node/dial.ts'

describe('offers to announced batch jobs', () => {
  it('a flood of announcements from one client gets a handful of dials, to at most 4 of its addresses', async () => {
    const dials: string[][] = []
    const dialer = { dialProtocol: async (_peer: string, _protocol: string, o: { addrs?: string[] }) => { dials.push(o.addrs ?? []); throw new Error('refused') } } as unknown as PeerDialer
    const runtime = { served: () => [{ manifest: 'm', stage: 0, cid: 'c', msPerItem: 1 }], isAccepting: true }
    const r = new OfferResponder({ logger: defaultLogger(), pubsub: { subscribe () {}, addEventListener () {}, removeEventListener () {} } as never, dialer, runtime }, { fleet: 'f' })
    const addrs = Array.from({ length: 16 }, (_, i) => `/ip4/10.9.9.9/tcp/${1000 + i}`)
    for (let i = 0; i < 200; i++) await r.offer({ job: `job-${i}`, manifest: 'm', items: 1, deadline: Date.now() + 60_000, issuedAt: Date.now(), addrs, requirements: {} }, 'client-1')
    assert.ok(dials.length <= 6, `${dials.length} dials for 200 announcements`)
    assert.ok(dials.length >= 1)
    assert.ok(dials.every(a => a.length <= 4), 'at most 4 announced addresses each')
    // another client is not held back by the first one's flood
    const before = dials.length
    await r.offer({ job: 'other', manifest: 'm', items: 1, deadline: Date.now() + 60_000, issuedAt: Date.now(), addrs: [], requirements: {} }, 'client-2')
    assert.equal(dials.length, before + 1)
  })
})
