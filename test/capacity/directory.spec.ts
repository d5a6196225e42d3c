import assert from 'node:assert/strict'
import { defaultLogger } from '@libp2p/logger'
import { FleetDirectory } from '../../node/capacity/directory.ts'
import type { Heartbeat } from '../../protocols/capacity.ts'

const hb = (seq: number): Heartbeat => ({ ts: Date.now(), seq, eligible: true, load: 0, slots: 1, stages: [{ manifest: 'm', stage: 0, cid: 'c', msPerItem: 1 }], addrs: [], expiresAt: Date.now() + 60_000, claims: [] })

describe('fleet directory', () => {
  const directory = (init: { maxPeers?: number, forgetMs?: number }): FleetDirectory =>
    new FleetDirectory({ logger: defaultLogger(), pubsub: { subscribe () {}, addEventListener () {}, removeEventListener () {} } as never }, { fleet: 'f', ...init })

  it('is bounded: past maxPeers, the peer heard from longest ago is forgotten', () => {
    const d = directory({ maxPeers: 3 })
    for (const p of ['a', 'b', 'c']) d.record(p, hb(1))
    d.record('a', hb(2)) // heard again: now the most recent
    d.record('d', hb(1))
    d.record('e', hb(1))
    assert.deepEqual(d.all().map(p => p.peer).sort(), ['a', 'd', 'e'])
  })

  it('forgets peers not heard from for forgetMs', () => {
    const d = directory({ forgetMs: 1000 })
    d.record('a', hb(1), 0)
    d.record('b', hb(1), 5000)
    assert.equal(d.prune(5500), 1)
    assert.deepEqual(d.all().map(p => p.peer), ['b'])
  })
})
